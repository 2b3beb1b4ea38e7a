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
        logits = ops.cast(logits, "float32")  # (B, T, V)
        # The fused op: a gather of log-probabilities and its gradient cost
        # more than the whole softmax here (bench profile).
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=ops.cast(labels, "int32"), logits=logits
        )  # (B, T)
        if not self.label_smoothing:
            return nll
        # -mean(log_softmax) without materialising log_softmax.
        uniform = ops.logsumexp(logits, axis=-1) - ops.mean(logits, axis=-1)  # (B, T)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

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


def _global_sum(value):
    """Sum over all replicas when called inside a multi-replica step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def masked_accuracy():
    """Token accuracy; the logits' mask makes Keras weight it by real tokens."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
