"""Learning-rate schedules: linear warm-up, then inverse square root or cosine decay.

`step` counts optimizer updates (with gradient accumulation, not batches:
keras_s2s/training/update.py calls the schedule with updates). Warm-up rises
linearly from `warmup_init_learning_rate` (fairseq's `--warmup-init-lr`;
0 by default) to the peak over `warmup_steps` updates.
"""

import keras
from keras import ops


def _check_warmup_init(warmup_init_learning_rate, peak_learning_rate):
    if not 0.0 <= warmup_init_learning_rate <= peak_learning_rate:
        raise ValueError(
            "`warmup_init_learning_rate` must be in [0, peak learning rate]; received "
            f"warmup_init_learning_rate={warmup_init_learning_rate!r}, "
            f"peak learning rate={peak_learning_rate!r}"
        )


def _from_warmup_init(learning_rate, step, warmup, peak, init):
    """`learning_rate` with its warm-up part starting at `init` instead of 0."""
    if not init:
        return learning_rate  # exactly the schedule without an initial rate
    return ops.where(step < warmup, init + (peak - init) * (step / warmup), learning_rate)


@keras.saving.register_keras_serializable(package="keras_s2s")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * min(step / warmup, sqrt(warmup / step))` (step counted from 1).

    With `warmup_init_learning_rate` the warm-up is
    `init + (peak - init) * step / warmup` instead (fairseq's inverse_sqrt).
    """

    def __init__(self, peak_learning_rate, warmup_steps, warmup_init_learning_rate=0.0):
        _check_warmup_init(warmup_init_learning_rate, peak_learning_rate)
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.warmup_init_learning_rate = warmup_init_learning_rate

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        factor = ops.minimum(step / warmup, ops.sqrt(warmup / step))
        return _from_warmup_init(
            self.peak_learning_rate * factor, step, warmup,
            self.peak_learning_rate, self.warmup_init_learning_rate,
        )

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "warmup_init_learning_rate": self.warmup_init_learning_rate,
        }


@keras.saving.register_keras_serializable(package="keras_s2s")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` (from `warmup_init_learning_rate`), then cosine decay to zero at `total_steps`."""

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, warmup_init_learning_rate=0.0):
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must exceed `warmup_steps` for the cosine schedule; "
                f"received total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        _check_warmup_init(warmup_init_learning_rate, peak_learning_rate)
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.warmup_init_learning_rate = warmup_init_learning_rate

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        progress = (step - warmup) / ops.cast(self.total_steps - self.warmup_steps, "float32")
        cosine = 0.5 * (1.0 + ops.cos(3.141592653589793 * ops.clip(progress, 0.0, 1.0)))
        learning_rate = self.peak_learning_rate * ops.where(step < warmup, step / warmup, cosine)
        return _from_warmup_init(
            learning_rate, step, warmup, self.peak_learning_rate, self.warmup_init_learning_rate
        )

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "warmup_init_learning_rate": self.warmup_init_learning_rate,
        }
