"""One encoder layer: global self-attention then feed-forward, each residual.

Shape legend: B batch, S source length, D hidden dim.
"""

import keras

from keras_s2s.layers.attention import GlobalSelfAttention
from keras_s2s.layers.feed_forward import FeedForward
from keras_s2s.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_s2s")
class EncoderLayer(TransformerBlock):
    """Transformer encoder layer.

    Args:
        num_heads: attention heads; must divide the input width D.
        intermediate_dim: feed-forward width.
        dropout: residual dropout rate.
        norm_position: "pre" or "post" layer normalization.
        layer_norm_epsilon: LayerNormalization epsilon.
        activation: feed-forward activation.

    Call arguments:
        inputs: float (B, S, D).
        mask: bool (B, S), True at real tokens; taken from the Keras mask of
            `inputs` when not given.

    Returns:
        float (B, S, D) carrying `mask`.

    Example:
    >>> EncoderLayer(num_heads=2, intermediate_dim=32)(np.zeros((1, 3, 16))).shape
    (1, 3, 16)
    """

    def build(self, input_shape):
        key_dim = self.head_dim(input_shape[-1])
        self.self_attention_block = self.residual(
            GlobalSelfAttention(
                self.num_heads, key_dim, dtype=self.dtype_policy, name="attention"
            ),
            "self_attention_block",
        )
        self.self_attention_block.build(input_shape)
        self.self_attention_block.sublayer.build(input_shape)
        self.feed_forward_block = self.residual(
            FeedForward(
                self.intermediate_dim,
                activation=self.activation,
                dtype=self.dtype_policy,
                name="feed_forward",
            ),
            "feed_forward_block",
        )
        self.feed_forward_block.build(input_shape)
        self.feed_forward_block.sublayer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        x = self.self_attention_block(inputs, mask=mask)  # (B, S, D)
        return self.feed_forward_block(x)  # (B, S, D)
