"""Label-smoothed cross-entropy averaged over the real target tokens of the *global* batch.

Keras averages each replica's loss and then the replicas' averages, which
weights a token on a replica holding few real tokens more than one on a
replica holding many. With token-budget batches that differ in padding
per replica, that is a different objective from the single-device one.
Here each replica divides its token sum by the global token count
(all-reduced), so any strategy computes the same loss and gradients as one
device on the whole batch.

The loss also records that count in `batch_tokens` when the optimizer is
connected (`compile_model` does it): gradient accumulation weights each
batch by its tokens (keras_s2s/training/update.py).

Shape legend: B batch, T target length, V target vocabulary.
"""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="keras_s2s")
class MaskedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy from logits, label-smoothed, over real tokens only.

    The mask is the Keras mask the model's logits carry (`decoder_tokens != 0`)
    and, without one, `labels != 0`. It is applied once, here
    (KNOWN_TRAPS 3).

    Args:
        label_smoothing: epsilon; the target distribution puts `1 - epsilon`
            on the label and spreads `epsilon` uniformly over the vocabulary.
    """

    def __init__(self, label_smoothing=0.0, name="masked_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        # The optimizer's `BatchTokens` (update.py); not part of the config.
        self.batch_tokens = None

    def call(self, labels, logits):
        """Per-token loss (B, T)."""
        return smoothed_cross_entropy(labels, ops.cast(logits, "float32"), self.label_smoothing)

    def __call__(self, labels, logits, sample_weight=None):
        mask = getattr(logits, "_keras_mask", None)
        if mask is None:
            mask = ops.not_equal(labels, 0)
        weights = ops.cast(mask, "float32")  # (B, T)
        if sample_weight is not None:
            weights = weights * ops.cast(sample_weight, "float32")
        token_sum = ops.sum(self.call(labels, logits) * weights)
        token_count = _global_sum(ops.sum(weights))
        if self.batch_tokens is not None:
            self.batch_tokens.record(token_count)
        return token_sum / ops.maximum(token_count, 1.0)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


def smoothed_cross_entropy(labels, logits, label_smoothing):
    """Label-smoothed cross-entropy per token; forward and gradient each one XLA fusion.

    TensorFlow's autodiff of the formula holds several float32 tensors of
    the logits' size at once (logsumexp's exponentials, the broadcast
    gradients of the mean and of the sum): 131 MB each at 4096 tokens and
    V=8000, the largest tensors of a small model's step, and the allocator's
    pool keeps its high-water mark for the whole run (docs/traps.md, trap
    16). Here the forward pass keeps only the (N,) log-sum-exp, and the
    backward pass writes the gradient of the smoothed loss,
    `(softmax - (1 - eps) onehot - eps / V) * upstream`, in one pass over
    the logits: the logits and that gradient are the only (N, V) tensors.

    Both passes are small functions compiled with XLA whatever the rest of
    the step runs under, so each is one fused loop over the logits instead
    of TensorFlow's separate kernels (the fused softmax cross-entropy, the
    mean, the gradient's scaling, shift and scatter, about 14% of a
    Multi30k train step's op time): 2.5x faster on (4096, 8000) logits on a
    2-core CPU, and the recipe's steps 1.14x (median;
    bench/results/2026-12-05-multi30k-xla-loss.md). XLA compiles them once
    per logits shape and smoothing value; the trainer's bucketed batches
    bound the shapes.

    `tf.custom_gradient` in a traced function registers one gradient
    function with TensorFlow, which keeps it (and so that trace's graph)
    for the life of the process: one per trace of a train or evaluation
    function, not per step.

    Args:
        labels: integer (B, T), ids in [0, V). An id out of range raises
            `InvalidArgumentError` ("label ids must be ...") when the step
            runs without XLA, the default; a step compiled whole with XLA
            (`jit_compile=True`) drops the check, and the id is clamped.
        logits: float32 (B, T, V).
        label_smoothing: eps, a Python float in [0, 1).

    Returns:
        float32 (B, T): `(1 - eps) * nll + eps * (logsumexp - mean(logits))`.
    """
    epsilon = float(label_smoothing)  # a Python float: one XLA function per value
    labels = tf.cast(labels, tf.int32)
    if labels.shape.rank is not None and logits.shape.rank is not None and (
        labels.shape.rank != logits.shape.rank - 1
    ):
        raise ValueError(
            "The labels must have one dimension less than the logits (ids, not one-hot or "
            f"(B, T, 1)); received labels of shape {labels.shape} and logits of shape {logits.shape}"
        )

    @tf.custom_gradient
    def loss_and_gradient(logits):
        shape = tf.shape(logits)
        flat_logits = tf.reshape(logits, [-1, shape[-1]])  # (N, V), N = B*T
        flat_labels = tf.reshape(labels, [-1])  # (N,)
        # XLA's gather clamps an id out of range instead of failing: check (N,) ids here.
        checks = [tf.debugging.assert_non_negative(flat_labels, message="label ids must be >= 0"),
                  tf.debugging.assert_less(flat_labels, shape[-1],
                                           message="label ids must be < the vocabulary size")]
        with tf.control_dependencies(checks):
            loss, logsumexp = _smoothed_loss_forward(flat_logits, flat_labels, epsilon)  # (N,) x2

        def gradient(upstream):  # (B, T) -> (B, T, V)
            grad = _smoothed_loss_gradient(
                flat_logits, flat_labels, logsumexp, tf.reshape(upstream, [-1]), epsilon
            )
            return tf.reshape(grad, shape)

        return tf.reshape(loss, shape[:-1]), gradient

    return loss_and_gradient(logits)


@tf.function(jit_compile=True)
def _smoothed_loss_forward(logits, labels, epsilon):
    """(N, V) logits, (N,) ids -> (N,) smoothed loss and (N,) log-sum-exp, one XLA function."""
    logsumexp = tf.reduce_logsumexp(logits, axis=-1)
    label_logits = tf.gather(logits, labels[:, None], batch_dims=1)[:, 0]
    nll = logsumexp - label_logits
    if not epsilon:  # a Python float: no uniform term (and no 0 * inf) without smoothing
        return nll, logsumexp
    uniform = logsumexp - tf.reduce_mean(logits, axis=-1)  # cross-entropy with the uniform
    return (1.0 - epsilon) * nll + epsilon * uniform, logsumexp


@tf.function(jit_compile=True)
def _smoothed_loss_gradient(logits, labels, logsumexp, upstream, epsilon):
    """d loss / d logits, (N, V): `(softmax - (1 - eps) onehot - eps / V) * upstream`."""
    vocabulary = tf.shape(logits)[-1]
    onehot = tf.one_hot(labels, vocabulary, dtype=logits.dtype)
    softmax = tf.exp(logits - logsumexp[:, None])
    if not epsilon:
        return (softmax - onehot) * upstream[:, None]
    smoothed = (1.0 - epsilon) * onehot + epsilon / tf.cast(vocabulary, logits.dtype)
    return (softmax - smoothed) * upstream[:, None]


def _global_sum(value):
    """Sum over all replicas when called inside a multi-replica step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def token_accuracy(labels, logits):
    """1.0 where the logits' argmax is the label, else 0.0: (B, T, V) -> (B, T).

    `tf.argmax` directly: Keras's `ops.argmax` (3.15) first replaces -0.0 by
    the smallest negative float, which builds two more (B, T, V) tensors and
    three boolean ones of that shape in the train step (docs/traps.md,
    trap 16).
    """
    labels = ops.cast(labels, "int32")
    if labels.shape.rank is not None and labels.shape.rank == len(logits.shape):
        labels = ops.squeeze(labels, -1)  # (B, T, 1) labels, as Keras's metric accepts
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (B, T)
    return ops.cast(ops.equal(labels, predicted), "float32")


@keras.saving.register_keras_serializable(package="keras_s2s")
class TokenAccuracy(keras.metrics.MeanMetricWrapper):
    """Token accuracy; the logits' mask makes Keras weight it by real tokens."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=token_accuracy, name=name, dtype=dtype)
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def masked_accuracy():
    """The accuracy metric `compile_model` and `evaluate` compile with."""
    return TokenAccuracy(name="accuracy")
