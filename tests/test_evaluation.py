import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from keras_s2s.decoding import Greedy
from keras_s2s.evaluation import (
    evaluate_run,
    moses_detokenize,
    moses_lc_tokenize,
    score,
    tokenized_bleu,
)
from tests.helpers import REPO_ROOT, SHARED_DATA

MULTI30K = os.path.join(SHARED_DATA, "multi30k")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def require_multi30k():
    if not os.path.isdir(MULTI30K):
        pytest.skip(f"real data absent: {MULTI30K} (docs/multi30k.md says where to get it)")


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
    assert metrics["strategy"] == {
        "name": "beam", "size": 2, "length_penalty": 0.6, "early_stopping": True
    }
    assert "40 sentences, beam 2, " in result.stdout
    assert "bleu_lc_tok" not in metrics and "lc-tok" not in result.stdout  # flags not given


@pytest.mark.parametrize(
    "language, line, expected",
    [
        # Apostrophes split and XML-escaped (English keeps "'s" together).
        ("en", "A man's dog isn't here.", "a man &apos;s dog isn &apos;t here ."),
        ("de", "Levi's Anzeige.", "levi &apos; s anzeige ."),
        # German quotes become '"', escaped; a final period moves outside them.
        ("de", "Er sagt: „Komm jetzt.“", "er sagt : &quot; komm jetzt &quot; ."),
        ("en", 'He said "come now."', "he said &quot; come now . &quot;"),
        # Lowercasing covers umlauts; German decimal commas stay inside numbers.
        ("de", "ÄRZTE und Öfen, 3,5 km – weit…", "ärzte und öfen , 3,5 km - weit ..."),
        ("de", "Ein Hund (braun) & eine Katze [klein].",
         "ein hund ( braun ) &amp; eine katze &#91; klein &#93; ."),
        # Leading/trailing whitespace and a tab, as in 40 lines of Multi30k train.de.
        ("de", " Zwei Männer in einer \tWasserfontäne. ", "zwei männer in einer wasserfontäne ."),
        # tokenizer.perl's default: no aggressive hyphen splitting.
        ("en", "A well-known T-shirt.", "a well-known t-shirt ."),
    ],
)
def test_moses_lc_tokenize_hand_checked(language, line, expected):
    assert moses_lc_tokenize([line], language) == [expected]


def test_moses_lc_tokenize_rejects_a_bare_string_and_unknown_languages():
    with pytest.raises(TypeError, match="`lines` must be an iterable of sentences"):
        moses_lc_tokenize("Ein Hund.", "de")
    with pytest.raises(ValueError, match="`language` must be a Moses language code.*'german'"):
        moses_lc_tokenize(["Ein Hund."], "german")


@pytest.mark.parametrize(
    "split",
    ["test2016", "val", pytest.param("train", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("language", ["de", "en"])
def test_moses_lc_tokenize_reproduces_the_multi30k_tok_files(split, language):
    require_multi30k()
    raw = read_lines(os.path.join(MULTI30K, f"{split}.{language}"))
    upstream = read_lines(os.path.join(MULTI30K, "tok", f"{split}.lc.norm.tok.{language}"))
    ours = moses_lc_tokenize(raw, language)
    mismatches = [(i, a, b) for i, (a, b) in enumerate(zip(ours, upstream)) if a != b]
    assert len(ours) == len(upstream)
    assert not mismatches, mismatches[:3]


def test_tokenized_bleu_of_the_reference_against_itself_is_100():
    require_multi30k()
    raw = read_lines(os.path.join(MULTI30K, "test2016.de"))
    upstream = read_lines(os.path.join(MULTI30K, "tok", "test2016.lc.norm.tok.de"))
    result = tokenized_bleu(raw, upstream, "de")
    assert result["bleu_lc_tok"] == pytest.approx(100.0)
    # 12103 words: the reflen of the published fairseq BLEU4 anchors.
    assert "ref_len = 12103" in result["bleu_lc_tok_text"]
    assert result["bleu_lc_tok_signature"] == (
        f"nrefs:1|case:mixed|eff:no|tok:none|smooth:none|version:{sacrebleu.__version__}"
        "|pre:moses-lc-norm-tok-de"
    )


def test_tokenized_bleu_is_multi_bleu_on_tokenized_text():
    hypotheses = ["Der Mann's Hund läuft.", "Eine Frau."]
    references = ["der mann &apos; s hund rennt .", "eine frau ."]
    expected = sacrebleu.corpus_bleu(
        moses_lc_tokenize(hypotheses, "de"), [references],
        tokenize="none", force=True, smooth_method="none",
    )
    assert tokenized_bleu(hypotheses, references, "de")["bleu_lc_tok"] == expected.score
    # Cased, untokenised input scores the same as its lowercased, tokenised form.
    assert tokenized_bleu(["EINE FRAU IM PARK."], ["eine frau im park ."], "de")[
        "bleu_lc_tok"] == pytest.approx(100.0)
    # No smoothing, as multi-bleu.perl: no 4-gram match at all scores 0.
    assert tokenized_bleu(["Eine Frau."], ["eine frau ."], "de")["bleu_lc_tok"] == 0.0
    with pytest.raises(ValueError, match="received 2 hypotheses and 1 references"):
        tokenized_bleu(hypotheses, references[:1], "de")


def test_tokenized_bleu_scores_tokenized_hypotheses_as_they_are():
    # A model trained on the tok/ copy outputs "&apos;" itself; tokenising it
    # again would escape it a second time ("&amp;apos;").
    hypotheses = ["der mann &apos; s hund läuft .", "eine frau ."]
    references = ["der mann &apos; s hund rennt .", "eine frau ."]
    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none", force=True,
                                     smooth_method="none")
    result = tokenized_bleu(hypotheses, references, None)
    assert result["bleu_lc_tok"] == expected.score > 0
    assert result["bleu_lc_tok_signature"].endswith("|pre:none")
    assert tokenized_bleu(hypotheses, references, "de")["bleu_lc_tok"] < expected.score


@pytest.fixture
def tiny_corpus(tmp_path):
    """Three TSV pairs; the checks below fail before any model is loaded."""
    corpus = tmp_path / "test.tsv"
    corpus.write_text("A dog.\tEin Hund.\nA cat.\tEine Katze.\nTwo men.\tZwei Männer.\n",
                      encoding="utf-8")
    return str(corpus)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"tokenized_reference": "ref.tok"}, "`tokenized_reference` and `language` go together"),
        ({"language": "de"}, "`tokenized_reference` and `language` go together"),
        ({"hypotheses_tokenized": True}, "pass `tokenized_reference` and `language` with it"),
        ({"tokenized_reference": "ref.tok", "language": "de", "raw_reference": "ref.raw"},
         "`raw_reference` is for a model whose outputs are tokenised"),
    ],
)
def test_evaluate_run_checks_reference_options(tiny_corpus, tmp_path, kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        evaluate_run(str(tmp_path / "no_run"), tiny_corpus, **kwargs)
    assert not (tmp_path / "no_run").exists()  # nothing written


def test_evaluate_run_checks_precision_before_loading(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match=r"`precision` must be one of .*received precision='bf16'"):
        evaluate_run(str(tmp_path / "no_run"), tiny_corpus, precision="bf16")
    with pytest.raises(ValueError, match=r"an export's precision is fixed when it is exported"):
        evaluate_run(str(tmp_path / "no_run"), tiny_corpus, precision="float32",
                     saved_model=str(tmp_path / "saved"))
    assert not (tmp_path / "no_run").exists()  # nothing written


def test_evaluate_run_rejects_an_unknown_language(tiny_corpus, tmp_path):
    reference = tmp_path / "ref.tok"
    reference.write_text("ein hund .\neine katze .\nzwei männer .\n", encoding="utf-8")
    with pytest.raises(ValueError, match="`language` must be a Moses language code"):
        evaluate_run(str(tmp_path / "no_run"), tiny_corpus,
                     tokenized_reference=str(reference), language="DE")


@pytest.mark.parametrize(
    "lines, max_sentences, expected",
    [
        (2, None, r"ref\.tok has 2 lines, but must have one per corpus pair \(3\);"),
        (4, 2, r"ref\.tok has 4 lines, but must have one per corpus pair \(3\) or the 2 evaluated"),
    ],
)
def test_evaluate_run_rejects_a_misaligned_tokenized_reference(
    tiny_corpus, tmp_path, lines, max_sentences, expected
):
    reference = tmp_path / "ref.tok"
    reference.write_text("ein hund .\n" * lines, encoding="utf-8")
    with pytest.raises(ValueError, match=r"`tokenized_reference` .*" + expected):
        evaluate_run(str(tmp_path / "no_run"), tiny_corpus, max_sentences=max_sentences,
                     tokenized_reference=str(reference), language="de")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--language", "de"], "--tokenized-reference and --language go together"),
        (["--tokenized-reference", "ref.tok"], "--tokenized-reference and --language go together"),
        (["--hypotheses-tokenized"], "--hypotheses-tokenized needs --tokenized-reference"),
        (["--tokenized-reference", "ref.tok", "--language", "de", "--raw-reference", "ref"],
         "--raw-reference is for a model with tokenised outputs"),
    ],
)
def test_evaluate_script_checks_reference_flags(tmp_path, flags, expected):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", str(tmp_path), *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("reference_lines", [40, "all"])
def test_evaluate_script_reports_tokenized_bleu(tiny_run, tmp_path, reference_lines):
    # The built-in target language is made up; Moses' English rules tokenise it.
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        targets = [line.rstrip("\n").split("\t")[1] for line in f]
    tokenized = moses_lc_tokenize(targets, "en")
    if reference_lines != "all":
        tokenized = tokenized[:reference_lines]
    reference = tmp_path / "test.lc.tok"
    reference.write_text("".join(line + "\n" for line in tokenized), encoding="utf-8")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", tiny_run,
         "--max-sentences", "40", "--beam-size", "2", "--output-dir", str(out),
         "--tokenized-reference", str(reference), "--language", "en"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    hypotheses = (out / "hypotheses.txt").read_text(encoding="utf-8").split("\n")[:-1]
    expected = tokenized_bleu(hypotheses, tokenized[:40], "en")
    assert metrics["bleu_lc_tok"] == pytest.approx(expected["bleu_lc_tok"])
    assert metrics["bleu_lc_tok_signature"] == expected["bleu_lc_tok_signature"]
    assert metrics["language"] == "en" and metrics["tokenized_reference"] == str(reference)
    assert f"BLEU lc-tok {metrics['bleu_lc_tok']:.2f}  (nrefs:1|" in result.stdout


@pytest.mark.slow
def test_evaluate_script_scores_tokenized_hypotheses_as_they_are(tiny_run, tmp_path):
    # The mechanics of scoring a model trained on a tok/ copy: its outputs are
    # scored against the tokenised reference unchanged, and detokenised
    # against the raw one.
    with open(os.path.join(tiny_run, "data", "test.tsv"), encoding="utf-8") as f:
        targets = [line.rstrip("\n").split("\t")[1] for line in f][:20]
    tokenized = moses_lc_tokenize(targets, "en")
    reference, raw_reference = tmp_path / "test.tok", tmp_path / "test.raw"
    reference.write_text("".join(line + "\n" for line in tokenized), encoding="utf-8")
    raw_reference.write_text("".join(line + "\n" for line in targets), encoding="utf-8")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", tiny_run,
         "--max-sentences", "20", "--beam-size", "1", "--output-dir", str(out),
         "--tokenized-reference", str(reference), "--language", "en",
         "--hypotheses-tokenized", "--raw-reference", str(raw_reference)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    hypotheses = (out / "hypotheses.txt").read_text(encoding="utf-8").split("\n")[:-1]
    expected = tokenized_bleu(hypotheses, tokenized, None)
    assert metrics["bleu_lc_tok_text"] == expected["bleu_lc_tok_text"]
    assert metrics["bleu_lc_tok_signature"].endswith("|pre:none")
    assert metrics["hypotheses_tokenized"] is True
    detokenized = (out / "hypotheses.detok.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert detokenized == moses_detokenize(hypotheses, "en")
    raw = score(detokenized, targets)
    assert metrics["raw_bleu"] == raw["bleu"] and metrics["raw_chrf"] == raw["chrf"]
    assert metrics["raw_bleu_signature"] == raw["bleu_signature"]
    assert f"raw-reference BLEU {raw['bleu']:.2f}" in result.stdout


def test_moses_detokenize_undoes_tokenization_and_escaping():
    assert moses_detokenize(
        ["ein mann sagt : &quot; hallo &quot; .", "ein mann ( links ) &amp; eine frau ."], "de"
    ) == ['ein mann sagt: "hallo".', "ein mann (links) & eine frau."]


def test_evaluate_script_without_a_run_is_an_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--run-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr


@pytest.mark.slow
def test_evaluate_on_aligned_file_pairs(tiny_run, tmp_path):
    # The ../shared/data layout: two line-aligned files (Multi30k when present).
    require_multi30k()
    corpus = (os.path.join(MULTI30K, "test2016.en"), os.path.join(MULTI30K, "test2016.de"))
    tokenized_reference = os.path.join(MULTI30K, "tok", "test2016.lc.norm.tok.de")
    metrics = evaluate_run(tiny_run, corpus, strategy=Greedy(), max_sentences=8,
                           output_dir=str(tmp_path), verbose=0,
                           tokenized_reference=tokenized_reference, language="de")
    hypotheses = (tmp_path / "hypotheses.txt").read_text(encoding="utf-8").split("\n")[:-1]
    with open(corpus[1], encoding="utf-8") as f:
        references = [line.strip() for line, _ in zip(f, range(8))]
    assert metrics["sentences"] == 8 == len(hypotheses)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    # The 1000-line tokenized reference is cut to the 8 evaluated sentences.
    expected = tokenized_bleu(hypotheses, read_lines(tokenized_reference)[:8], "de")
    assert metrics["bleu_lc_tok_text"] == expected["bleu_lc_tok_text"]
