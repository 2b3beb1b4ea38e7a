import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from keras_s2s.evaluation import score
from tests.conftest import REPO_ROOT


def test_score_is_sacrebleu():
    hypotheses = ["the cat sat on the mat", "a dog"]
    references = ["the cat sat on a mat", "a dog barks"]
    result = score(hypotheses, references)
    assert result["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert result["chrf"] == sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


@pytest.mark.slow
def test_evaluate_script_writes_metrics_matching_sacrebleu(tiny_run, tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", tiny_run,
         "--max-sentences", "40", "--beam-size", "2", "--output-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLEU" in result.stdout and "chrF" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    hypotheses = (out / "hypotheses.txt").read_text(encoding="utf-8").split("\n")[:-1]
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        references = [line.rstrip("\n").split("\t")[1] for line, _ in zip(f, range(40))]
    assert len(hypotheses) == 40 == metrics["sentences"]
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    for key in ("loss", "accuracy", "perplexity", "bleu_signature"):
        assert key in metrics


def test_evaluate_script_without_a_run_is_an_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr


@pytest.mark.slow
def test_evaluate_on_aligned_file_pairs(tiny_run, tmp_path):
    # The ../shared/data layout: two line-aligned files (Multi30k when present).
    from tests.conftest import SHARED_DATA

    multi30k = os.path.join(SHARED_DATA, "multi30k")
    if not os.path.isdir(multi30k):
        pytest.skip(f"real data absent: {multi30k} (see ../shared/data/README.md)")
    from keras_s2s.evaluation import evaluate_run

    corpus = (os.path.join(multi30k, "test2016.en"), os.path.join(multi30k, "test2016.de"))
    metrics = evaluate_run(tiny_run, corpus, beam_size=1, max_sentences=8,
                           output_dir=str(tmp_path), verbose=0)
    hypotheses = (tmp_path / "hypotheses.txt").read_text(encoding="utf-8").split("\n")[:-1]
    with open(corpus[1], encoding="utf-8") as f:
        references = [line.strip() for line, _ in zip(f, range(8))]
    assert metrics["sentences"] == 8 == len(hypotheses)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
