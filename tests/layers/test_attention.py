import numpy as np
import pytest

from keras_s2s.layers import CausalSelfAttention, CrossAttention, GlobalSelfAttention
from tests.helpers import with_keras_mask

B, T, S, D = 2, 4, 5, 8
ARGS = dict(num_heads=2, key_dim=4)


@pytest.fixture
def states(rng):
    query = rng.normal(size=(B, T, D)).astype("float32")
    context = rng.normal(size=(B, S, D)).astype("float32")
    return query, context


def test_global_self_attention_checks(states):
    from tests.layer_checks import run_layer_checks

    run_layer_checks(GlobalSelfAttention, ARGS, states[0])


def test_causal_self_attention_checks(states):
    from tests.layer_checks import run_layer_checks

    run_layer_checks(CausalSelfAttention, ARGS, states[0])


def test_cross_attention_checks(states):
    from tests.layer_checks import run_layer_checks

    run_layer_checks(CrossAttention, ARGS, list(states))


def test_global_self_attention_ignores_padded_keys(states):
    layer = GlobalSelfAttention(**ARGS)
    query = states[0]
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    changed = query.copy()
    changed[0, 2:] = 100.0  # garbage at padded positions
    a = np.asarray(layer(query, mask=mask))
    b = np.asarray(layer(changed, mask=mask))
    np.testing.assert_allclose(a[0, :2], b[0, :2], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_causal_self_attention_ignores_future(states):
    layer = CausalSelfAttention(**ARGS)
    query = states[0]
    changed = query.copy()
    changed[:, 2:] += 1.0
    a, b = np.asarray(layer(query)), np.asarray(layer(changed))
    np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert np.abs(a[:, 2:] - b[:, 2:]).max() > 1e-3


def test_cross_attention_masks_source_keys_when_s_differs_from_t(states):
    # KNOWN_TRAPS 4: the source mask goes on the key axis, (B, T, S) with S != T.
    layer = CrossAttention(**ARGS)
    query, context = states
    context_mask = np.array([[True, True, True, False, False], [True] * S])
    changed = context.copy()
    changed[0, 3:] = -50.0
    a = np.asarray(layer(query, context, context_mask=context_mask))
    b = np.asarray(layer(query, changed, context_mask=context_mask))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("layer_class", [GlobalSelfAttention, CausalSelfAttention])
def test_self_attention_implicit_mask_equals_explicit(layer_class, states):
    layer = layer_class(**ARGS)
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    implicit = layer(with_keras_mask(states[0], mask))
    explicit = layer(states[0], mask=mask)
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, mask)


def test_cross_attention_implicit_masks_equal_explicit(states):
    # KNOWN_TRAPS 2: with two tensor arguments Keras fills `<arg>_mask`.
    layer = CrossAttention(**ARGS)
    query_mask = np.array([[True, True, True, False], [True] * T])
    context_mask = np.array([[True, True, False, False, False], [True] * S])
    implicit = layer(
        with_keras_mask(states[0], query_mask), with_keras_mask(states[1], context_mask)
    )
    explicit = layer(states[0], states[1], query_mask=query_mask, context_mask=context_mask)
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, query_mask)


def test_layers_leave_input_masks_in_place(states):
    # KNOWN_TRAPS 1: keras MultiHeadAttention clears these; ours must not.
    context_mask = np.array([[True, True, False, False, False], [True] * S])
    context = with_keras_mask(states[1], context_mask)
    CrossAttention(**ARGS)(states[0], context)
    assert context._keras_mask is not None
    np.testing.assert_array_equal(context._keras_mask, context_mask)


def test_cached_steps_equal_full_causal_attention(states):
    layer = CausalSelfAttention(**ARGS)
    query = states[0]
    full = np.asarray(layer(query))
    cache = layer.initial_cache(B, T + 2)
    for i in range(T):
        step, cache = layer(query[:, i : i + 1], cache=cache, cache_index=i)
        np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, i], atol=1e-5)


def test_decoding_caches_are_heads_major(states):
    # (B, H, L, Dh): a decoding step reads the caches without transposing them.
    query, context = states
    keys, values = CausalSelfAttention(**ARGS).initial_cache(B, T + 2)
    assert tuple(keys.shape) == tuple(values.shape) == (B, 2, T + 2, 4)
    layer = CrossAttention(**ARGS)
    layer(query, context)
    keys, values = layer.compute_cache(context)
    assert tuple(keys.shape) == tuple(values.shape) == (B, 2, S, 4)


def test_cached_cross_attention_equals_uncached_also_for_grouped_rows(states):
    # Beam search feeds G rows per sentence against one heads-major cache.
    query, context = states
    context_mask = np.array([[True, True, True, False, False], [True] * S])
    layer = CrossAttention(**ARGS)
    full = np.asarray(layer(query, context, context_mask=context_mask))  # (B, T, D)
    cache = layer.compute_cache(context)
    grouped = np.repeat(np.asarray(query)[:, :1], 3, axis=0)  # (B*3, 1, D), rows b*3 + g
    step = np.asarray(layer(grouped, context, context_mask=context_mask, cache=cache))
    np.testing.assert_allclose(step[:, 0], np.repeat(full[:, 0], 3, axis=0), atol=1e-5)
    # Padded source keys are masked in the cached path too.
    changed = np.asarray(context).copy()
    changed[0, 3:] += 100.0
    step_changed = np.asarray(layer(grouped, changed, context_mask=context_mask,
                                    cache=layer.compute_cache(changed)))
    np.testing.assert_allclose(step_changed, step, atol=1e-5)


def test_cached_steps_ignore_stale_values_in_later_cache_slots(states):
    # The causal mask with an offset hides cache slots not yet written.
    layer = CausalSelfAttention(**ARGS)
    query = states[0]
    full = np.asarray(layer(query))
    rng = np.random.default_rng(3)
    keys, values = layer.initial_cache(B, T + 2)
    cache = (rng.normal(size=keys.shape).astype("float32") * 50,
             rng.normal(size=values.shape).astype("float32") * 50)
    for i in range(T):
        step, cache = layer(query[:, i : i + 1], cache=cache, cache_index=i)
        np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, i], atol=1e-4)


def test_cache_without_index_is_an_error(states):
    layer = CausalSelfAttention(**ARGS)
    with pytest.raises(ValueError, match="`cache_index` is required"):
        layer(states[0][:, :1], cache=layer.initial_cache(B, 3))


@pytest.mark.parametrize("name,value", [("num_heads", 0), ("key_dim", 2.5)])
def test_bad_arguments_are_named(name, value):
    args = dict(ARGS, **{name: value})
    with pytest.raises(ValueError, match=rf"`{name}` must be a positive integer; received {name}={value}"):
        GlobalSelfAttention(**args)


def test_cross_attention_weights_are_distributions_over_real_keys(states):
    layer = CrossAttention(**ARGS)
    query, context = states
    context_mask = np.array([[True, True, True, False, False], [True] * S])
    weights = np.asarray(layer.attention_weights(query, context, context_mask))
    assert weights.shape == (B, 2, T, S)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[0, :, :, 3:] == 0)
    # Consistent with the output: weights @ values, projected, is the layer output.
    _, values = layer.compute_cache(context)  # (B, H, S, Dh)
    attended = np.einsum("bhts,bhsk->bthk", weights, np.asarray(values))
    kernel, bias = (np.asarray(w) for w in layer.output_projection)
    expected = np.einsum("bthk,hkd->btd", attended, kernel) + bias
    np.testing.assert_allclose(
        expected, np.asarray(layer(query, context, context_mask=context_mask)), atol=1e-5
    )
