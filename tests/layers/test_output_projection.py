import keras
import numpy as np

from keras_s2s.layers import OutputProjection
from tests.layer_checks import run_layer_checks


def test_layer_checks(rng):
    run_layer_checks(OutputProjection, dict(units=7), rng.normal(size=(2, 3, 8)).astype("float32"))


def test_bfloat16_matmul_float32_logits_and_mask(rng):
    layer = OutputProjection(7, dtype="mixed_bfloat16")
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    logits = layer(x)
    assert logits.dtype == "float32" and layer.compute_dtype == "bfloat16"
    kernel, bias = (np.asarray(w) for w in layer.weights)
    exact = x.astype("float64") @ kernel + bias
    # Rounded like a bfloat16 matmul (a float32 one would agree to ~1e-6).
    assert np.abs(np.asarray(logits) - exact).max() > 1e-4
    np.testing.assert_allclose(np.asarray(logits), exact, rtol=0.05, atol=0.05)
    # Symbolic output spec matches the eager dtype; the mask passes through.
    inputs = keras.Input((None, 8))
    assert layer(inputs).dtype == "float32"
    masked = keras.layers.Masking()(inputs)
    model = keras.Model(inputs, layer(masked))
    x[1, 2] = 0.0
    assert np.asarray(model(x)._keras_mask).tolist() == [[True] * 3, [True, True, False]]
