import keras
import numpy as np
import pytest

from keras_s2s.layers import LogitsBias
from tests.layer_checks import run_layer_checks


def test_layer_checks(rng):
    # float32 by design under every policy (the logits feed the softmax and the search).
    run_layer_checks(LogitsBias, dict(vocabulary_size=7), rng.normal(size=(2, 3, 7)).astype("float32"),
                     mixed_policy="float32")


def test_adds_one_bias_per_vocabulary_entry_and_keeps_the_mask(rng):
    layer = LogitsBias(7)
    x = rng.normal(size=(2, 3, 7)).astype("float32")
    layer.build(x.shape)
    bias = rng.normal(size=7).astype("float32")
    layer.bias.assign(bias)
    np.testing.assert_array_equal(np.asarray(layer(x)), x + bias)
    inputs = keras.Input((None, 7))
    masked = keras.layers.Masking()(inputs)
    model = keras.Model(inputs, layer(masked))
    x[1, 2] = 0.0
    assert np.asarray(model(x)._keras_mask).tolist() == [[True] * 3, [True, True, False]]


def test_float32_under_a_mixed_policy(rng):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        layer = LogitsBias(7)
        x = rng.normal(size=(1, 2, 7)).astype("float32")
        assert layer(x).dtype == "float32" and layer.compute_dtype == "float32"
        assert layer(keras.Input((None, 7))).dtype == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`vocabulary_size` must be a positive integer; received vocabulary_size=0"):
        LogitsBias(0)
    with pytest.raises(ValueError, match=r"last axis must be `vocabulary_size`=7; received shape \(1, 2, 5\)"):
        LogitsBias(7)(np.zeros((1, 2, 5), "float32"))
