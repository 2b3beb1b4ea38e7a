"""keras_s2s: mask-correct encoder-decoder Transformers for Keras 3 / TensorFlow."""

from keras_s2s.runtime import prefer_onednn, quiet_tensorflow_startup

prefer_onednn()  # before anything below imports TensorFlow
quiet_tensorflow_startup()  # imports it, without the C++ start-up noise

from keras_s2s import layers  # noqa: E402
from keras_s2s.config import ModelConfig, TrainConfig  # noqa: E402
from keras_s2s.models import build_transformer  # noqa: E402
from keras_s2s.translator import Translator  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TrainConfig", "Translator", "build_transformer", "layers"]
