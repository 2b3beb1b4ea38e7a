"""The update path (keras_s2s/training/update.py): all-reduce, accumulate, clip, apply.

Every comparison runs with clipping active (`CLIP_NORM` far below the
gradient norm): without it, clipping per replica and after the all-reduce
give the same weights and the tests could not tell them apart.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.config import TrainConfig
from keras_s2s.losses import MaskedCrossEntropy
from keras_s2s.training.trainer import make_optimizer
from keras_s2s.training.update import AdamW, BatchTokens
from tests.training import distributed_job
from tests.helpers import assert_same_weights, initial_weights, relative_difference
from tests.training.distributed_job import CLIP_NORM, CLIPPED_RUNS, clipped_sgd

DEFAULT = tf.distribute.get_strategy()
# The one-step SGD run is the fast check; the longer runs are slow.
RUNS = [pytest.param(name, marks=[] if name == "sgd_1_step" else pytest.mark.slow)
        for name in sorted(CLIPPED_RUNS)]


def accumulated(settings, steps=2):
    """The same run as `settings` in half batches with `accumulation_steps=steps`."""
    settings = dict(settings)
    settings["batch_size"] = distributed_job.GLOBAL_BATCH // steps
    settings["steps"] = steps * settings.get("steps", distributed_job.STEPS)
    if "optimizer" in settings:
        settings["optimizer"] = lambda: clipped_sgd(steps)
    else:
        settings["train_config"] = dataclasses.replace(
            settings["train_config"], accumulation_steps=steps
        )
    return settings


def test_the_clip_is_active_in_these_tests():
    _, weights = distributed_job.train(DEFAULT, optimizer=clipped_sgd, steps=1)
    update = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(weights, initial_weights())))
    # SGD with learning rate 1: the update is the clipped gradient.
    np.testing.assert_allclose(update, CLIP_NORM, rtol=1e-4)


@pytest.mark.parametrize("name", RUNS)
def test_mirrored_with_clipping_equals_the_default_strategy(name, two_cpu_strategy):
    settings = CLIPPED_RUNS[name]
    _, reference = distributed_job.train(DEFAULT, **settings)
    _, mirrored = distributed_job.train(two_cpu_strategy, **settings)
    assert_same_weights(mirrored, reference, settings)


@pytest.mark.parametrize("name", RUNS)
def test_two_batches_accumulated_equal_one_batch_of_both(name, two_cpu_strategy):
    # The halves hold unequal token counts (test_distribute.py checks it), so
    # an equal-weight average of their gradients would differ.
    settings = CLIPPED_RUNS[name]
    _, reference = distributed_job.train(DEFAULT, **settings)
    for strategy in (DEFAULT, two_cpu_strategy):
        _, weights = distributed_job.train(strategy, **accumulated(settings))
        assert_same_weights(weights, reference, settings)


def test_keras_equal_weight_accumulation_would_not_equal_the_big_batch():
    # Why accumulation is ours: Keras's option averages the half batches'
    # gradients with equal weight, whatever their token counts.
    def keras_accumulating_sgd():
        return keras.optimizers.SGD(
            learning_rate=1.0, global_clipnorm=CLIP_NORM, gradient_accumulation_steps=2
        )

    def plain_sgd():
        return keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=CLIP_NORM)

    _, reference = distributed_job.train(DEFAULT, optimizer=plain_sgd, steps=1)
    _, weights = distributed_job.train(
        DEFAULT, optimizer=keras_accumulating_sgd, steps=2, batch_size=4
    )
    assert relative_difference(weights, reference, initial_weights()) > 0.05


def test_iterations_and_the_schedule_count_updates():
    config = dataclasses.replace(distributed_job.TRAIN, warmup_steps=10, accumulation_steps=2)
    model = distributed_job.build(DEFAULT, config)
    model.fit(distributed_job.dataset(4).repeat(), epochs=1, steps_per_epoch=6, verbose=0)
    optimizer = model.optimizer
    assert int(optimizer._iterations) == 6  # batches
    assert int(optimizer.iterations) == 3  # updates
    schedule = optimizer._learning_rate
    np.testing.assert_allclose(float(optimizer.learning_rate), float(schedule(3)), rtol=1e-6)
    assert float(optimizer.learning_rate) != pytest.approx(float(schedule(6)))


def test_accumulators_empty_after_each_update():
    config = dataclasses.replace(distributed_job.TRAIN, accumulation_steps=2)
    model = distributed_job.build(DEFAULT, config)
    dataset = distributed_job.dataset(4).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
    optimizer = model.optimizer
    assert float(optimizer._accumulated_tokens) > 0  # mid-cycle after 3 batches
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    assert float(optimizer._accumulated_tokens) == 0
    assert all(not np.any(np.asarray(s)) for s in optimizer._token_weighted_sums)


class StopAt(keras.callbacks.Callback):
    """Raises before batch `batch` of epoch `epoch`, like a kill."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.stop, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.stop:
            raise KeyboardInterrupt("killed")


@pytest.mark.slow
def test_resume_in_the_middle_of_an_accumulation_cycle(tmp_path):
    # 3 batches an epoch, 2 batches an update: the backup at the end of epoch
    # 0 holds half a cycle; the run is killed in epoch 1, inside a cycle.
    # Every epoch reads the same 3 batches, so the resumed run (which restarts
    # the killed epoch from the backup, as Keras does) must end with exactly
    # the uninterrupted run's weights: only if the accumulators were saved.
    config = dataclasses.replace(distributed_job.TRAIN, clip_norm=CLIP_NORM, accumulation_steps=2)

    def fit(backup_dir, *extra):
        model = distributed_job.build(DEFAULT, config)
        callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir)), *extra]
        model.fit(distributed_job.dataset(4).take(3).repeat(), epochs=3, steps_per_epoch=3,
                  callbacks=callbacks, verbose=0)
        return model

    uninterrupted = fit(tmp_path / "a").get_weights()
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", StopAt(epoch=1, batch=2))

    restored = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # after BackupAndRestore's
            restored["tokens"] = float(self.model.optimizer._accumulated_tokens)

    resumed = fit(tmp_path / "b", Probe())
    assert restored["tokens"] > 0  # the backup really was mid-cycle
    assert int(resumed.optimizer._iterations) == 9
    for a, b in zip(resumed.get_weights(), uninterrupted):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_compile_model_connects_the_loss_to_the_optimizer():
    model = distributed_job.build(DEFAULT)
    assert isinstance(model.optimizer, AdamW)
    assert model.loss.batch_tokens is model.optimizer.batch_tokens


def test_accumulation_without_token_counts_is_a_clear_error():
    model = distributed_job.build(DEFAULT)
    optimizer = AdamW(learning_rate=1e-3, accumulation_steps=2)
    model.compile(optimizer=optimizer, loss=MaskedCrossEntropy())  # not connected
    with pytest.raises(ValueError, match=r"`accumulation_steps` > 1 needs the batch's token count"):
        model.fit(distributed_job.dataset(4), steps_per_epoch=1, verbose=0)


def test_batch_tokens_are_read_once():
    tokens = BatchTokens()
    tokens.record(5.0)
    assert tokens.read() == 5.0
    with pytest.raises(ValueError, match="received no count"):
        tokens.read()


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_accumulation_steps_are_validated(value):
    with pytest.raises(ValueError, match=r"`accumulation_steps` must be an integer >= 1; received accumulation_steps="):
        AdamW(learning_rate=1e-3, accumulation_steps=value)
    with pytest.raises(ValueError, match=r"`accumulation_steps` must be a positive integer"):
        TrainConfig(accumulation_steps=value)


def test_keras_accumulation_option_is_refused():
    with pytest.raises(ValueError, match=r"`gradient_accumulation_steps` is not supported by AdamW"):
        AdamW(learning_rate=1e-3, gradient_accumulation_steps=2)


def test_optimizer_config_round_trip():
    optimizer = make_optimizer(TrainConfig(accumulation_steps=4), steps_per_epoch=10)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, AdamW) and clone.accumulation_steps == 4
    assert clone.global_clipnorm == 1.0


def test_cosine_horizon_counts_updates():
    config = TrainConfig(schedule="cosine", epochs=3, warmup_steps=2, accumulation_steps=2)
    schedule = make_optimizer(config, steps_per_epoch=10)._learning_rate
    assert schedule.total_steps == 15  # 3 epochs x 10 batches / 2 batches an update


def test_the_accumulating_model_saves_and_reloads(tmp_path):
    config = dataclasses.replace(distributed_job.TRAIN, accumulation_steps=2)
    model = distributed_job.build(DEFAULT, config)
    model.fit(distributed_job.dataset(4).repeat(), epochs=1, steps_per_epoch=3, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    features, _ = distributed_job.batches()
    np.testing.assert_array_equal(np.asarray(model(features)), np.asarray(again(features)))
    assert again.optimizer.accumulation_steps == 2
    np.testing.assert_array_equal(
        float(again.optimizer._accumulated_tokens), float(model.optimizer._accumulated_tokens)
    )


def test_keras_accumulation_still_fails_under_mirrored(two_cpu_strategy):
    # Canary for keras #20582 (docs/distributed-training.md says why
    # accumulation is ours): when this fails, Keras's option runs under
    # MirroredStrategy, though it still weights batches equally.
    def keras_accumulating_sgd():
        return keras.optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=2)

    with pytest.raises(RuntimeError, match="merge_call"):
        distributed_job.train(two_cpu_strategy, optimizer=keras_accumulating_sgd, steps=2,
                              batch_size=4)
