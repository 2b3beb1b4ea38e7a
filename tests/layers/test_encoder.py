import numpy as np
import pytest

from keras_s2s.layers import EncoderLayer
from tests.layer_checks import run_layer_checks
from tests.helpers import with_keras_mask

ARGS = dict(num_heads=2, intermediate_dim=16, dropout=0.0)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_layer_checks(norm_position, rng):
    run_layer_checks(
        EncoderLayer,
        dict(ARGS, norm_position=norm_position),
        rng.normal(size=(2, 3, 8)).astype("float32"),
    )


def test_padded_positions_change_nothing_real(rng):
    layer = EncoderLayer(**ARGS)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    mask = np.array([[True, True, True, False, False]])
    changed = x.copy()
    changed[:, 3:] = 7.0
    a, b = layer(x, mask=mask), layer(changed, mask=mask)
    np.testing.assert_allclose(np.asarray(a)[:, :3], np.asarray(b)[:, :3], atol=1e-5)


def test_implicit_mask_equals_explicit(rng):
    layer = EncoderLayer(**ARGS)
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    mask = np.array([[True, True, False, False], [True] * 4])
    implicit = layer(with_keras_mask(x, mask))
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(layer(x, mask=mask)), atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, mask)


def test_heads_must_divide_width(rng):
    with pytest.raises(ValueError, match=r"`num_heads` must divide the hidden size; received hidden_dim=8, num_heads=3"):
        EncoderLayer(num_heads=3, intermediate_dim=8)(np.zeros((1, 2, 8), "float32"))
