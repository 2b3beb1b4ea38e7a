"""Child process: how much of keras_s2s's real training batches is padding.

Multi30k En->De train (../shared/data/multi30k), SentencePiece tokenizers
trained with `keras_s2s.data.train_tokenizers` (vocabulary 8000 per side,
cached in a temporary folder keyed by the corpus files and settings), batches
from `keras_s2s.data.make_dataset` with the TrainConfig / ModelConfig
defaults `make run` uses (4096-token batches, max_length 128, the trainer's
buckets: one per length without XLA, every 8 tokens with XLA), one shuffled
epoch each, counted by `keras_s2s.data.padding_statistics`.

    python -m bench.bucketing --out PATH
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time

from bench import workload

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MULTI30K = os.path.join(os.path.dirname(workload.REPO_ROOT), "shared", "data", "multi30k")
VOCABULARY_SIZE = 8000


def cached_tokenizers(source_path, target_path, vocabulary_size):
    """Loads tokenizers trained earlier on the same files, or trains and caches them."""
    from keras_s2s import data

    key = hashlib.sha256()
    for path in (source_path, target_path):
        info = os.stat(path)
        key.update(f"{os.path.abspath(path)}:{info.st_size}:{info.st_mtime_ns};".encode())
    key.update(f"vocabulary_size={vocabulary_size},hard_vocab_limit=False".encode())
    base = os.path.join(tempfile.gettempdir(), "keras_s2s_bench_tokenizers")
    directory = os.path.join(base, key.hexdigest()[:16])
    if os.path.isdir(directory):
        return data.load_tokenizers(directory), True
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="training_", dir=base)
    try:
        # A soft limit: Multi30k's English side yields a few pieces short of 8000.
        data.train_tokenizers((source_path, target_path), scratch,
                              vocabulary_size=vocabulary_size, hard_vocab_limit=False)
        os.replace(scratch, directory)  # atomic: a half-written cache is never seen
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return data.load_tokenizers(directory), False


def full_batch_size(batch_tokens, source_length, target_length, multiple=8):
    """make_dataset's documented batch size of a bucket pair (not its last, smaller batch)."""
    size = batch_tokens // max(source_length, target_length)  # one length per bucket here
    return max(multiple, size - size % multiple)


def padding_on_multi30k(corpus_dir=MULTI30K, jit_compile=False) -> dict:
    """Real-token fraction and distinct batch shapes of one training epoch.

    The buckets are the trainer's for `jit_compile` (`train_bucket_boundaries`
    with `--bucket_width 0`): one per length without XLA, width 8 with it.
    """
    from keras_s2s import data
    from keras_s2s.config import ModelConfig, TrainConfig

    source_path = os.path.join(corpus_dir, "train.en")
    target_path = os.path.join(corpus_dir, "train.de")
    from keras_s2s.training.trainer import train_bucket_boundaries, train_bucket_width

    train_config = TrainConfig()
    max_length = ModelConfig(source_vocabulary_size=2, target_vocabulary_size=2).max_length
    boundaries = train_bucket_boundaries(train_config, max_length, jit_compile)

    started = time.perf_counter()
    (source_tokenizer, target_tokenizer), cached = cached_tokenizers(
        source_path, target_path, VOCABULARY_SIZE
    )
    tokenizer_seconds = time.perf_counter() - started

    started = time.perf_counter()
    corpus_stats = data.CorpusStats()
    dataset = data.make_dataset(
        data.pairs_dataset((source_path, target_path),
                           max_words=train_config.max_source_words, stats=corpus_stats),
        source_tokenizer,
        target_tokenizer,
        max_length=max_length,
        batch_tokens=train_config.batch_tokens,
        bucket_boundaries=boundaries,
        pad_sides_together=True,  # as keras_s2s.training.trainer batches
        shuffle=True,
        shuffle_buffer=train_config.shuffle_buffer,
        seed=train_config.seed,
    )
    stats = data.padding_statistics(dataset)
    bucket_pairs = sorted({(s, t) for (_, s, t) in stats.shapes})
    full_shapes = [
        shape for shape in stats.shapes
        if shape[0] == full_batch_size(train_config.batch_tokens, *shape[1:])
    ]
    return {
        "corpus": "multi30k train.en -> train.de",
        "settings": {
            "vocabulary_size": VOCABULARY_SIZE,
            "tokenizer": "keras_s2s.data.train_tokenizers defaults (unigram, separate "
                         "vocabularies), hard_vocab_limit=False",
            "vocabulary_sizes": [source_tokenizer.vocabulary_size,
                                 target_tokenizer.vocabulary_size],
            "max_length": max_length,
            "batch_tokens": train_config.batch_tokens,
            "jit_compile": jit_compile,
            "bucket_width": train_bucket_width(train_config, jit_compile),
            "bucket_boundaries": boundaries,
            "shuffle_buffer": train_config.shuffle_buffer,
            "seed": train_config.seed,
            "repeat": False,
            "pad_sides_together": True,
        },
        "tokenizers_from_cache": cached,
        "tokenizer_seconds": tokenizer_seconds,
        "epoch_scan_seconds": time.perf_counter() - started,
        "batches": stats.batches,
        "examples": stats.examples,
        "corpus_stats": corpus_stats.summary(),
        "real_tokens": stats.real_tokens,
        "padded_tokens": stats.padded_tokens,
        "real_token_fraction": stats.efficiency,
        "distinct_batch_shapes": len(stats.shapes),
        "distinct_bucket_pairs": len(bucket_pairs),
        # A repeating pipeline (fit with steps_per_epoch) never emits the
        # smaller last batch of a bucket, so it shows only these shapes.
        "distinct_full_batch_shapes": len(full_shapes),
        "shapes": {"x".join(map(str, shape)): n for shape, n in stats.shapes.items()},
        "summary": stats.summary(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if not os.path.isdir(MULTI30K):
        result = {"skipped": f"no corpus at {MULTI30K}"}
    else:
        # Top level: the CPU default (no XLA); "xla": the XLA buckets.
        result = padding_on_multi30k(jit_compile=False)
        result["xla"] = padding_on_multi30k(jit_compile=True)
        for run in (result, result["xla"]):
            print(f"bucket width {run['settings']['bucket_width']}: {run['summary']}", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
