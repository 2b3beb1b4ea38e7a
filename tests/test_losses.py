import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.losses import (
    MaskedCrossEntropy,
    TokenAccuracy,
    masked_accuracy,
    smoothed_cross_entropy,
    token_accuracy,
)
from tests.helpers import logits_sized_buffers, logits_sized_ops, loss_and_metric_step


def _reference(labels, logits, smoothing):
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(-1)
    real = labels != 0
    return per_token[real].mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_mean_of_smoothed_cross_entropy(smoothing, rng):
    logits = rng.normal(size=(3, 4, 7)).astype("float32")
    labels = np.array([[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 6, 1]])
    loss = MaskedCrossEntropy(label_smoothing=smoothing)(labels, logits)
    np.testing.assert_allclose(float(loss), _reference(labels, logits, smoothing), rtol=1e-5)


def test_uses_the_logits_keras_mask_over_labels(rng):
    logits = tf.constant(rng.normal(size=(1, 3, 5)).astype("float32"))
    logits._keras_mask = tf.constant([[True, False, False]])
    labels = np.array([[2, 3, 4]])
    loss = MaskedCrossEntropy()(labels, logits)
    np.testing.assert_allclose(float(loss), _reference(labels[:, :1], np.asarray(logits)[:, :1], 0.0), rtol=1e-5)


def test_global_token_normalisation_under_two_replicas(rng, two_cpu_strategy):
    # Replicas with 1 and 5 real tokens: the result is the mean over all 6
    # tokens, not the mean of the two replica means.
    strategy = two_cpu_strategy
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    labels = np.array([[1, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    loss_fn = MaskedCrossEntropy()

    def replica_fn(labels, logits):
        return loss_fn(labels, logits)

    dataset = tf.data.Dataset.from_tensor_slices((labels, logits)).batch(2)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    per_replica = strategy.run(replica_fn, args=batch)
    total = strategy.reduce("SUM", per_replica, axis=None)
    np.testing.assert_allclose(float(total), _reference(labels, logits, 0.0), rtol=1e-5)


def test_config_round_trip():
    loss = MaskedCrossEntropy(label_smoothing=0.2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert clone.label_smoothing == 0.2


def _textbook_loss(labels, logits, smoothing, sample_weight=None):
    """The formula written out, for TensorFlow's autodiff to differentiate."""
    log_probs = tf.nn.log_softmax(logits)
    nll = -tf.gather(log_probs, labels[..., None], batch_dims=2)[..., 0]
    per_token = (1 - smoothing) * nll - smoothing * tf.reduce_mean(log_probs, -1)
    weights = tf.cast(labels != 0, "float32")
    if sample_weight is not None:
        weights = weights * sample_weight
    return tf.reduce_sum(per_token * weights) / tf.reduce_sum(weights)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_hand_written_gradient_equals_autodiff_of_the_formula(smoothing, weighted, rng):
    logits = tf.constant(3 * rng.normal(size=(3, 4, 11)).astype("float32"))
    labels = tf.constant([[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 10, 1]])
    weights = tf.constant(rng.uniform(0.5, 2.0, size=(3, 4)).astype("float32")) if weighted else None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = MaskedCrossEntropy(label_smoothing=smoothing)(labels, logits, sample_weight=weights)
        textbook = _textbook_loss(labels, logits, smoothing, weights)
    np.testing.assert_allclose(float(ours), float(textbook), rtol=1e-5)
    gradient = tape.gradient(ours, logits).numpy()
    np.testing.assert_allclose(gradient, tape.gradient(textbook, logits).numpy(), atol=1e-7)
    assert not gradient[0, 2:].any()  # padding gets no gradient


def test_gradient_under_xla(rng):
    logits = tf.constant(rng.normal(size=(2, 3, 7)).astype("float32"))
    labels = tf.constant([[1, 2, 0], [3, 6, 5]])

    @tf.function(jit_compile=True)
    def gradient(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = MaskedCrossEntropy(label_smoothing=0.1)(labels, logits)
        return tape.gradient(loss, logits)

    with tf.GradientTape() as tape:
        tape.watch(logits)
        textbook = _textbook_loss(labels, logits, 0.1)
    np.testing.assert_allclose(gradient(logits), tape.gradient(textbook, logits), atol=1e-7)


def test_token_accuracy_is_the_masked_share_of_argmax_hits():
    logits = np.zeros((2, 3, 4), "float32")
    logits[0, 0, 1] = logits[0, 1, 3] = logits[1, 0, 2] = logits[1, 2, 1] = 1.0
    labels = np.array([[1, 2, 0], [2, 3, 1]])  # hits: (0,0), (1,0), (1,2); (0,2) is padding
    logits = tf.constant(logits)
    logits._keras_mask = tf.constant(labels != 0)
    metric = masked_accuracy()
    metric.update_state(labels, logits)
    assert float(metric.result()) == pytest.approx(3 / 5)
    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(clone, TokenAccuracy) and clone.name == "accuracy"


# The ops that may compute a logits-sized tensor in the loss, its gradient and
# the metric: the projection and the gradient's one XLA function (a
# `PartitionedCall`; the forward one returns (N,) tensors only). `Fill`: the
# tape's zeros for an unused gradient, pruned before it runs.
LOGITS_SIZED_OPS = {"MatMul", "PartitionedCall", "Fill"}


def test_the_train_steps_loss_and_metric_hold_two_logits_sized_buffers(rng):
    # docs/traps.md, trap 16: the logits (kept for the metric) and one gradient buffer.
    step = loss_and_metric_step(MaskedCrossEntropy(label_smoothing=0.1), masked_accuracy(), rng)
    ops = logits_sized_ops(step)
    assert set(ops) <= LOGITS_SIZED_OPS and len(ops) <= len(LOGITS_SIZED_OPS), ops
    assert logits_sized_buffers(step) < 2.5


def test_labels_with_a_trailing_axis_are_refused_by_the_loss_and_read_by_the_metric():
    logits = tf.constant(np.eye(3, dtype="float32")[None])  # (1, 3, 3): argmax 0, 1, 2
    labels = np.array([[[1], [1], [2]]])  # (1, 3, 1)
    with pytest.raises(ValueError, match=r"one dimension less than the logits.*\(1, 3, 1\)"):
        MaskedCrossEntropy()(labels, logits)
    np.testing.assert_array_equal(token_accuracy(labels, logits), [[0.0, 1.0, 1.0]])


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "traced"])
@pytest.mark.parametrize("bad_id", [-1, 5])
def test_label_ids_out_of_the_vocabulary_are_refused(bad_id, traced):
    # XLA's gather would clamp them silently; the loss checks the (N,) ids first,
    # also in a traced step that takes the gradient (the checks gate the forward).
    labels = tf.constant([[1, bad_id]])
    logits = tf.Variable(tf.zeros((1, 2, 5)))

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(smoothed_cross_entropy(labels, logits, 0.1))
        return tape.gradient(loss, logits)

    with pytest.raises(tf.errors.InvalidArgumentError, match="label ids must be"):
        (tf.function(step) if traced else step)()


def test_without_smoothing_a_minus_infinity_logit_elsewhere_gives_a_finite_loss():
    # eps = 0 has no uniform term: mean(logits) would be -inf, and 0 * inf NaN.
    logits = tf.constant([[[0.0, 1.0, -np.inf]]])
    loss = smoothed_cross_entropy(tf.constant([[1]]), logits, 0.0)
    np.testing.assert_allclose(loss.numpy(), [[np.log(1 + np.e) - 1.0]], rtol=1e-6)
