import numpy as np
import pytest

from keras_s2s.layers import FeedForward, Residual
from tests.layer_checks import run_layer_checks


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_layer_checks(norm_position, rng):
    run_layer_checks(
        Residual,
        dict(sublayer=FeedForward(16), norm_position=norm_position, dropout=0.0),
        rng.normal(size=(2, 3, 8)).astype("float32"),
    )


def test_pre_norm_is_x_plus_sublayer_of_norm(rng):
    x = rng.normal(size=(1, 3, 8)).astype("float32")
    layer = Residual(FeedForward(16), norm_position="pre")
    outputs = np.asarray(layer(x))
    expected = x + np.asarray(layer.sublayer(layer.norm(x)))
    np.testing.assert_allclose(outputs, expected, atol=1e-6)


def test_post_norm_is_norm_of_x_plus_sublayer(rng):
    x = rng.normal(size=(1, 3, 8)).astype("float32")
    layer = Residual(FeedForward(16), norm_position="post")
    outputs = np.asarray(layer(x))
    expected = np.asarray(layer.norm(x + np.asarray(layer.sublayer(x))))
    np.testing.assert_allclose(outputs, expected, atol=1e-6)


def test_bad_norm_position():
    with pytest.raises(ValueError, match=r"`norm_position` must be one of \['pre', 'post'\]; received norm_position='middle'"):
        Residual(FeedForward(4), norm_position="middle")
