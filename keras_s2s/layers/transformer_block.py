"""Constructor arguments shared by `EncoderLayer` and `DecoderLayer`."""

import keras

from keras_s2s.layers.residual import Residual


class TransformerBlock(keras.layers.Layer):
    """Stores the hyper-parameters common to encoder and decoder layers.

    Subclasses compose `self.residual(sublayer, name)` blocks; everything
    about normalization and dropout lives in `Residual`.
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        norm_position="pre",
        layer_norm_epsilon=1e-6,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.norm_position = norm_position
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.supports_masking = True

    def residual(self, sublayer, name):
        return Residual(
            sublayer,
            norm_position=self.norm_position,
            dropout=self.dropout,
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name=name,
        )

    def head_dim(self, hidden_dim):
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"{self.name}: `num_heads` must divide the hidden size; received "
                f"hidden_dim={hidden_dim}, num_heads={self.num_heads}"
            )
        return hidden_dim // self.num_heads

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "norm_position": self.norm_position,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
            }
        )
        return config
