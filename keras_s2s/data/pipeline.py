"""The tf.data input pipeline: sentence pairs -> bucketed, padded batches for `fit`.

    pairs (string, string)
      -> batch -> tokenize in-graph, add START / END -> unbatch
      -> drop (or truncate) sequences longer than `max_length`
      -> [cache: tokenized once per run] -> shuffle -> [repeat]
      -> group by (source bucket, target bucket); pad each side to its bucket
      -> shuffle batches -> ({"encoder_tokens", "decoder_tokens"}, labels)
      -> prefetch

Each batch holds about `batch_tokens` tokens (padding included) on its longer
side, and every batch of one (source bucket, target bucket) group has the same
shape, so the set of shapes XLA compiles for is bounded (KNOWN_TRAPS 9): at
most one per pair of buckets (one per bucket with `pad_sides_together`), plus
the smaller last batch of each group at the end of an epoch when the dataset
does not repeat.

The encoder gets the source pieces as they are, without START or END; the
decoder gets `[START] y1 .. yn` and learns to predict `y1 .. yn [END]`.

Shape legend: B batch, S source length, T target length (decoder input and
labels), N strings.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_s2s.checks import check_positive_int
from keras_s2s.data import corpus as corpus_lib
from keras_s2s.data.tokenizers import END_ID, PAD_ID, START_ID, Tokenizer
from keras_s2s.models import DECODER_INPUT, ENCODER_INPUT

# Strings tokenized per call (and pairs per chunk read from Python): one op
# on many strings costs far less than many ops on one string each.
_TOKENIZE_BATCH = 256
# Batches shuffled after bucketing, so that lengths mix between steps.
_BATCH_SHUFFLE_BUFFER = 32


def pairs_dataset(corpus, **read_options) -> tf.data.Dataset:
    """A dataset of `(source, target)` string scalars from any corpus.

    Args:
        corpus: one of
            * a corpus spec (a TSV path, or a tuple of two line-aligned
              files): streamed with `corpus.read_corpus`, re-read from disk
              on each pass;
            * a function returning an iterable of pairs, e.g.
              `lambda: read_corpus(path, stats=stats)`: called on each pass,
              so the corpus streams and is never held in memory;
            * a sequence of pairs (a list): held in memory, the fastest.
        **read_options: `max_words`, `stats` of `read_corpus`; only with a
            corpus spec.

    Returns:
        `tf.data.Dataset` of `(tf.string (), tf.string ())`.

    Raises:
        TypeError: `corpus` is a one-shot iterator (such as a generator
            object): a second epoch would silently see no data.
    """
    if corpus_lib.is_corpus_spec(corpus):
        return _streamed(lambda: corpus_lib.read_corpus(corpus, **read_options))
    if read_options:
        raise ValueError(
            f"keyword arguments {sorted(read_options)} are options of `read_corpus` "
            "and apply only when `corpus` is a corpus spec (a TSV path or a tuple "
            "of two paths)"
        )
    if callable(corpus):
        return _streamed(corpus)
    if isinstance(corpus, Sequence):
        if not corpus:
            raise ValueError("`corpus` is empty: it must hold at least one pair")
        sources, targets = zip(*(_as_pair(pair) for pair in corpus))
        return tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))
    if iter(corpus) is corpus:
        raise TypeError(
            "`corpus` is a one-shot iterator (e.g. a generator object), which a "
            "dataset could read only once; pass a function returning it instead, "
            "e.g. pairs_dataset(lambda: read_corpus(path))"
        )
    return _streamed(lambda: iter(corpus))


def _streamed(make_pairs) -> tf.data.Dataset:
    """`from_generator` over chunks of pairs, unbatched into single pairs.

    Each element `from_generator` produces crosses from TensorFlow into
    Python and back; chunks make that cost per few hundred pairs, not per
    pair (about 5x faster on a 20k-pair corpus).
    """

    def chunks():
        sources, targets = [], []
        for pair in make_pairs():
            source, target = _as_pair(pair)
            sources.append(source)
            targets.append(target)
            if len(sources) == _TOKENIZE_BATCH:
                yield sources, targets
                sources, targets = [], []
        if sources:
            yield sources, targets

    strings = tf.TensorSpec((None,), tf.string)
    return tf.data.Dataset.from_generator(chunks, output_signature=(strings, strings)).unbatch()


def decoder_io(target_ids: tf.RaggedTensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Teacher-forcing decoder inputs and labels from target ids.

    Args:
        target_ids: int ragged (B, None): `y1 .. yn` per row, without START
            or END.

    Returns:
        `(decoder_tokens, labels)`, int32 ragged (B, None), each row one
        longer than in `target_ids`: `[START] y1 .. yn` and `y1 .. yn [END]`,
        so `labels[:, i]` is the token to predict after `decoder_tokens[:, :i+1]`.
    """
    target_ids = tf.cast(target_ids, tf.int32)
    rows = target_ids.nrows()
    start = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], START_ID))  # (B, 1)
    end = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], END_ID))  # (B, 1)
    return tf.concat([start, target_ids], axis=1), tf.concat([target_ids, end], axis=1)


def padded_decoder_io(
    target_ids: tf.RaggedTensor, length: int | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """`decoder_io`, padded with PAD_ID into dense int32 (B, T).

    Args:
        target_ids: int ragged (B, None), without START or END.
        length: T; by default the longest row + 1. Rows that do not fit
            raise `InvalidArgumentError` instead of being cut.

    Returns:
        `(decoder_tokens, labels)`, int32 (B, T).
    """
    decoder_tokens, labels = decoder_io(target_ids)
    if length is not None:
        longest = tf.reduce_max(decoder_tokens.row_lengths())
        tf.debugging.assert_less_equal(
            longest,
            tf.cast(length, longest.dtype),
            message="`length` is shorter than a target row + 1 (START/END)",
        )
    shape = [None, length]
    return (
        decoder_tokens.to_tensor(PAD_ID, shape=shape),  # (B, T)
        labels.to_tensor(PAD_ID, shape=shape),  # (B, T)
    )


def default_bucket_boundaries(max_length: int, step: int = 8) -> list[int]:
    """Multiples of `step` below `max_length`, then `max_length`: [8, 16, .., max_length]."""
    check_positive_int("max_length", max_length)
    return [*range(step, max_length, step), max_length]


def make_dataset(
    pairs: tf.data.Dataset,
    source_tokenizer: Tokenizer,
    target_tokenizer: Tokenizer,
    *,
    max_length: int,
    batch_tokens: int,
    bucket_boundaries: Sequence[int] | None = None,
    batch_size_multiple: int = 8,
    pad_sides_together: bool = False,
    shuffle: bool = True,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = False,
    drop_too_long: bool = True,
    cache: bool = False,
) -> tf.data.Dataset:
    """Batches for `model.fit`: `({"encoder_tokens", "decoder_tokens"}, labels)`.

    Args:
        pairs: `(source, target)` string scalars, e.g. from `pairs_dataset`.
        source_tokenizer: tokenizes the source side (no START/END added).
        target_tokenizer: tokenizes the target side.
        max_length: longest sequence, in tokens, on either side: the source
            pieces, and the target pieces + 1 (START or END). Use the
            model's `ModelConfig.max_length`.
        batch_tokens: target number of tokens per batch, padding included,
            on the longer side: a batch of bucket lengths (S_b, T_b) holds
            `batch_tokens // max(S_b, T_b)` pairs, rounded down to a multiple
            of `batch_size_multiple`. Under a distribution strategy this is
            the global batch.
        bucket_boundaries: increasing padded lengths, the last equal to
            `max_length`; a sequence of length n is padded to the smallest
            boundary >= n, each side to its own. Default
            `default_bucket_boundaries(max_length)`: 8, 16, .., max_length.
        batch_size_multiple: every batch size is a multiple of this (8 suits
            accelerators; use a multiple of the number of replicas), except
            the last, smaller batch of each bucket when not repeating.
        pad_sides_together: pad source and target of a batch to one length,
            the bucket of the longer side. This bounds the batch shapes by
            `len(bucket_boundaries)` instead of its square, at some padding
            cost (on the built-in corpus with max_length=48: 6 shapes and
            77% real tokens, against 24 shapes and 83%). Use it with
            `jit_compile=True`, where each new shape is compiled anew (about
            10 s each on a 2-core CPU; KNOWN_TRAPS 9).
        shuffle: shuffle tokenized pairs (in a buffer of `shuffle_buffer`)
            before bucketing, and batches after.
        shuffle_buffer: pairs in the shuffle buffer.
        seed: seeds both shuffles: the same seed gives the same batches in
            the same order (tf.data determinism is kept on).
        repeat: repeat forever (use with `steps_per_epoch`). Repeating
            before bucketing means no group is ever flushed half-full, so
            every batch has a full size and the shape set stays minimal.
        drop_too_long: drop pairs with a side longer than `max_length` (the
            count is not reported: tf.data filters cannot count; compare
            `padding_statistics(...).examples` with `CorpusStats.kept`).
            If False, truncate them instead (the source to `max_length`, the
            target to `max_length - 1` pieces before END, so the model learns
            to end truncated sentences: use only when few are affected).
            Pairs whose source has no piece at all are always dropped.
        cache: tokenize the corpus once and keep the token ids in memory
            (about 4 bytes a token: 6 MB for Multi30k's 29k pairs); every
            later pass shuffles and buckets from there instead of reading
            and tokenizing the text again, which on a 2-core machine takes
            a core away from training.

    Returns:
        A `tf.data.Dataset` of `({"encoder_tokens": int32 (B, S),
        "decoder_tokens": int32 (B, T)}, labels int32 (B, T))`, padded with
        PAD_ID, S and T taken from `bucket_boundaries`.
    """
    check_positive_int("max_length", max_length)
    check_positive_int("batch_tokens", batch_tokens)
    check_positive_int("batch_size_multiple", batch_size_multiple)
    check_positive_int("shuffle_buffer", shuffle_buffer)
    if max_length < 2:
        raise ValueError(
            f"`max_length` must be at least 2 (START or END plus one piece); "
            f"received max_length={max_length}"
        )
    boundaries = _check_boundaries(
        default_bucket_boundaries(max_length) if bucket_boundaries is None else bucket_boundaries,
        max_length,
    )
    if batch_tokens < boundaries[-1] * batch_size_multiple:
        raise ValueError(
            f"`batch_tokens`={batch_tokens} cannot hold `batch_size_multiple`="
            f"{batch_size_multiple} sequences of the longest bucket ({boundaries[-1]} "
            f"tokens); pass batch_tokens>={boundaries[-1] * batch_size_multiple} or a "
            "smaller batch_size_multiple"
        )
    batch_sizes = _batch_sizes(boundaries, batch_tokens, batch_size_multiple)

    num_buckets = len(boundaries)
    boundaries_tensor = tf.constant(boundaries, tf.int64)
    batch_sizes_tensor = tf.constant(batch_sizes, tf.int64)  # (num_buckets**2,)

    def bucket(lengths):
        # Index of the smallest boundary >= each length.
        return tf.searchsorted(boundaries_tensor, tf.cast(lengths, tf.int64), out_type=tf.int64)

    def tokenize(sources, targets):
        # Everything per example is done here on a whole batch of strings:
        # tf.data runs a function per element at a fixed cost each, which
        # dominated an element-wise filter/key/pad version of this pipeline.
        source_ids = source_tokenizer.tokenize(sources)  # (N, None)
        target_ids = target_tokenizer.tokenize(targets)  # (N, None)
        if not drop_too_long:
            source_ids = source_ids[:, :max_length]
            target_ids = target_ids[:, : max_length - 1]
        decoder_tokens, labels = decoder_io(target_ids)  # (N, None) each
        source_lengths = source_ids.row_lengths()  # (N,)
        target_lengths = decoder_tokens.row_lengths()  # (N,)
        keep = (
            (source_lengths > 0)
            & (source_lengths <= max_length)
            & (target_lengths <= max_length)
        )  # (N,)
        source_buckets = bucket(source_lengths)  # (N,)
        target_buckets = bucket(target_lengths)  # (N,)
        if pad_sides_together:
            source_buckets = target_buckets = tf.maximum(source_buckets, target_buckets)
        keys = source_buckets * num_buckets + target_buckets  # (N,)
        # Unpadded rows: the cache and the shuffle buffer hold real tokens
        # only; each batch is padded to its bucket lengths after grouping.
        return (
            tf.boolean_mask(keys, keep),  # (N',)
            tf.ragged.boolean_mask(tf.cast(source_ids, tf.int32), keep),  # (N', None)
            tf.ragged.boolean_mask(decoder_tokens, keep),  # (N', None)
            tf.ragged.boolean_mask(labels, keep),  # (N', None)
        )

    def batch_group(key, window):
        source_length = boundaries_tensor[key // num_buckets]
        target_length = boundaries_tensor[key % num_buckets]

        def pad(rows, length):  # ragged (B, None) -> (B, length)
            return rows.to_tensor(PAD_ID, shape=tf.stack([rows.nrows(), length]))

        return window.ragged_batch(batch_sizes_tensor[key]).map(
            lambda keys, source, decoder_tokens, labels: (
                pad(source, source_length),  # (B, S)
                pad(decoder_tokens, target_length),  # (B, T)
                pad(labels, target_length),  # (B, T)
            )
        )

    dataset = (
        pairs.batch(_TOKENIZE_BATCH)
        .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = (
        dataset.group_by_window(
            key_func=lambda key, *sequences: key,
            reduce_func=batch_group,
            window_size_func=lambda key: batch_sizes_tensor[key],
        )
    )
    if shuffle:
        dataset = dataset.shuffle(
            _BATCH_SHUFFLE_BUFFER, seed=None if seed is None else seed + 1
        )
    dataset = dataset.map(
        lambda source, decoder_tokens, labels: (
            {ENCODER_INPUT: source, DECODER_INPUT: decoder_tokens},  # (B, S), (B, T)
            labels,  # (B, T)
        )
    )
    options = tf.data.Options()
    # Only the batched tokenization runs in parallel; keeping its order costs
    # nothing measurable and makes a seeded pipeline reproducible.
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def count_batches(dataset) -> int:
    """Batches in one pass of a finite dataset (reads it once)."""
    count = int(dataset.reduce(0, lambda count, _: count + 1))
    if not count:
        raise ValueError("the corpus yielded no batch: is it empty, or is every pair too long?")
    return count


@dataclasses.dataclass
class PaddingStats:
    """How much of the batches is real tokens, and which shapes they have.

    Attributes:
        batches: batches seen.
        examples: sentence pairs seen.
        real_tokens: non-PAD tokens, encoder and decoder inputs together.
        padded_tokens: all tokens, padding included.
        shapes: `{(B, S, T): number of batches}`.
    """

    batches: int = 0
    examples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    shapes: dict[tuple[int, int, int], int] = dataclasses.field(default_factory=dict)

    @property
    def efficiency(self) -> float:
        """real_tokens / padded_tokens (1.0 means no padding)."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def summary(self) -> str:
        return (
            f"{self.batches} batches, {self.examples} examples, padding efficiency "
            f"{self.efficiency:.1%} ({self.real_tokens}/{self.padded_tokens} tokens), "
            f"{len(self.shapes)} distinct (B, S, T) shapes"
        )


def padding_statistics(dataset: tf.data.Dataset, max_batches: int | None = None) -> PaddingStats:
    """Counts real and padded tokens and the distinct batch shapes of `dataset`.

    Args:
        dataset: batches as made by `make_dataset` (finite, or bounded by
            `max_batches`).
        max_batches: stop after this many batches.

    Returns:
        A `PaddingStats`.
    """
    stats = PaddingStats()
    shapes = collections.Counter()
    for inputs, _ in dataset.take(-1 if max_batches is None else max_batches):
        encoder = inputs[ENCODER_INPUT].numpy()  # (B, S)
        decoder = inputs[DECODER_INPUT].numpy()  # (B, T)
        stats.batches += 1
        stats.examples += encoder.shape[0]
        stats.real_tokens += int(
            np.count_nonzero(encoder != PAD_ID) + np.count_nonzero(decoder != PAD_ID)
        )
        stats.padded_tokens += encoder.size + decoder.size
        shapes[(encoder.shape[0], encoder.shape[1], decoder.shape[1])] += 1
    stats.shapes = dict(sorted(shapes.items()))
    return stats


def _batch_sizes(boundaries: list[int], batch_tokens: int, multiple: int) -> list[int]:
    """Batch size per (source bucket, target bucket), flattened row-major."""
    sizes = []
    for source_length in boundaries:
        for target_length in boundaries:
            size = batch_tokens // max(source_length, target_length)
            sizes.append(max(multiple, size - size % multiple))
    return sizes


def _check_boundaries(boundaries, max_length: int) -> list[int]:
    boundaries = list(boundaries)
    valid = (
        boundaries
        and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in boundaries)
        and all(a < b for a, b in zip(boundaries, boundaries[1:]))
        and boundaries[-1] == max_length
    )
    if not valid:
        raise ValueError(
            "`bucket_boundaries` must be increasing positive integers ending at "
            f"`max_length` (padded lengths never exceed what the model accepts); "
            f"received bucket_boundaries={boundaries}, max_length={max_length}"
        )
    return boundaries


def _as_pair(pair) -> tuple[str, str]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"`corpus` must hold (source, target) pairs; received {pair!r:.100}")
    return pair[0], pair[1]
