"""The residual sublayer, written once: norm, sublayer, dropout, add.

Shape legend: B batch, L sequence length, D hidden dim.
"""

import keras

from keras_s2s.checks import check_choice
from keras_s2s.config import NORM_POSITIONS


@keras.saving.register_keras_serializable(package="keras_s2s")
class Residual(keras.layers.Layer):
    """Wraps a sublayer in a residual connection with layer normalization.

    pre-norm:  `x + dropout(sublayer(norm(x)))` (stable without warm-up
    tricks; the stack needs a final norm, which the model adds).
    post-norm: `norm(x + dropout(sublayer(x)))` (the original paper).

    Args:
        sublayer: a layer mapping (B, L, D) to (B, L, D); it may return
            `(outputs, state)` (attention with a cache), in which case the
            state is returned beside the residual output.
        norm_position: "pre" or "post".
        dropout: dropout rate on the sublayer output.
        epsilon: LayerNormalization epsilon.

    Call arguments:
        inputs: float (B, L, D).
        *args, **kwargs: passed to the sublayer (masks, context, cache).

    Returns:
        float (B, L, D), or `(outputs, state)` as described above. The Keras
        mask of `inputs` passes through.

    Example:
    >>> Residual(FeedForward(32))(np.zeros((1, 3, 16))).shape
    (1, 3, 16)
    """

    def __init__(
        self, sublayer, norm_position="pre", dropout=0.0, epsilon=1e-6, **kwargs
    ):
        super().__init__(**kwargs)
        check_choice("norm_position", norm_position, NORM_POSITIONS)
        self.sublayer = sublayer
        self.norm_position = norm_position
        self.dropout = dropout
        self.epsilon = epsilon
        self.norm = keras.layers.LayerNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="norm"
        )
        # The layer's own policy, not the global one at load time: a float32
        # dropout would cast a reloaded bfloat16 model's stream back to float32.
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="dropout")
        self.supports_masking = True

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.built = True

    def call(self, inputs, *args, **kwargs):
        x = self.norm(inputs) if self.norm_position == "pre" else inputs
        outputs = self.sublayer(x, *args, **kwargs)
        state = None
        if isinstance(outputs, tuple):
            outputs, state = outputs
        outputs = inputs + self.dropout_layer(outputs)
        if self.norm_position == "post":
            outputs = self.norm(outputs)
        return outputs if state is None else (outputs, state)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sublayer": keras.saving.serialize_keras_object(self.sublayer),
                "norm_position": self.norm_position,
                "dropout": self.dropout,
                "epsilon": self.epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["sublayer"] = keras.saving.deserialize_keras_object(config["sublayer"])
        return cls(**config)
