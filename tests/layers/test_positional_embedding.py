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
