import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.losses import MaskedCrossEntropy


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
