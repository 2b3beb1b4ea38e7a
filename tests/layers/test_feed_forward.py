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


def test_silu_activation_is_x_sigmoid_x(rng):
    # Marian's "swish": x * sigmoid(x) between the two dense layers.
    layer = FeedForward(16, activation="silu")
    x = rng.normal(size=(1, 3, 8)).astype("float32")
    outputs = np.asarray(layer(x))
    w1, b1, w2, b2 = (np.asarray(w, "float64") for w in layer.get_weights())
    hidden = x @ w1 + b1
    expected = (hidden / (1.0 + np.exp(-hidden))) @ w2 + b2
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
