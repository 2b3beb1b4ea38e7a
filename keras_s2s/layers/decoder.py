"""One decoder layer: causal self-attention, cross-attention, feed-forward.

Training (whole target at once) and incremental decoding (one step with a
key/value cache) go through the same `call`.

Shape legend: B batch, T target length, S source length, L cache length,
D hidden dim, H heads, Dh head dim.
"""

import keras

from keras_s2s.layers.attention import CausalSelfAttention, CrossAttention
from keras_s2s.layers.feed_forward import FeedForward
from keras_s2s.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_s2s")
class DecoderLayer(TransformerBlock):
    """Transformer decoder layer.

    Args:
        num_heads: attention heads; must divide the input width D.
        intermediate_dim: feed-forward width.
        dropout: residual dropout rate.
        norm_position: "pre" or "post" layer normalization.
        layer_norm_epsilon: LayerNormalization epsilon.
        activation: feed-forward activation.

    Call arguments:
        inputs: float (B, T, D), the embedded target prefix.
        context: float (B, S, D), the encoder output.
        inputs_mask: bool (B, T), True at real target tokens; taken from the
            Keras mask of `inputs` when not given.
        context_mask: bool (B, S), True at real source tokens. Pass it
            explicitly (KNOWN_TRAPS 1); the model built by
            `build_transformer` does, in every decoder layer.
        self_attention_cache: optional `(keys, values)`, 2 x (B, H, L, Dh), of
            the earlier target positions, for incremental decoding.
        cache_index: int scalar, position of `inputs[:, 0]`; with a cache.
        cross_attention_cache: optional `(keys, values)`, each (B, H, S, Dh),
            from `compute_cross_attention_cache(context)`. With it, `inputs`
            may have N = B*G rows (beam search: row b*G + g belongs to
            sentence b, whose keys, values and `context_mask` row it uses).

    Returns:
        float (B, T, D) carrying `inputs_mask`; with `self_attention_cache`,
        `(outputs, new_self_attention_cache)`.

    Example:
    >>> layer = DecoderLayer(num_heads=2, intermediate_dim=32)
    >>> layer(np.zeros((1, 3, 16)), np.zeros((1, 5, 16))).shape
    (1, 3, 16)
    """

    def build(self, inputs_shape, context_shape=None):
        context_shape = inputs_shape if context_shape is None else context_shape
        key_dim = self.head_dim(inputs_shape[-1])
        self.self_attention_block = self.residual(
            CausalSelfAttention(
                self.num_heads, key_dim, dtype=self.dtype_policy, name="attention"
            ),
            "self_attention_block",
        )
        self.cross_attention_block = self.residual(
            CrossAttention(
                self.num_heads, key_dim, dtype=self.dtype_policy, name="attention"
            ),
            "cross_attention_block",
        )
        self.feed_forward_block = self.residual(
            FeedForward(
                self.intermediate_dim,
                activation=self.activation,
                dtype=self.dtype_policy,
                name="feed_forward",
            ),
            "feed_forward_block",
        )
        for block in (
            self.self_attention_block,
            self.cross_attention_block,
            self.feed_forward_block,
        ):
            block.build(inputs_shape)
        self.self_attention_block.sublayer.build(inputs_shape)
        self.cross_attention_block.sublayer.build(inputs_shape, context_shape)
        self.feed_forward_block.sublayer.build(inputs_shape)
        self.built = True

    def call(
        self,
        inputs,
        context,
        inputs_mask=None,
        context_mask=None,
        self_attention_cache=None,
        cache_index=None,
        cross_attention_cache=None,
    ):
        if self_attention_cache is None:
            x = self.self_attention_block(inputs, mask=inputs_mask)  # (B, T, D)
            new_cache = None
        else:
            x, new_cache = self.self_attention_block(
                inputs,
                mask=inputs_mask,
                cache=self_attention_cache,
                cache_index=cache_index,
            )
        x = self.cross_attention_block(
            x,
            context,
            query_mask=inputs_mask,
            context_mask=context_mask,
            cache=cross_attention_cache,
        )  # (B, T, D)
        x = self.feed_forward_block(x)  # (B, T, D)
        return x if new_cache is None else (x, new_cache)

    def cross_attention_weights(self, inputs, context, inputs_mask=None, context_mask=None):
        """Cross-attention probabilities (B, H, T, S) of this layer, teacher-forced.

        Runs the self-attention block as `call` does and reads the
        cross-attention distribution for the stream that block produces.
        """
        x = self.self_attention_block(inputs, mask=inputs_mask)  # (B, T, D)
        block = self.cross_attention_block
        query = block.norm(x) if block.norm_position == "pre" else x
        return block.sublayer.attention_weights(query, context, context_mask)

    def compute_cross_attention_cache(self, context):
        """Keys and values of the encoder output for this layer, 2 x (B, H, S, Dh)."""
        return self.cross_attention_block.sublayer.compute_cache(context)

    def initial_self_attention_cache(self, batch_size, max_length, dtype="float32"):
        """An empty self-attention cache: (keys, values), 2 x (B, H, L, Dh)."""
        return self.self_attention_block.sublayer.initial_cache(
            batch_size, max_length, dtype
        )
