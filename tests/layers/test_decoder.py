import numpy as np
import pytest

from keras_s2s.layers import DecoderLayer
from tests.layer_checks import run_layer_checks
from tests.helpers import with_keras_mask

ARGS = dict(num_heads=2, intermediate_dim=16, dropout=0.0)


@pytest.fixture
def states(rng):
    return (
        rng.normal(size=(2, 4, 8)).astype("float32"),
        rng.normal(size=(2, 6, 8)).astype("float32"),
    )


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_layer_checks(norm_position, states):
    run_layer_checks(DecoderLayer, dict(ARGS, norm_position=norm_position), list(states))


def test_source_padding_changes_nothing(states):
    layer = DecoderLayer(**ARGS)
    x, context = states
    context_mask = np.array([[True] * 3 + [False] * 3, [True] * 6])
    changed = context.copy()
    changed[0, 3:] = 9.0
    a = layer(x, context, context_mask=context_mask)
    b = layer(x, changed, context_mask=context_mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_implicit_masks_equal_explicit(states):
    layer = DecoderLayer(**ARGS)
    x, context = states
    inputs_mask = np.array([[True, True, True, False], [True] * 4])
    context_mask = np.array([[True] * 2 + [False] * 4, [True] * 6])
    implicit = layer(with_keras_mask(x, inputs_mask), with_keras_mask(context, context_mask))
    explicit = layer(x, context, inputs_mask=inputs_mask, context_mask=context_mask)
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), atol=1e-6)
    np.testing.assert_array_equal(implicit._keras_mask, inputs_mask)


def test_cached_steps_equal_full_pass(states):
    layer = DecoderLayer(**ARGS)
    x, context = states
    full = np.asarray(layer(x, context))
    cache = layer.initial_self_attention_cache(2, 4)
    cross = layer.compute_cross_attention_cache(context)
    for i in range(4):
        step, cache = layer(
            x[:, i : i + 1],
            context,
            self_attention_cache=cache,
            cache_index=np.int32(i),
            cross_attention_cache=cross,
        )
        np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, i], atol=1e-5)
