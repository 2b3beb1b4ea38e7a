"""The Multi30k En->De recipe end to end on a slice of the real data.

The commands of docs/multi30k.md, in order, with the
recipe's config file: train -> average checkpoints -> evaluate (cased
sacreBLEU, chrF, lc-tok BLEU) -> export -> evaluate through the SavedModel,
which must give the same hypotheses as in-process decoding. Only the data
size, vocabulary and epochs are cut down, so the test takes a minute or two.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, SHARED_DATA

MULTI30K = os.path.join(SHARED_DATA, "multi30k")
CONFIG = os.path.join(REPO_ROOT, "training", "configs", "multi30k_en_de.json")


def data(name):
    return os.path.join(MULTI30K, name)


def write_slice(tmp_path, split, lines):
    """The first `lines` pairs of a split, as two aligned files in tmp_path (never in the repo)."""
    paths = []
    for language in ("en", "de"):
        with open(data(f"{split}.{language}"), encoding="utf-8") as f:
            head = [line for line, _ in zip(f, range(lines))]
        path = tmp_path / f"{split}.{language}"
        path.write_text("".join(head), encoding="utf-8")
        paths.append(str(path))
    return ",".join(paths)


def cli(*arguments):
    result = subprocess.run(
        [sys.executable, "-m", *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=1200, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def multi30k():
    if not os.path.isdir(MULTI30K):
        pytest.skip(f"real data absent: {MULTI30K} (docs/multi30k.md says where to get it)")
    return MULTI30K


@pytest.mark.slow
def test_recipe_pipeline_on_a_slice(multi30k, tmp_path):
    run_dir, averaged = str(tmp_path / "run"), str(tmp_path / "run-avg")
    test = f"{data('test2016.en')},{data('test2016.de')}"
    cli("training.train", "--config", CONFIG, "--run-dir", run_dir,
        "--train", write_slice(tmp_path, "train", 600),
        "--valid", write_slice(tmp_path, "val", 40), "--test", test,
        # Cut down for a test; everything else is the recipe's.
        "--vocabulary-size", "600", "--epochs", "3", "--batch-tokens", "1024",
        "--validation-bleu-sentences", "16", "--verbose", "0")
    settings = json.load(open(os.path.join(run_dir, "train_config.json")))
    architecture = json.load(open(os.path.join(run_dir, "config.json")))
    assert settings["shared_vocabulary"] and architecture["tie_embeddings"] == "all"
    assert (architecture["num_encoder_layers"], architecture["hidden_dim"]) == (4, 128)
    history = json.load(open(os.path.join(run_dir, "metrics.json")))["history"]
    assert len(history["val_bleu"]) == 3

    out = cli("training.average", "--run-dir", run_dir, "--last", "2", "--output-dir", averaged)
    assert "averaged 2 checkpoints" in out

    evaluate = ("training.evaluate", "--run-dir", averaged, "--max-sentences", "24",
                "--tokenized-reference", data("tok/test2016.lc.norm.tok.de"), "--language", "de")
    out = cli(*evaluate, "--output-dir", str(tmp_path / "eval"))
    assert "BLEU lc-tok" in out and "chrF" in out
    in_process = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert in_process["strategy"] == {
        "name": "beam", "size": 5, "length_penalty": 1.0, "early_stopping": True
    }
    assert in_process["sentences"] == 24

    base = str(tmp_path / "saved_models")
    cli("training.export", "--run-dir", averaged, "--name", "m30k", "--base-dir", base)
    out = cli(*evaluate, "--output-dir", str(tmp_path / "served"),
              "--saved-model", os.path.join(base, "m30k", "1"))
    served = json.load(open(tmp_path / "served" / "metrics.json"))
    assert (tmp_path / "served" / "hypotheses.txt").read_text() == (
        tmp_path / "eval" / "hypotheses.txt").read_text()
    for key in ("bleu", "chrf", "bleu_lc_tok"):
        assert served[key] == in_process[key], key
    assert served["decoded_by"].startswith("saved_model:")
    assert served["strategy"] == in_process["strategy"]  # the run's, recorded in the export
