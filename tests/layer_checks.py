"""One helper that runs every layer through the same checks.

config round trip, eager and symbolic call, `.keras` save/load with equal
outputs, and one `fit` step that lowers the loss.
"""

import os
import tempfile

import keras
import numpy as np


def _as_list(inputs):
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def run_layer_checks(layer_class, init_kwargs, inputs, call_kwargs=None):
    """Runs the shared checks; returns the eager outputs.

    Args:
        layer_class: the layer to test.
        init_kwargs: constructor arguments.
        inputs: one array or a list of arrays, passed positionally.
        call_kwargs: extra keyword arguments of `call` (non-tensor).
    """
    call_kwargs = call_kwargs or {}
    arrays = _as_list(inputs)

    # Config round trip: every constructor argument comes back unchanged.
    layer = layer_class(**init_kwargs)
    config = layer.get_config()
    for name, value in init_kwargs.items():
        if isinstance(value, keras.layers.Layer):
            continue
        assert config[name] == value, f"get_config()[{name!r}] != {value!r}"
    clone = layer_class.from_config(config)
    assert clone.get_config() == config

    # Eager call.
    eager = layer(*arrays, **call_kwargs)
    eager = eager[0] if isinstance(eager, tuple) else eager

    # Symbolic call inside a functional model.
    symbolic_inputs = [
        keras.Input(shape=array.shape[1:], dtype=str(array.dtype)) for array in arrays
    ]
    symbolic = layer(*symbolic_inputs, **call_kwargs)
    model = keras.Model(symbolic_inputs, symbolic)
    outputs = np.asarray(model(arrays))
    np.testing.assert_allclose(outputs, np.asarray(eager), atol=1e-6)

    # .keras save/load: equal outputs, not merely "it loaded" (KNOWN_TRAPS 6).
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(arrays)), outputs, atol=1e-6)

    # One fit step lowers the loss.
    targets = np.random.default_rng(1).normal(size=outputs.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    before = model.evaluate(arrays, targets, verbose=0)
    model.fit(arrays, targets, epochs=1, batch_size=len(arrays[0]), verbose=0)
    after = model.evaluate(arrays, targets, verbose=0)
    assert after < before, f"one fit step did not lower the loss: {before} -> {after}"
    return outputs
