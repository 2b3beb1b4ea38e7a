"""bench/multi30k_steps.py: the committed recipe's steps, timed and profiled.

A tiny corpus in Multi30k's file layout (generated, not Multi30k) and a small
shared tokenizer made beforehand, so the job runs the recipe's model, batches
and optimizer in seconds.
"""

import json
import os
import subprocess
import sys

import pytest

from bench import workload
from keras_s2s import data
from keras_s2s.data.builtin import generate_pairs


@pytest.fixture(scope="module")
def tiny_multi30k(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi30k_steps")
    pairs = generate_pairs(600, seed=4)
    for index, language in enumerate(("en", "de")):
        with open(root / f"train.{language}", "w", encoding="utf-8") as f:
            f.writelines(pair[index] + "\n" for pair in pairs)
    tokenizer_dir = root / "tokenizers"
    data.train_tokenizers(pairs, tokenizer_dir, vocabulary_size=300, shared=True, model_type="bpe")
    return root, tokenizer_dir


@pytest.mark.slow
def test_profile_reports_where_the_recipes_step_time_goes(tiny_multi30k):
    root, tokenizer_dir = tiny_multi30k
    out = subprocess.run(
        [sys.executable, "-m", "bench.multi30k_steps", "--data-dir", str(root),
         "--tokenizer-dir", str(tokenizer_dir), "--steps", "4", "--skip", "2", "--profile",
         "--top", "40"],
        check=False, cwd=workload.REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["profiled_steps"] == 2
    shares = dict(result["by_type"])
    assert 99.0 <= sum(shares.values()) <= 101.0 or len(shares) == 40, shares
    # The recipe's step multiplies matrices; its loss runs in XLA functions
    # (keras_s2s/losses.py), which TensorFlow's op table does not list, so
    # TensorFlow's fused softmax cross-entropy is absent.
    assert any("MatMul" in name for name in shares), shares
    assert "SparseSoftmaxCrossEntropyWithLogits" not in shares, shares
    assert result["busy_op_ms"] > 0
