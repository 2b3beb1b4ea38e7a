"""Mask-correct Transformer layers."""

from keras_s2s.layers import masks
from keras_s2s.layers.attention import (
    CausalSelfAttention,
    CrossAttention,
    GlobalSelfAttention,
    GrowingCache,
)
from keras_s2s.layers.decoder import DecoderLayer
from keras_s2s.layers.encoder import EncoderLayer
from keras_s2s.layers.feed_forward import FeedForward
from keras_s2s.layers.logits_bias import LogitsBias
from keras_s2s.layers.output_projection import OutputProjection
from keras_s2s.layers.positional_embedding import PositionalEmbedding
from keras_s2s.layers.residual import Residual

__all__ = [
    "CausalSelfAttention",
    "CrossAttention",
    "DecoderLayer",
    "EncoderLayer",
    "FeedForward",
    "GlobalSelfAttention",
    "GrowingCache",
    "LogitsBias",
    "OutputProjection",
    "PositionalEmbedding",
    "Residual",
    "masks",
]
