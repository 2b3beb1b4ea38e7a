"""Where Keras 3 needs a fix of ours, each gated by the Keras versions known to need it.

- `apply_multi_worker_fix()`: `model.fit` under MultiWorkerMirroredStrategy
  (KNOWN_TRAPS 11), below.
- `keras_clips_per_replica()`: whether Keras's TensorFlow optimizer clips the
  gradients before the cross-replica all-reduce (KNOWN_TRAPS 14); the fix
  itself lives in keras_s2s/training/update.py, which owns the update.

The multi-worker fix:

Keras 3 (checked on 3.15.1, TensorFlow 2.21; keras #20585, tensorflow #72388)
fails in two places of `keras/src/backend/tensorflow/trainer.py` when
several workers train with collective all-reduce:

1. `_maybe_symbolic_build` reduces the first distributed batch with
   `strategy.reduce("MEAN", ..., axis=None)`, which collective all-reduce
   cannot do eagerly on per-replica input. The batch only serves to build
   shapes, so the first local replica's values do just as well.
2. `reduce_per_replica` reduces every per-replica log value with `axis=0`,
   which fails for scalar losses and metrics; rank-0 values need
   `axis=None`.

`apply_multi_worker_fix()` patches both, only for the Keras versions known
to be broken; on any other version it does nothing, so the fix retires
itself once Keras is fixed upstream (tests/training/test_distribute.py
then tells whether the newer version still needs it).
"""

import keras
import tensorflow as tf

# Versions verified broken (and fixed by this patch) by a two-process run.
BROKEN_KERAS_VERSIONS = ((3, 0), (3, 15))


def _keras_version():
    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


# Versions whose `BaseOptimizer.apply` runs `_clip_gradients` before
# `TFOptimizer._backend_update_step` all-reduces (read in 3.15.1; the canary in
# tests/test_known_traps.py fails once a newer version clips after it).
CLIPS_PER_REPLICA_KERAS_VERSIONS = ((3, 0), (3, 15))


def keras_clips_per_replica():
    low, high = CLIPS_PER_REPLICA_KERAS_VERSIONS
    return low <= _keras_version() <= high


def needs_multi_worker_fix():
    low, high = BROKEN_KERAS_VERSIONS
    return low <= _keras_version() <= high


def apply_multi_worker_fix():
    """Patches Keras's TF trainer for multi-worker `fit`; returns whether it did."""
    if not needs_multi_worker_fix():
        return False
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_keras_s2s_multi_worker_fix", False):
        return True
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)
        if reduction == "auto":
            reduction = "mean"
        if reduction != "mean":
            return original_reduce(values, strategy, reduction)

        def reduce_mean(value):
            local = strategy.experimental_local_results(value)[0]
            axis = None if local.shape.rank == 0 else 0
            return strategy.reduce("MEAN", value, axis=axis)

        return tf.nest.map_structure(reduce_mean, values)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda x: self.distribute_strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues)
                    else x,
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._keras_s2s_multi_worker_fix = True
    return True
