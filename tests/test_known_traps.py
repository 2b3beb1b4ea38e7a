"""Canaries for ../shared/KNOWN_TRAPS.md.

Each test either proves our code avoids a trap, or proves that the check our
suite relies on really catches the trap on a model that falls into it. The
export, XLA and distribution traps (7-11) are covered next to that code;
trap 14 (clipping per replica) is here and in tests/training/test_update.py.
"""

import ast
import configparser
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.losses import MaskedCrossEntropy
from keras_s2s.training.compat import keras_clips_per_replica
from keras_s2s.training.update import AggregatedUpdate
from tests.helpers import (
    REPO_ROOT,
    batch,
    logits_sized_buffers,
    logits_sized_ops,
    loss_and_metric_step,
    make_model,
    make_tied_model,
)


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


def _clipped_update_norm(strategy, optimizer_class):
    """Norm of one SGD step (learning rate 1, global_clipnorm 0.01) of a linear model."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer_class(learning_rate=1.0, global_clipnorm=0.01), loss="mse")
    before = model.get_weights()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(model.get_weights(), before)))


class OurSGD(AggregatedUpdate, keras.optimizers.SGD):
    pass


def test_trap14_keras_clips_each_replica_before_the_all_reduce(two_cpu_strategy):
    # Canary: when this fails, Keras clips the aggregated gradient itself and
    # CLIPS_PER_REPLICA_KERAS_VERSIONS in keras_s2s/training/compat.py can stop
    # at the last version that did not (the fix in update.py then retires).
    default = tf.distribute.get_strategy()
    np.testing.assert_allclose(_clipped_update_norm(default, keras.optimizers.SGD), 0.01, rtol=1e-4)
    assert _clipped_update_norm(two_cpu_strategy, keras.optimizers.SGD) > 0.012
    assert keras_clips_per_replica()


def test_trap14_our_update_clips_the_aggregated_gradient(two_cpu_strategy):
    for strategy in (tf.distribute.get_strategy(), two_cpu_strategy):
        np.testing.assert_allclose(_clipped_update_norm(strategy, OurSGD), 0.01, rtol=1e-4)


def test_trap14_fix_is_version_gated(monkeypatch):
    from keras_s2s.training import compat

    monkeypatch.setattr(compat.keras, "__version__", "3.15.1")
    assert compat.keras_clips_per_replica()
    monkeypatch.setattr(compat.keras, "__version__", "3.99.0")
    assert not compat.keras_clips_per_replica()


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


# --------------------------------------------------------------------------
# Trap 15: a weight broadcast over the batch in a matmul (memory per batch shape).
# --------------------------------------------------------------------------

TOKENS_SPEC = tf.TensorSpec((None, None), tf.int32)  # (B, T), any batch shape


def _gradient_graph(forward, weights):
    """The graph of `forward`'s loss and its gradients, for token batches of any shape."""

    @tf.function
    def gradients(encoder_tokens, decoder_tokens, labels):
        with tf.GradientTape() as tape:
            loss = forward(encoder_tokens, decoder_tokens, labels)
        return tape.gradient(loss, weights)

    return gradients.get_concrete_function(TOKENS_SPEC, TOKENS_SPEC, TOKENS_SPEC).graph


def broadcast_matmuls(graph):
    """Batched matmuls whose operands differ in rank: one broadcast over the other's batch."""
    return [
        op.name for op in graph.get_operations()
        if op.type.startswith("BatchMatMul") and len({x.shape.rank for x in op.inputs}) > 1
    ]


def per_sequence_products(graph, rows, columns):
    """Ops whose output is one (rows, columns) matrix per sequence: shape (None, rows, columns)."""
    return [
        op.name for op in graph.get_operations()
        for output in op.outputs
        if output.shape.rank == 3 and output.shape[1:] == (rows, columns)
    ]


def test_trap15_a_broadcast_weight_matmul_has_a_per_sequence_gradient():
    # The tied output projection as it was written before (Keras's einsum on
    # TensorFlow lowers "bld,vd->blv" to a broadcasting BatchMatMulV2): its
    # gradient for the (V, D) table is first (B, D, V), one product per
    # sequence, then summed; 940 MiB at B=240 for the Multi30k recipe.
    vocabulary, hidden = 50, 16
    table = keras.Variable(np.ones((vocabulary, hidden), "float32"))

    def forward(encoder_tokens, decoder_tokens, labels):
        states = tf.gather(table, decoder_tokens)  # (B, T, D)
        logits = keras.ops.einsum("bld,vd->blv", states, table)  # (B, T, V)
        return MaskedCrossEntropy()(labels, logits)

    graph = _gradient_graph(forward, [table])
    assert broadcast_matmuls(graph)
    assert per_sequence_products(graph, hidden, vocabulary)


@pytest.mark.parametrize("tie", ["none", "target", "all"])
def test_trap15_no_weight_is_broadcast_over_the_batch_in_our_training_step(tie):
    model = make_model() if tie == "none" else make_tied_model(tie)
    loss = MaskedCrossEntropy(label_smoothing=0.1)

    def forward(encoder_tokens, decoder_tokens, labels):
        inputs = {"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}
        return loss(labels, model(inputs, training=True))

    graph = _gradient_graph(forward, model.trainable_weights)
    assert broadcast_matmuls(graph) == []
    hidden, vocabulary = 16, 50
    assert per_sequence_products(graph, hidden, vocabulary) == []
    assert per_sequence_products(graph, vocabulary, hidden) == []


def test_trap16_autodiff_of_the_smoothed_loss_and_keras_accuracy_hold_more_logits_sized_buffers(rng):
    # The loss as it was written before (TensorFlow's autodiff of the fused
    # op, logsumexp and the mean) and Keras's accuracy metric (its argmax
    # replaces -0.0 first): about 4.5 logits-sized buffers at once, against
    # the 2 of tests/test_losses.py::test_the_train_steps_loss_and_metric_hold_two_logits_sized_buffers.
    def autodiff_loss(labels, logits):
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        uniform = tf.reduce_logsumexp(logits, -1) - tf.reduce_mean(logits, -1)
        return tf.reduce_mean(0.9 * nll + 0.1 * uniform)

    step = loss_and_metric_step(autodiff_loss, keras.metrics.SparseCategoricalAccuracy(), rng)
    # logsumexp's exponentials, the broadcast gradients, Keras's -0.0 fix.
    assert {"Exp", "Tile", "SelectV2", "BitwiseAnd"} <= set(logits_sized_ops(step))
    assert logits_sized_buffers(step) > 3.5
