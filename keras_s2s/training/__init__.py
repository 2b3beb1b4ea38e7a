"""Training: losses, schedules, strategies, and `train()` with model.fit."""

from keras_s2s.losses import MaskedCrossEntropy, masked_accuracy
from keras_s2s.training.compat import apply_multi_worker_fix
from keras_s2s.training.schedules import WarmupCosine, WarmupInverseSqrt
from keras_s2s.training.strategy import make_strategy, resolve_strategy_name
from keras_s2s.training.trainer import compile_model, freeze, train

__all__ = [
    "MaskedCrossEntropy",
    "WarmupCosine",
    "WarmupInverseSqrt",
    "apply_multi_worker_fix",
    "compile_model",
    "freeze",
    "make_strategy",
    "masked_accuracy",
    "resolve_strategy_name",
    "train",
]
