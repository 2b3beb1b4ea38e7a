"""Position-wise feed-forward block.

Shape legend: B batch, L sequence length, D hidden dim, F intermediate dim.
"""

import keras


@keras.saving.register_keras_serializable(package="keras_s2s")
class FeedForward(keras.layers.Layer):
    """Two dense layers with an activation between them, applied at every position.

    Args:
        intermediate_dim: F.
        activation: activation of the hidden layer ("relu", "gelu", ...).

    Call arguments:
        inputs: float (B, L, D).

    Returns:
        float (B, L, D); the input's Keras mask passes through.

    Example:
    >>> FeedForward(32)(np.zeros((1, 3, 16))).shape
    (1, 3, 16)
    """

    def __init__(self, intermediate_dim, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = intermediate_dim
        self.activation = activation
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        self.intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="intermediate",
        )
        self.intermediate_dense.build(input_shape)
        self.output_dense = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="output"
        )
        self.output_dense.build((*input_shape[:-1], self.intermediate_dim))
        self.built = True

    def call(self, inputs):
        hidden = self.intermediate_dense(inputs)  # (B, L, F)
        return self.output_dense(hidden)  # (B, L, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"intermediate_dim": self.intermediate_dim, "activation": self.activation}
        )
        return config
