"""Evaluation of a trained run: teacher-forced loss/accuracy/perplexity, then
decoding scored with sacreBLEU (BLEU and chrF, with their signatures), and
optionally the lowercased, Moses-tokenised BLEU that papers report.
"""

from __future__ import annotations

import functools
import math
import os
import time

import keras
import sacrebleu
import tensorflow as tf
from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer
from sacremoses.corpus import NonbreakingPrefixes

from keras_s2s import data
from keras_s2s.config import check_load_precision
from keras_s2s.data.pipeline import count_batches
from keras_s2s.decoding import DEFAULT_STRATEGY, Strategy, check_strategy
from keras_s2s.export import exported_strategy
from keras_s2s.losses import MaskedCrossEntropy, masked_accuracy
from keras_s2s.run_dir import RunDir, write_evaluation
from keras_s2s.translator import NO_XLA_BATCH_SIZE, Translator, length_sorted_batches


def score(hypotheses, references) -> dict:
    """Corpus BLEU and chrF with sacreBLEU's defaults (13a tokenizer, cased)."""
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_text": str(bleu_score),
    }


def check_moses_language(language) -> None:
    """Raises unless `language` is a code with Moses nonbreaking prefixes ("de", "en", ...)."""
    # tokenizer.perl silently falls back to English for unknown codes, and the
    # normaliser's German rules would silently not apply to "DE" or "german".
    languages = sorted(set(NonbreakingPrefixes().available_langs.values()))
    if language not in languages:
        raise ValueError(
            f"`language` must be a Moses language code, one of {', '.join(languages)}; "
            f"received language={language!r}"
        )


def moses_lc_tokenize(lines, language: str) -> list[str]:
    """Lowercases, normalises punctuation and Moses-tokenises, as `*.lc.norm.tok.*` were made.

    Replicates `lowercase.perl | normalize-punctuation.perl -l L | tokenizer.perl -l L`
    (tokenizer.perl defaults: XML escaping on, no aggressive hyphen splitting), the
    pipeline of Multi30k's `scripts/task1-tokenize.sh`. It reproduces every line of
    the Multi30k train, val and test2016 `tok/` files in both languages.

    Args:
        lines: an iterable of sentences (a trailing newline is ignored).
        language: a Moses language code, e.g. "de" or "en".

    Returns:
        One space-separated, lowercased, XML-escaped string per line.

    Example:
    >>> moses_lc_tokenize(["Ein Mann sagt: „It's fine.“"], "de")
    ['ein mann sagt : &quot; it &apos; s fine &quot; .']
    """
    if isinstance(lines, str):
        raise TypeError(
            "`lines` must be an iterable of sentences, not one string; "
            f"received lines={lines!r:.80}. Wrap a single sentence in a list."
        )
    check_moses_language(language)
    # perl_parity keeps normalize-punctuation.perl's quirk of turning a lone "’" into
    # a double quote (train.de has "Hook ’em Horns" -> `&quot; em`).
    normalizer = MosesPunctNormalizer(lang=language, perl_parity=True)
    tokenizer = MosesTokenizer(lang=language)
    tokenized = []
    for line in lines:
        # Perl reads each line with its newline, and the de/es/fr rule
        # `(\.+)"(\s*[^<])` matches it: a sentence-final `."` becomes `".`.
        normalized = normalizer.normalize(line.rstrip("\n").lower() + "\n")
        tokenized.append(
            tokenizer.tokenize(
                normalized, aggressive_dash_splits=False, escape=True, return_str=True
            )
        )
    return tokenized


def tokenized_bleu(hypotheses, tokenized_references, language: str | None) -> dict:
    """Lowercased, Moses-tokenised corpus BLEU, comparable with multi-bleu.perl / fairseq BLEU4.

    Hypotheses go through `moses_lc_tokenize`; references must already be
    tokenised that way (e.g. Multi30k's `tok/test2016.lc.norm.tok.de`). Scoring
    splits on whitespace and, like those tools, does not smooth: a corpus with
    no matching 4-gram scores 0.

    Args:
        hypotheses: system outputs, one per sentence.
        tokenized_references: one tokenised, lowercased reference per hypothesis.
        language: the target language's Moses code, e.g. "de"; or None when the
            hypotheses are already lowercased and tokenised like the references
            (a model trained on the `tok/` copy), so they are scored as they are.

    Returns:
        `bleu_lc_tok` (the score), `bleu_lc_tok_signature` (sacreBLEU's, plus
        the preprocessing as `pre:moses-lc-norm-tok-LANG`, or `pre:none`) and
        `bleu_lc_tok_text`.
    """
    hypotheses = list(hypotheses)
    tokenized_references = list(tokenized_references)
    if len(hypotheses) != len(tokenized_references):
        raise ValueError(
            "`hypotheses` and `tokenized_references` must have one entry per sentence; "
            f"received {len(hypotheses)} hypotheses and {len(tokenized_references)} references"
        )
    bleu = sacrebleu.metrics.BLEU(
        tokenize="none", force=True, lowercase=False, smooth_method="none"
    )
    if language is not None:
        hypotheses = moses_lc_tokenize(hypotheses, language)
    preprocessing = "none" if language is None else f"moses-lc-norm-tok-{language}"
    result = bleu.corpus_score(hypotheses, [tokenized_references])
    return {
        "bleu_lc_tok": result.score,
        "bleu_lc_tok_signature": f"{bleu.get_signature()}|pre:{preprocessing}",
        "bleu_lc_tok_text": str(result),
    }


def check_reference_args(tokenized_reference, language, hypotheses_tokenized, raw_reference):
    """Raises unless the reference options of `evaluate_run` fit together."""
    if (tokenized_reference is None) != (language is None):
        raise ValueError(
            "`tokenized_reference` and `language` go together: pass both or neither; "
            f"received tokenized_reference={tokenized_reference!r}, language={language!r}"
        )
    if hypotheses_tokenized and tokenized_reference is None:
        raise ValueError(
            "`hypotheses_tokenized` says how to score against `tokenized_reference`; "
            "pass `tokenized_reference` and `language` with it"
        )
    if raw_reference is not None and not hypotheses_tokenized:
        raise ValueError(
            "`raw_reference` is for a model whose outputs are tokenised (they are "
            "detokenised to be scored against it); without `hypotheses_tokenized` the "
            f"corpus's own targets are the raw reference: received raw_reference={raw_reference!r}"
        )
    if language is not None:
        check_moses_language(language)


def moses_detokenize(lines, language: str) -> list[str]:
    """Undoes Moses tokenisation and XML escaping (case stays as it is).

    Example:
    >>> moses_detokenize(["ein mann sagt : &quot; hallo &quot; ."], "de")
    ['ein mann sagt: "hallo".']
    """
    detokenizer = MosesDetokenizer(lang=language)
    return [detokenizer.detokenize(line.split(), unescape=True) for line in lines]


def read_aligned_reference(
    path: str, name: str, corpus_lines: int, evaluated: int
) -> list[str]:
    """The first `evaluated` lines of a reference file aligned with the corpus.

    Args:
        path: one reference per line.
        name: the argument `path` came from, for errors.
        corpus_lines: lines (pairs) in the evaluated corpus.
        evaluated: how many of them are evaluated (`max_sentences` truncation).

    Returns:
        `evaluated` references, without their newlines.
    """
    with open(path, encoding="utf-8") as f:
        references = [line.rstrip("\r\n") for line in f]
    if len(references) not in (corpus_lines, evaluated):
        also = f" or the {evaluated} evaluated ones" if evaluated != corpus_lines else ""
        raise ValueError(
            f"`{name}` {path} has {len(references)} lines, but must have "
            f"one per corpus pair ({corpus_lines}){also}; pass a copy of the "
            "corpus's target side"
        )
    return references[:evaluated]


def saved_model_translate(path: str, batch_size: int = NO_XLA_BATCH_SIZE):
    """A `translate(sentences, progress=None) -> translations` function over an export's serving_default.

    Like `Translator.translate`, it sends requests of `batch_size` sentences
    of similar length (by characters: the client has no tokenizer), longest
    first, and returns the translations in input order. The default export
    runs without XLA, so finished sentences leave a request's batch and
    large requests pay, as in process: Multi30k test2016, beam 5, 207
    sentences/s in requests of 512 against 140-182 in requests of 64 (two
    `training.evaluate --saved-model` runs each, the same hypotheses).
    """
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"`saved_model` {path!r} is not an exported version directory (no saved_model.pb); "
            "pass saved_models/NAME/VERSION"
        )
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def translate(sentences, progress=None):
        sentences = list(sentences)
        translations = [""] * len(sentences)
        lengths = [len(sentence) for sentence in sentences]
        done = 0
        for rows in length_sorted_batches(lengths, batch_size):
            request = tf.constant([sentences[row] for row in rows], tf.string)
            outputs = serve(inputs=request)["outputs"].numpy()
            for row, text in zip(rows, outputs):
                translations[row] = text.decode("utf-8")
            done += len(rows)
            if progress is not None:
                progress(done)
        return translations

    return translate


def _strategy_dict(strategy):
    return None if strategy is None else strategy.to_dict()


def teacher_forced_metrics(model, dataset) -> dict:
    """Loss (no label smoothing), masked token accuracy and perplexity."""
    model.compile(loss=MaskedCrossEntropy(), metrics=[masked_accuracy()], jit_compile=False)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    return {
        "loss": float(result["loss"]),
        "accuracy": float(result["accuracy"]),
        "perplexity": float(math.exp(min(result["loss"], 50.0))),
    }


def evaluate_run(
    run_dir: str,
    corpus,
    *,
    strategy: Strategy = DEFAULT_STRATEGY,
    batch_size: int | None = None,
    batch_tokens: int = 4096,
    max_sentences: int | None = None,
    output_dir: str | None = None,
    verbose: int = 1,
    tokenized_reference: str | None = None,
    language: str | None = None,
    hypotheses_tokenized: bool = False,
    raw_reference: str | None = None,
    saved_model: str | None = None,
    precision: str | None = None,
) -> dict:
    """Evaluates a run directory on a corpus and writes hypotheses and metrics.

    Args:
        run_dir: a trained run (model.keras, config.json, tokenizers).
        corpus: a TSV path or a `(source_path, target_path)` tuple.
        strategy: the decoding strategy (`keras_s2s.decoding`).
        batch_size: sentences decoded together (default: the Translator's,
            `Translator.default_batch_size`; 64 requests for `saved_model`).
        batch_tokens: token budget of the teacher-forced evaluation batches.
        max_sentences: evaluate only the first N pairs.
        output_dir: where `hypotheses.txt` and `metrics.json` go
            (default: RUN_DIR/eval).
        verbose: 1 shows a progress bar while decoding.
        tokenized_reference: a lowercased, Moses-tokenised copy of the corpus's
            target side (e.g. Multi30k `tok/test2016.lc.norm.tok.de`), one line
            per pair; adds `bleu_lc_tok` (see `tokenized_bleu`). With
            `max_sentences`, its first N lines are used.
        language: the target language's Moses code (e.g. "de"); required with
            `tokenized_reference`.
        hypotheses_tokenized: the model outputs lowercased, Moses-tokenised
            text (it was trained on a `tok/` copy, and the corpus is one too):
            `bleu_lc_tok` scores the hypotheses as they are.
        raw_reference: with `hypotheses_tokenized`, the untokenised, cased
            target side (e.g. Multi30k `test2016.de`): the hypotheses are
            Moses-detokenised and scored against it with sacreBLEU's defaults
            (`raw_bleu`, `raw_chrf`, their signatures), the numbers sacreBLEU
            users expect; detokenised hypotheses go to `hypotheses.detok.txt`.
        saved_model: an exported version directory (saved_models/NAME/N):
            translate through its `serving_default` signature, tokenization
            included, instead of the in-process Translator. Its decoding
            strategy is the one fixed at export; `strategy` is then ignored.
        precision: the dtype policy the in-process model runs under (see
            `load_run_model`); None keeps the training's.

    Returns:
        The metrics dict (also written to `metrics.json`).

    The corpus and `tokenized_reference` are checked before the model loads.
    """
    if precision is not None and saved_model is not None:
        raise ValueError(
            "`precision` applies to in-process decoding; an export's precision is fixed "
            f"when it is exported: received precision={precision!r}, saved_model={saved_model!r}"
        )
    check_load_precision(precision)
    check_strategy(strategy)
    check_reference_args(tokenized_reference, language, hypotheses_tokenized, raw_reference)
    stats = data.CorpusStats()
    pairs = list(data.read_corpus(corpus, stats=stats))
    if max_sentences:
        pairs = pairs[:max_sentences]
    if not pairs:
        raise ValueError(f"`corpus` {corpus!r} holds no pairs to evaluate")
    sources = [source for source, _ in pairs]
    references = [target for _, target in pairs]
    if tokenized_reference is not None:
        if stats.skipped_empty:
            raise ValueError(
                f"`corpus` {corpus!r} has {stats.skipped_empty} pairs with an empty side, "
                "which evaluation skips, so `tokenized_reference` no longer lines up "
                "with it; remove those lines from both"
            )
        tokenized_references = read_aligned_reference(
            tokenized_reference, "tokenized_reference", stats.read, len(pairs)
        )
    if raw_reference is not None:
        raw_references = read_aligned_reference(
            raw_reference, "raw_reference", stats.read, len(pairs)
        )

    run = RunDir(run_dir)
    output_dir = output_dir or run.eval_dir
    os.makedirs(output_dir, exist_ok=True)
    translator = Translator.from_run_dir(run_dir, precision, strategy=strategy)
    config = run.read_model_config()

    dataset = data.make_dataset(
        data.pairs_dataset(pairs),
        translator.source_tokenizer,
        translator.target_tokenizer,
        max_length=config.max_length,
        batch_tokens=batch_tokens,
        shuffle=False,
        drop_too_long=False,
    )
    # A known length: Keras shows a complete progress bar and no "ran out of data" warning.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count_batches(dataset)))
    metrics = teacher_forced_metrics(translator.model, dataset)

    if saved_model is None:
        translate = functools.partial(translator.translate, batch_size=batch_size)
    else:
        translate = saved_model_translate(saved_model, batch_size or NO_XLA_BATCH_SIZE)
    started = time.perf_counter()
    progress = keras.utils.Progbar(len(sources), unit_name="sentence", verbose=verbose)
    # All at once: the translator sorts them by length into batches (faster
    # than batches in file order) and returns them in order.
    hypotheses = translate(sources, progress=progress.update)
    decode_seconds = time.perf_counter() - started

    metrics.update(score(hypotheses, references))
    if tokenized_reference is not None:
        metrics.update(
            tokenized_bleu(
                hypotheses, tokenized_references, None if hypotheses_tokenized else language
            )
        )
        metrics.update(
            {
                "tokenized_reference": tokenized_reference,
                "language": language,
                "hypotheses_tokenized": hypotheses_tokenized,
            }
        )
    detokenized = None
    if raw_reference is not None:
        detokenized = moses_detokenize(hypotheses, language)
        raw = score(detokenized, raw_references)
        metrics.update({f"raw_{key}": value for key, value in raw.items()})
        metrics["raw_reference"] = raw_reference
    metrics.update(
        {
            "sentences": len(sources),
            # The export's strategy is its own (None for an export without the record).
            "strategy": _strategy_dict(strategy if saved_model is None
                                       else exported_strategy(saved_model)),
            "decoded_by": "translator" if saved_model is None else f"saved_model:{saved_model}",
            # The policy the decoder layers computed in (the in-process model's).
            "precision": (
                translator.parts.decoder_layers[0].dtype_policy.name if saved_model is None else None
            ),
            "decode_seconds": decode_seconds,
            "sentences_per_second": len(sources) / decode_seconds,
            "corpus": corpus if isinstance(corpus, str) else list(corpus),
        }
    )
    write_evaluation(output_dir, metrics, hypotheses, detokenized)
    return metrics
