"""Learning-rate schedules: linear warm-up, then inverse square root or cosine decay."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_s2s")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * min(step / warmup, sqrt(warmup / step))` (step counted from 1)."""

    def __init__(self, peak_learning_rate, warmup_steps):
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        factor = ops.minimum(step / warmup, ops.sqrt(warmup / step))
        return self.peak_learning_rate * factor

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="keras_s2s")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine decay to zero at `total_steps`."""

    def __init__(self, peak_learning_rate, warmup_steps, total_steps):
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must exceed `warmup_steps` for the cosine schedule; "
                f"received total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        progress = (step - warmup) / ops.cast(self.total_steps - self.warmup_steps, "float32")
        cosine = 0.5 * (1.0 + ops.cos(3.141592653589793 * ops.clip(progress, 0.0, 1.0)))
        return self.peak_learning_rate * ops.where(step < warmup, step / warmup, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }
