import collections
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.data.builtin import generate_pairs
from keras_s2s.data.corpus import CorpusStats
from keras_s2s.data.pipeline import (
    decoder_io,
    default_bucket_boundaries,
    make_dataset,
    padded_decoder_io,
    padding_statistics,
    pairs_dataset,
)
from keras_s2s.data.tokenizers import END_ID, PAD_ID, START_ID, train_tokenizers
from keras_s2s.models import ENCODER_INPUT

MAX_LENGTH = 48
BOUNDARIES = default_bucket_boundaries(MAX_LENGTH)  # 8, 16, .., 48


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(1500, seed=5)


@pytest.fixture(scope="module")
def tokenizers(pairs, tmp_path_factory):
    return train_tokenizers(pairs, tmp_path_factory.mktemp("tokenizers"), vocabulary_size=300)


def reference_ids(pairs, tokenizers):
    """(source ids, target ids) per pair, tokenized directly, no pipeline."""
    source_tokenizer, target_tokenizer = tokenizers
    sources = source_tokenizer.tokenize(tf.constant([s for s, _ in pairs])).to_list()
    targets = target_tokenizer.tokenize(tf.constant([t for _, t in pairs])).to_list()
    return [(tuple(s), tuple(t)) for s, t in zip(sources, targets)]


def fitting(ids, max_length=MAX_LENGTH):
    """The pairs whose source, and target + START/END, fit in `max_length`."""
    return [(s, t) for s, t in ids if len(s) <= max_length and len(t) + 1 <= max_length]


def dataset(pairs, tokenizers, **overrides):
    options = dict(max_length=MAX_LENGTH, batch_tokens=1024, seed=0)
    options.update(overrides)
    return make_dataset(pairs_dataset(pairs), *tokenizers, **options)


def unpack(batches):
    """Every batch as numpy: [(encoder_tokens, decoder_tokens, labels)]."""
    return [
        (inputs["encoder_tokens"].numpy(), inputs["decoder_tokens"].numpy(), labels.numpy())
        for inputs, labels in batches
    ]


def examples(batches):
    """The multiset of (source ids, target ids) in the batches, checking the shift."""
    found = collections.Counter()
    for encoder, decoder, labels in batches:
        for source_row, decoder_row, label_row in zip(encoder, decoder, labels):
            length = int(np.count_nonzero(label_row))
            # Real tokens first, then only padding.
            assert not label_row[length:].any() and not decoder_row[length:].any()
            assert decoder_row[0] == START_ID and label_row[length - 1] == END_ID
            np.testing.assert_array_equal(decoder_row[1:length], label_row[: length - 1])
            source = source_row[source_row != PAD_ID]
            np.testing.assert_array_equal(source_row[: len(source)], source)
            found[tuple(source.tolist()), tuple(label_row[: length - 1].tolist())] += 1
    return found


def test_decoder_io_shifts_by_exactly_one():
    target = tf.ragged.constant([[5, 6, 7], [8], []], dtype=tf.int32)
    decoder_tokens, labels = decoder_io(target)
    assert decoder_tokens.to_list() == [[START_ID, 5, 6, 7], [START_ID, 8], [START_ID]]
    assert labels.to_list() == [[5, 6, 7, END_ID], [8, END_ID], [END_ID]]
    assert decoder_tokens.dtype == labels.dtype == tf.int32


def test_padded_decoder_io_is_dense_int32_padded_with_zero():
    target = tf.ragged.constant([[5, 6, 7], [8]], dtype=tf.int64)
    decoder_tokens, labels = padded_decoder_io(target)
    np.testing.assert_array_equal(decoder_tokens, [[2, 5, 6, 7], [2, 8, 0, 0]])
    np.testing.assert_array_equal(labels, [[5, 6, 7, 3], [8, 3, 0, 0]])
    assert decoder_tokens.dtype == tf.int32
    decoder_tokens, labels = padded_decoder_io(target, length=6)
    np.testing.assert_array_equal(labels, [[5, 6, 7, 3, 0, 0], [8, 3, 0, 0, 0, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="`length` is shorter than"):
        padded_decoder_io(target, length=3)  # would cut the END of row 0


def test_pairs_dataset_from_list_function_and_tsv(pairs, tmp_path):
    expected = [(s.encode(), t.encode()) for s, t in pairs[:10]]

    def as_list(ds):
        return [(s.numpy(), t.numpy()) for s, t in ds]

    assert as_list(pairs_dataset(pairs[:10])) == expected
    assert as_list(pairs_dataset(lambda: iter(pairs[:10]))) == expected
    tsv = tmp_path / "file.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:600]), encoding="utf-8")
    stats = CorpusStats()
    streamed = pairs_dataset(str(tsv), stats=stats)
    # Re-read from disk on each pass: two epochs, twice the pairs.
    assert as_list(streamed.repeat(2)) == [(s.encode(), t.encode()) for s, t in pairs[:600]] * 2
    assert stats.kept == 1200


def test_pairs_dataset_refuses_one_shot_iterators_and_misplaced_options(pairs):
    with pytest.raises(TypeError, match="one-shot iterator .* pass a function returning it"):
        pairs_dataset(pair for pair in pairs)
    with pytest.raises(ValueError, match=re.escape("keyword arguments ['max_words'] are options")):
        pairs_dataset(pairs, max_words=5)
    with pytest.raises(ValueError, match="`corpus` is empty"):
        pairs_dataset([])
    with pytest.raises(ValueError, match="must hold \\(source, target\\) pairs"):
        pairs_dataset(["not a pair"])


def test_every_example_comes_out_exactly_once(pairs, tokenizers):
    ids = reference_ids(pairs, tokenizers)
    assert len(fitting(ids)) > 0.95 * len(ids)
    batches = unpack(dataset(pairs, tokenizers))
    assert examples(batches) == collections.Counter(fitting(ids))


def test_batches_are_padded_to_their_own_bucket_per_side(pairs, tokenizers):
    batches = unpack(dataset(pairs, tokenizers, batch_size_multiple=4))
    sizes = []
    for encoder, decoder, labels in batches:
        source_lengths = np.count_nonzero(encoder, axis=1)
        target_lengths = np.count_nonzero(labels, axis=1)
        assert encoder.shape[1] in BOUNDARIES and decoder.shape == labels.shape
        sides = ((source_lengths, encoder.shape[1]), (target_lengths, labels.shape[1]))
        for lengths, width in sides:
            # Each side is padded to the smallest boundary holding its rows.
            bucket = min(b for b in BOUNDARIES if b >= lengths.max())
            assert width == bucket
            assert all(min(b for b in BOUNDARIES if b >= n) == width for n in lengths)
        # About `batch_tokens` (1024) tokens on the longer side.
        assert encoder.shape[0] * max(encoder.shape[1], decoder.shape[1]) <= 1024
        sizes.append(encoder.shape[0])
    full = [size for size in sizes if size % 4 == 0]
    assert len(full) >= len(sizes) - len(BOUNDARIES) ** 2  # the rest: last of a bucket
    assert encoder.dtype == decoder.dtype == labels.dtype == np.int32


def test_repeating_gives_only_full_batches_of_a_bounded_set_of_shapes(pairs, tokenizers):
    stats = padding_statistics(dataset(pairs, tokenizers, repeat=True), max_batches=300)
    assert stats.batches == 300 and stats.examples > 2 * len(pairs)
    for batch, source_length, target_length in stats.shapes:
        assert source_length in BOUNDARIES and target_length in BOUNDARIES
        expected = 1024 // max(source_length, target_length)
        assert batch == expected - expected % 8
    assert len(stats.shapes) <= len(BOUNDARIES) ** 2


def test_padding_statistics_counts_tokens(pairs, tokenizers):
    stats = padding_statistics(dataset(pairs, tokenizers))
    ids = fitting(reference_ids(pairs, tokenizers))
    assert stats.examples == len(ids)
    # Source pieces, and START + target pieces on the decoder side.
    assert stats.real_tokens == sum(len(s) + len(t) + 1 for s, t in ids)
    assert 0.5 < stats.efficiency < 1.0
    assert stats.batches == sum(stats.shapes.values())
    assert "padding efficiency" in stats.summary()


def test_pairs_longer_than_max_length_are_dropped(pairs, tokenizers):
    ids = reference_ids(pairs, tokenizers)
    kept = fitting(ids, max_length=16)
    assert 0.2 * len(ids) < len(kept) < 0.8 * len(ids)  # the test needs both kinds
    batches = unpack(dataset(pairs, tokenizers, max_length=16, batch_tokens=256))
    assert examples(batches) == collections.Counter(kept)


def test_pairs_longer_than_max_length_can_be_truncated(pairs, tokenizers):
    ids = reference_ids(pairs, tokenizers)
    max_length = 16
    batches = unpack(
        dataset(pairs, tokenizers, max_length=max_length, batch_tokens=256, drop_too_long=False)
    )
    truncated = [(s[:max_length], t[: max_length - 1]) for s, t in ids]
    assert examples(batches) == collections.Counter(truncated)
    assert max(max(e.shape[1], d.shape[1]) for e, d, _ in batches) == max_length


def test_same_seed_same_batches_other_seed_other_order(pairs, tokenizers):
    first = unpack(dataset(pairs, tokenizers, seed=3))
    again = unpack(dataset(pairs, tokenizers, seed=3))
    other = unpack(dataset(pairs, tokenizers, seed=4))
    assert len(first) == len(again)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert any(a[0].shape != b[0].shape or (a[0] != b[0]).any() for a, b in zip(first, other))


def test_without_shuffle_the_order_is_fixed(pairs, tokenizers):
    first = unpack(dataset(pairs, tokenizers, shuffle=False, seed=None))
    again = unpack(dataset(pairs, tokenizers, shuffle=False, seed=None))
    assert all((a[0] == b[0]).all() for a, b in zip(first, again))


def test_default_bucket_boundaries():
    assert default_bucket_boundaries(48) == [8, 16, 24, 32, 40, 48]
    assert default_bucket_boundaries(50) == [8, 16, 24, 32, 40, 48, 50]
    assert default_bucket_boundaries(5) == [5]


@pytest.mark.parametrize("boundaries", [[8, 16], [8, 8, 48], [16, 8, 48], [0, 48], [8, 64]])
def test_bucket_boundaries_are_validated(pairs, tokenizers, boundaries):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`bucket_boundaries` must be increasing positive integers ending at `max_length`"
        ),
    ):
        dataset(pairs, tokenizers, bucket_boundaries=boundaries)


def test_batch_tokens_must_hold_a_minimal_batch(pairs, tokenizers):
    with pytest.raises(
        ValueError,
        match=re.escape("`batch_tokens`=100 cannot hold `batch_size_multiple`=8 sequences"),
    ):
        dataset(pairs, tokenizers, batch_tokens=100)


def test_batches_fit_the_transformer(pairs, tokenizers):
    # The dataset's structure is exactly what `build_transformer` consumes.
    import keras

    from keras_s2s import ModelConfig, build_transformer

    source_tokenizer, target_tokenizer = tokenizers
    model = build_transformer(
        ModelConfig(
            source_vocabulary_size=source_tokenizer.vocabulary_size,
            target_vocabulary_size=target_tokenizer.vocabulary_size,
            hidden_dim=16,
            num_heads=2,
            intermediate_dim=32,
            num_encoder_layers=1,
            num_decoder_layers=1,
            max_length=MAX_LENGTH,
        )
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        dataset(pairs, tokenizers, repeat=True), steps_per_epoch=2, shuffle=False, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def test_padding_sides_together_gives_one_shape_per_bucket(pairs, tokenizers):
    stats = padding_statistics(
        dataset(pairs, tokenizers, pad_sides_together=True, repeat=True), max_batches=100
    )
    assert all(source == target for _, source, target in stats.shapes)
    assert len(stats.shapes) <= len(BOUNDARIES)
    batches = unpack(dataset(pairs, tokenizers, pad_sides_together=True))
    assert examples(batches) == collections.Counter(fitting(reference_ids(pairs, tokenizers)))


def test_cached_dataset_gives_the_same_batches_as_uncached(pairs, tokenizers):
    # cache=True tokenizes once per run; the batches (and their order, for
    # one seed) must not change, on the first pass and on later ones.
    def batches(cache):
        dataset = make_dataset(
            pairs_dataset(pairs), *tokenizers, max_length=32, batch_tokens=256,
            seed=3, repeat=True, cache=cache,
        )
        return [
            (x[ENCODER_INPUT].numpy().tolist(), y.numpy().tolist())
            for x, y in dataset.take(3 * len(pairs) // 8)
        ]

    assert batches(cache=True) == batches(cache=False)
