import numpy as np

from keras_s2s.layers import FeedForward
from tests.layer_checks import run_layer_checks


def test_layer_checks(rng):
    run_layer_checks(
        FeedForward,
        dict(intermediate_dim=16, activation="gelu"),
        rng.normal(size=(2, 3, 8)).astype("float32"),
    )


def test_is_position_wise(rng):
    layer = FeedForward(16)
    x = rng.normal(size=(1, 3, 8)).astype("float32")
    whole = np.asarray(layer(x))
    np.testing.assert_allclose(np.asarray(layer(x[:, 1:2]))[:, 0], whole[:, 1], atol=1e-6)
