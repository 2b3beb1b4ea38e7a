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
        return smoothed_cross_entropy(
            ops.cast(labels, "int32"), ops.cast(logits, "float32"), self.label_smoothing
        )

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
    """Label-smoothed cross-entropy per position, in one pass over the vocabulary.

    `(1 - eps) * nll + eps * (logsumexp - mean(logits))`, i.e. the
    cross-entropy against `(1 - eps) * onehot + eps / V`. Its gradient with
    respect to the logits is `softmax - (1 - eps) * onehot - eps / V`,
    written by hand: TensorFlow's own gradients of the fused sparse
    cross-entropy plus a separate logsumexp kept several V-wide tensors per
    token alive for the backward pass (about 130 MB each for a 4096-token
    batch of an 8000-piece vocabulary); this keeps one, the logits
    themselves, and rebuilds the softmax from them and the logsumexp.

    Args:
        labels: int32 (B, T).
        logits: float32 (B, T, V).
        label_smoothing: eps in [0, 1), a Python float.

    Returns:
        float32 (B, T).
    """
    vocabulary_size = tf.cast(tf.shape(logits)[-1], logits.dtype)

    @tf.custom_gradient
    def loss_and_gradient(logits):
        log_normalizer = tf.reduce_logsumexp(logits, axis=-1)  # (B, T)
        label_logits = tf.gather(logits, labels, batch_dims=2)  # (B, T)
        loss = log_normalizer - (1.0 - label_smoothing) * label_logits
        if label_smoothing:
            loss -= label_smoothing * tf.reduce_mean(logits, axis=-1)

        def gradient(upstream):  # upstream (B, T)
            target = tf.one_hot(
                labels, tf.shape(logits)[-1], on_value=1.0 - label_smoothing,
                off_value=0.0, dtype=logits.dtype,
            )  # (B, T, V)
            probabilities = tf.exp(logits - log_normalizer[..., None])  # (B, T, V)
            return (probabilities - target - label_smoothing / vocabulary_size) * upstream[..., None]

        return loss, gradient

    return loss_and_gradient(logits)


def _global_sum(value):
    """Sum over all replicas when called inside a multi-replica step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def masked_accuracy():
    """Token accuracy; the logits' mask makes Keras weight it by real tokens."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
