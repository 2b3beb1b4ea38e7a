"""keras_s2s: mask-correct encoder-decoder Transformers for Keras 3 / TensorFlow."""

from keras_s2s import layers
from keras_s2s.config import ModelConfig, TrainConfig
from keras_s2s.models import build_transformer
from keras_s2s.translator import Translator

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TrainConfig", "Translator", "build_transformer", "layers"]
