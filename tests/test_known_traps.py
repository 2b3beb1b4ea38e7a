"""Canaries for ../shared/KNOWN_TRAPS.md.

Each test either proves our code avoids a trap, or proves that the check our
suite relies on really catches the trap on a model that falls into it. The
export, XLA and distribution traps (7-11) are covered next to that code.
"""

import ast
import configparser
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT, batch, make_model


def source_padding_drift(model, inputs):
    """Largest logit change at real target positions caused by extra source padding."""
    padded = dict(inputs, encoder_tokens=np.pad(inputs["encoder_tokens"], ((0, 0), (0, 7))))
    real = inputs["decoder_tokens"] != 0
    return np.abs(np.asarray(model(padded))[real] - np.asarray(model(inputs))[real]).max()


def tutorial_style_model(num_decoder_layers):
    """The public-example design: keras MultiHeadAttention fed a shared encoder output,
    relying on its implicit `_keras_mask`."""
    encoder_tokens = keras.Input((None,), dtype="int32", name="encoder_tokens")
    decoder_tokens = keras.Input((None,), dtype="int32", name="decoder_tokens")
    context = keras.layers.Embedding(40, 16, mask_zero=True)(encoder_tokens)
    x = keras.layers.Embedding(50, 16, mask_zero=True)(decoder_tokens)
    for _ in range(num_decoder_layers):
        x = x + keras.layers.MultiHeadAttention(2, 8)(query=x, value=context, key=context)
    logits = keras.layers.Dense(50)(x)
    return keras.Model({"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}, logits)


def test_trap1_multi_head_attention_clears_shared_mask():
    # If Keras ever stops clearing masks in place, this canary says so.
    context = tf.ones((1, 3, 4))
    context._keras_mask = tf.constant([[True, True, False]])
    keras.layers.MultiHeadAttention(1, 4)(tf.ones((1, 2, 4)), context)
    assert getattr(context, "_keras_mask", None) is None


def test_trap1_our_invariance_check_catches_the_tutorial_design(rng):
    inputs = batch(rng)
    # The first layer still sees the mask; from the second on, it is gone.
    assert source_padding_drift(tutorial_style_model(1), inputs) < 1e-5
    assert source_padding_drift(tutorial_style_model(3), inputs) > 1e-3


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_trap1_our_model_passes_the_check(depth, rng):
    assert source_padding_drift(make_model(depth), batch(rng)) < 1e-5


def test_trap2_keras_fills_argname_mask_with_two_tensor_arguments():
    seen = {}

    class Probe(keras.layers.Layer):
        def call(self, x, context, mask=None, context_mask=None):
            seen["mask"], seen["context_mask"] = mask, context_mask
            return x

    context = tf.ones((1, 3, 4))
    context._keras_mask = tf.constant([[True, False, False]])
    x = tf.ones((1, 2, 4))
    x._keras_mask = tf.constant([[True, True]])
    Probe()(x, context)
    assert seen["mask"] is None  # the silent trap
    assert seen["context_mask"] is not None


def _imported_top_modules(folder):
    """Top-level module names imported by any .py file under `folder`."""
    names = set()
    for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
        for name in (f for f in files if f.endswith(".py")):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names


def _setup_requirements():
    """install_requires and each extra of setup.cfg, as lists of package names."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO_ROOT, "setup.cfg"))

    def names(text):
        lines = [line.strip() for line in text.splitlines()]
        return [re.split(r"[<>=!~\[ ]", line)[0] for line in lines if line and not line.startswith("#")]

    extras = {key: names(value) for key, value in parser["options.extras_require"].items()}
    return names(parser["options"]["install_requires"]), extras


def test_trap12_keras_hub_is_only_the_bench_extra():
    install_requires, extras = _setup_requirements()
    runtime_imports = _imported_top_modules("keras_s2s") | _imported_top_modules("training")
    assert not {"keras_hub", "keras_nlp"} & runtime_imports
    assert not {"keras-hub", "keras-nlp", "keras_hub", "keras_nlp"} & set(install_requires)
    assert "keras-hub" in extras["bench"]  # the benchmark's peer A, under its current name
    assert "keras_nlp" not in _imported_top_modules("bench")
