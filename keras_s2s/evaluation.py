"""Evaluation of a trained run: teacher-forced loss/accuracy/perplexity, then
decoding scored with sacreBLEU (BLEU and chrF, with their signatures).
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import sacrebleu
import tensorflow as tf

from keras_s2s import data
from keras_s2s.config import ModelConfig
from keras_s2s.training.losses import MaskedCrossEntropy, masked_accuracy
from keras_s2s.training.trainer import count_batches
from keras_s2s.translator import Translator

HYPOTHESES_FILE = "hypotheses.txt"
METRICS_FILE = "metrics.json"


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
    beam_size: int = 4,
    length_penalty: float = 0.6,
    batch_size: int = 64,
    batch_tokens: int = 4096,
    max_sentences: int | None = None,
    output_dir: str | None = None,
    verbose: int = 1,
) -> dict:
    """Evaluates a run directory on a corpus and writes hypotheses and metrics.

    Args:
        run_dir: a trained run (model.keras, config.json, tokenizers).
        corpus: a TSV path or a `(source_path, target_path)` tuple.
        beam_size: 1 for greedy search.
        length_penalty: GNMT alpha.
        batch_size: sentences decoded together.
        batch_tokens: token budget of the teacher-forced evaluation batches.
        max_sentences: evaluate only the first N pairs.
        output_dir: where `hypotheses.txt` and `metrics.json` go
            (default: RUN_DIR/eval).
        verbose: 1 shows a progress bar while decoding.

    Returns:
        The metrics dict (also written to `metrics.json`).
    """
    output_dir = output_dir or os.path.join(run_dir, "eval")
    os.makedirs(output_dir, exist_ok=True)
    translator = Translator.from_run_dir(
        run_dir, beam_size=beam_size, length_penalty=length_penalty
    )
    config = ModelConfig.load(os.path.join(run_dir, "config.json"))
    stats = data.CorpusStats()
    pairs = list(data.read_corpus(corpus, stats=stats))
    if max_sentences:
        pairs = pairs[:max_sentences]
    if not pairs:
        raise ValueError(f"`corpus` {corpus!r} holds no pairs to evaluate")
    sources = [source for source, _ in pairs]
    references = [target for _, target in pairs]

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

    started = time.perf_counter()
    progress = keras.utils.Progbar(len(sources), unit_name="sentence", verbose=verbose)
    hypotheses = []
    for start in range(0, len(sources), batch_size):
        hypotheses += translator.translate(sources[start : start + batch_size])
        progress.update(len(hypotheses))
    decode_seconds = time.perf_counter() - started

    metrics.update(score(hypotheses, references))
    metrics.update(
        {
            "sentences": len(sources),
            "beam_size": beam_size,
            "length_penalty": length_penalty,
            "decode_seconds": decode_seconds,
            "sentences_per_second": len(sources) / decode_seconds,
            "corpus": corpus if isinstance(corpus, str) else list(corpus),
        }
    )
    with open(os.path.join(output_dir, HYPOTHESES_FILE), "w", encoding="utf-8") as f:
        f.writelines(hypothesis + "\n" for hypothesis in hypotheses)
    with open(os.path.join(output_dir, METRICS_FILE), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    return metrics
