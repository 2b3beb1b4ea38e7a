"""One helper that runs every layer through the same checks.

config round trip, eager and symbolic call, `.keras` save/load with equal
outputs, one `fit` step that lowers the loss, and all of it again under the
`mixed_bfloat16` policy (float32 variables, bfloat16 compute).
"""

import os
import tempfile

import keras
import numpy as np


MIXED = "mixed_bfloat16"
# bfloat16 keeps 8 bits of mantissa (relative error 2**-8 per rounding); a
# layer's few roundings stay within a few percent of the float32 outputs.
MIXED_TOLERANCE = dict(rtol=0.05, atol=0.05)


def _as_list(inputs):
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _functional(layer, arrays, call_kwargs):
    """`layer` inside a functional model taking `arrays`' shapes and dtypes."""
    symbolic_inputs = [
        keras.Input(shape=array.shape[1:], dtype=str(array.dtype)) for array in arrays
    ]
    return keras.Model(symbolic_inputs, layer(*symbolic_inputs, **call_kwargs))


def _fit_step_lowers_the_loss(model, arrays, outputs):
    targets = np.random.default_rng(1).normal(size=outputs.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    before = model.evaluate(arrays, targets, verbose=0)
    model.fit(arrays, targets, epochs=1, batch_size=len(arrays[0]), verbose=0)
    after = model.evaluate(arrays, targets, verbose=0)
    assert after < before, f"one fit step did not lower the loss: {before} -> {after}"


def _with_policy(value, policy):
    """A layer argument rebuilt under `policy` (sublayers passed in); others as they are."""
    if not isinstance(value, keras.layers.Layer):
        return value
    return type(value).from_config(dict(value.get_config(), dtype=policy))


def _policies(layer):
    """{path: policy name} of `layer` and every layer inside it."""
    return {sub.path: sub.dtype_policy.name for sub in layer._flatten_layers()}


def _check_mixed_precision(layer_class, init_kwargs, arrays, call_kwargs, reference,
                           expected_policy=MIXED):
    """The layer under `mixed_bfloat16`, with the weights of the float32 `reference`.

    Every sublayer must carry the policy and keep it through a `.keras` reload
    while the global policy is float32 (a sublayer created without its parent's
    policy takes the global one on load, and the reloaded model then mixes
    bfloat16 and float32); variables stay float32; outputs stay close to the
    float32 ones; a fit step still lowers the loss. `expected_policy` is the
    policy the layer and its sublayers must end up with: MIXED, or "float32"
    for a layer that is float32 by design under every policy.
    """
    kwargs = {name: _with_policy(value, MIXED) for name, value in init_kwargs.items()}
    layer = layer_class(**kwargs, dtype=MIXED)
    layer(*arrays, **call_kwargs)  # builds every sublayer, as the reference was
    layer.set_weights(reference.get_weights())
    model = _functional(layer, arrays, call_kwargs)
    policies = _policies(layer)
    assert set(policies.values()) == {expected_policy}, (
        f"sublayers without the parent's policy: {policies}"
    )
    variable_dtypes = {v.path: v.dtype for v in layer.weights}
    assert set(variable_dtypes.values()) <= {"float32"}, variable_dtypes

    outputs = np.asarray(model(arrays)).astype("float32")
    assert np.isfinite(outputs).all()
    expected = np.asarray(reference(*arrays, **call_kwargs))
    expected = expected[0] if isinstance(expected, tuple) else expected
    np.testing.assert_allclose(outputs, np.asarray(expected), **MIXED_TOLERANCE)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)  # global policy: float32
    assert set(_policies(reloaded.layers[-1]).values()) == {expected_policy}
    np.testing.assert_allclose(np.asarray(reloaded(arrays)).astype("float32"), outputs, atol=1e-6)

    _fit_step_lowers_the_loss(model, arrays, outputs)


def run_layer_checks(layer_class, init_kwargs, inputs, call_kwargs=None, mixed_policy=MIXED):
    """Runs the shared checks; returns the eager outputs.

    Args:
        layer_class: the layer to test.
        init_kwargs: constructor arguments.
        inputs: one array or a list of arrays, passed positionally.
        call_kwargs: extra keyword arguments of `call` (non-tensor).
        mixed_policy: the policy the layer keeps when built under
            `mixed_bfloat16`; "float32" for a layer that is float32 by design.
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
    model = _functional(layer, arrays, call_kwargs)
    outputs = np.asarray(model(arrays))
    np.testing.assert_allclose(outputs, np.asarray(eager), atol=1e-6)

    # .keras save/load: equal outputs, not merely "it loaded" (KNOWN_TRAPS 6).
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(arrays)), outputs, atol=1e-6)

    # The same layer under mixed_bfloat16, before the fit step moves the weights.
    _check_mixed_precision(layer_class, init_kwargs, arrays, call_kwargs, layer, mixed_policy)

    _fit_step_lowers_the_loss(model, arrays, outputs)
    return outputs
