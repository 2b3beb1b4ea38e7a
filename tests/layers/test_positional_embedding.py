import numpy as np
import pytest

from keras_s2s.layers import PositionalEmbedding
from keras_s2s.layers.positional_embedding import sinusoidal_table
from tests.layer_checks import run_layer_checks

TOKENS = np.array([[5, 6, 7, 0], [8, 0, 0, 0]], dtype="int32")


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_layer_checks(positions):
    run_layer_checks(
        PositionalEmbedding,
        dict(vocabulary_size=20, hidden_dim=8, max_length=6, positions=positions),
        TOKENS,
    )


def test_mask_is_tokens_not_zero():
    layer = PositionalEmbedding(20, 8, max_length=6)
    outputs = layer(TOKENS)
    np.testing.assert_array_equal(outputs._keras_mask, TOKENS != 0)


def test_embedding_is_scaled_and_positioned():
    layer = PositionalEmbedding(20, 8, max_length=6)
    outputs = np.asarray(layer(TOKENS))
    expected = (
        np.asarray(layer.embeddings)[TOKENS] * np.sqrt(8) + sinusoidal_table(6, 8)[:4]
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def test_start_index_shifts_positions():
    layer = PositionalEmbedding(20, 8, max_length=6)
    whole = np.asarray(layer(TOKENS))
    third = np.asarray(layer(TOKENS[:, 2:3], start_index=2))
    np.testing.assert_allclose(third[:, 0], whole[:, 2], atol=1e-6)


def test_too_long_input_names_max_length():
    layer = PositionalEmbedding(20, 8, max_length=3)
    with pytest.raises(ValueError, match=r"longer than `max_length`=3 tokens.*received 4"):
        layer(TOKENS)


def test_bad_positions_kind():
    with pytest.raises(ValueError, match=r"`positions` must be one of .*received positions='rotary'"):
        PositionalEmbedding(20, 8, max_length=3, positions="rotary")


@pytest.mark.parametrize("layout", ["interleaved", "halves"])
def test_layer_checks_of_the_options(layout):
    run_layer_checks(
        PositionalEmbedding,
        dict(
            vocabulary_size=20,
            hidden_dim=8,
            max_length=6,
            scale_embeddings=False,
            sinusoidal_layout=layout,
        ),
        TOKENS,
    )


@pytest.mark.parametrize("hidden_dim", [8, 7])
def test_halves_layout_is_sines_then_cosines_of_the_same_frequencies(hidden_dim):
    table = sinusoidal_table(10, hidden_dim, "halves")
    sines = -(-hidden_dim // 2)  # ceil(D/2) sine columns, as Marian for odd D
    for position in range(10):
        for j in range(sines):
            angle = position / 10000 ** (2 * j / hidden_dim)
            assert table[position, j] == pytest.approx(np.sin(angle), abs=1e-6)
            if j < hidden_dim // 2:
                assert table[position, sines + j] == pytest.approx(np.cos(angle), abs=1e-6)
    # The same numbers as the interleaved table, columns permuted; position 0
    # is (0, .., 0, 1, .., 1): no offset.
    interleaved = sinusoidal_table(10, hidden_dim)
    np.testing.assert_array_equal(table[:, :sines], interleaved[:, 0::2])
    np.testing.assert_array_equal(table[:, sines:], interleaved[:, 1::2])
    np.testing.assert_array_equal(table[0], [0.0] * sines + [1.0] * (hidden_dim // 2))


def test_unscaled_embedding_adds_the_raw_vectors():
    layer = PositionalEmbedding(20, 8, max_length=6, scale_embeddings=False, sinusoidal_layout="halves")
    outputs = np.asarray(layer(TOKENS))
    expected = np.asarray(layer.embeddings)[TOKENS] + sinusoidal_table(6, 8, "halves")[:4]
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def test_a_config_without_the_new_options_keeps_the_old_behaviour():
    # .keras files saved before the options existed have no such keys.
    layer = PositionalEmbedding(20, 8, max_length=6)
    layer(TOKENS)
    config = layer.get_config()
    del config["scale_embeddings"], config["sinusoidal_layout"], config["dropout"]
    old = PositionalEmbedding.from_config(config)
    old(TOKENS)
    old.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(old(TOKENS)), np.asarray(layer(TOKENS)))
    np.testing.assert_allclose(
        np.asarray(old(TOKENS)),
        np.asarray(layer.embeddings)[TOKENS] * np.sqrt(8) + sinusoidal_table(6, 8)[:4],
        atol=1e-6,
    )


def test_bad_layout_and_scale_are_named():
    with pytest.raises(ValueError, match=r"`sinusoidal_layout` must be one of .*received sinusoidal_layout='split'"):
        PositionalEmbedding(20, 8, max_length=3, sinusoidal_layout="split")
    with pytest.raises(ValueError, match=r"`scale_embeddings` must be True or False; received scale_embeddings=1.5"):
        PositionalEmbedding(20, 8, max_length=3, scale_embeddings=1.5)
    with pytest.raises(ValueError, match=r"`layout` must be one of"):
        sinusoidal_table(3, 8, "split")


def test_dropout_drops_the_sum_of_tokens_and_positions_in_training_only():
    layer = PositionalEmbedding(20, 64, max_length=6, dropout=0.5)
    kept = np.asarray(layer(TOKENS))  # (B, L, D), no training: nothing dropped
    expected = np.asarray(layer.embeddings)[TOKENS] * 8.0 + sinusoidal_table(6, 64)[:4]
    np.testing.assert_allclose(kept, expected, rtol=1e-6, atol=1e-6)
    dropped = np.asarray(layer(TOKENS, training=True))
    zeroed = dropped == 0
    assert 0.35 < zeroed.mean() < 0.65  # 512 draws at rate 0.5
    # Survivors are scaled by 1 / (1 - rate).
    np.testing.assert_allclose(dropped[~zeroed], 2 * kept[~zeroed], rtol=1e-5, atol=1e-5)


def test_a_bad_dropout_rate_is_named():
    with pytest.raises(ValueError, match=r"`dropout` must be a number in \[0, 1\); received dropout=1.0"):
        PositionalEmbedding(20, 8, max_length=3, dropout=1.0)
