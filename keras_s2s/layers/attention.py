"""Multi-head attention layers: global (encoder) self, causal (decoder) self, and cross.

None of these wraps `keras.layers.MultiHeadAttention`: that layer clears the
`_keras_mask` of its inputs in place (KNOWN_TRAPS 1), so an encoder output
shared by N decoder layers loses its padding mask after the first one. Here
masks are explicit tensors built by `keras_s2s.layers.masks`, and the
query's padding mask is propagated as the output mask.

Decoding caches are heads-major, (B, H, L, Dh): a decoding step then reads
them as they are. Keras's `dot_product_attention` takes (B, S, H, Dh) and
transposes keys and values to heads-major inside its einsums on every call,
which for a cache is a copy of the whole cache per layer per step; those
einsums were 41% of the op time of greedy decoding in the bench profile.

Shape legend: B batch, T query length, S key length, L cache length,
D model dim, H heads, Dh head dim; in cached cross-attention N query rows,
G = N / B per sentence (beam search's K hypotheses).
"""

import collections

import keras
from keras import ops

from keras_s2s.checks import check_positive_int
from keras_s2s.layers import masks


class GrowingCache(collections.namedtuple("GrowingCache", ["keys", "values"])):
    """A self-attention cache holding exactly the positions decoded so far.

    keys, values: (B, H, t, Dh) after t positions. A step appends its keys
    and values (a concatenation) instead of writing them into a fixed-size
    cache (a `(keys, values)` tuple): no scatter and no unwritten slots to
    mask, read or reorder, so a step costs what has been decoded, not what
    could be. Its length changes every step, so XLA cannot compile a loop
    over it: the searches use it without XLA (in process with
    `jit_compile=False`, and in the exported SavedModel) and the fixed cache
    under XLA. The type marks the mode: `tf.nest` and `tf.while_loop`
    rebuild namedtuples as they are.
    """

# Score of a masked key, in float32 (scores are computed in float32): finite,
# as in Keras's own attention, so a row with every key masked stays a uniform
# distribution instead of NaN.
_MASKED_SCORE = -1e9


class _Attention(keras.layers.Layer):
    """Projections and fused scaled dot-product attention shared by all three layers."""

    def __init__(self, num_heads, key_dim, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.use_bias = use_bias
        self.supports_masking = True

    def _add_projection(self, name, kernel_shape, bias_shape, fan_in, fan_out):
        """A (kernel, bias) pair; weights rather than sublayers so no inner
        layer sees (and warns about dropping) the Keras mask."""
        # Glorot-uniform over the logical (fan_in, fan_out) matrix, whatever
        # the einsum layout of the kernel.
        limit = (6.0 / (fan_in + fan_out)) ** 0.5
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=kernel_shape,
            initializer=keras.initializers.RandomUniform(-limit, limit),
        )
        bias = None
        if self.use_bias:
            bias = self.add_weight(
                name=f"{name}_bias", shape=bias_shape, initializer="zeros"
            )
        return kernel, bias

    def _project(self, equation, inputs, projection):
        # Explicit casts: `compute_cache` runs outside `__call__`, where Keras
        # does not autocast, and a float32 kernel would promote a bfloat16
        # cross-attention cache to float32 (no-ops under float32).
        kernel, bias = projection
        inputs = ops.cast(inputs, self.compute_dtype)
        outputs = ops.einsum(equation, inputs, ops.cast(kernel, self.compute_dtype))
        return outputs if bias is None else outputs + ops.cast(bias, self.compute_dtype)

    def _build_output(self, hidden_dim):
        heads_width = self.num_heads * self.key_dim
        self.output_projection = self._add_projection(
            "output",
            (self.num_heads, self.key_dim, hidden_dim),
            (hidden_dim,),
            heads_width,
            hidden_dim,
        )

    def _attend(self, query, key, value, mask):
        # query (B, T, H, Dh); key, value (B, S, H, Dh); mask (B|1, 1, T|1, S)
        attended = ops.dot_product_attention(
            query, key, value, mask=mask
        )  # (B, T, H, Dh)
        return self._project("bthk,hkd->btd", attended, self.output_projection)

    def _attend_cached(self, query, keys, values, mask):
        """Attention over heads-major decoding caches.

        query (B, T, H, Dh); keys, values (B, H, S, Dh); mask (B|1, 1, T|1, S)
        or None. Returns (B, T, D). The same computation as `_attend`
        (scores and softmax in float32, scaled by 1/sqrt(Dh)), reading the
        caches without transposing them.
        """
        queries = ops.transpose(query, (0, 2, 1, 3))  # (B, H, T, Dh): T is 1 when decoding
        scores = ops.cast(
            ops.einsum("bhtk,bhsk->bhts", queries, keys), "float32"
        ) * (1.0 / self.key_dim**0.5)  # (B, H, T, S)
        if mask is not None:
            scores = ops.where(mask, scores, _MASKED_SCORE)
        probabilities = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
        attended = ops.einsum("bhts,bhsk->bthk", probabilities, values)  # (B, T, H, Dh)
        return self._project("bthk,hkd->btd", attended, self.output_projection)

    def compute_output_shape(self, query_shape, *args, **kwargs):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "use_bias": self.use_bias,
            }
        )
        return config


class _SelfAttention(_Attention):
    """Self-attention with one fused query/key/value projection."""

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        heads_width = self.num_heads * self.key_dim
        self.qkv_projection = self._add_projection(
            "query_key_value",
            (hidden_dim, 3, self.num_heads, self.key_dim),
            (3, self.num_heads, self.key_dim),
            hidden_dim,
            heads_width,
        )
        self._build_output(hidden_dim)
        self.built = True

    def _qkv(self, inputs):
        # One matmul for queries, keys and values: fewer, larger ops.
        return self._project(
            "btd,dnhk->btnhk", inputs, self.qkv_projection
        )  # (B, T, 3, H, Dh)


@keras.saving.register_keras_serializable(package="keras_s2s")
class GlobalSelfAttention(_SelfAttention):
    """Bidirectional self-attention over the real (non-padded) tokens.

    Args:
        num_heads: H.
        key_dim: Dh, the width of each head.
        use_bias: whether projections have biases.

    Call arguments:
        inputs: float (B, T, D).
        mask: bool (B, T), True at real tokens; taken from the Keras mask of
            `inputs` when not given.

    Returns:
        float (B, T, D) carrying `mask`.

    Example:
    >>> layer = GlobalSelfAttention(num_heads=2, key_dim=8)
    >>> layer(np.zeros((1, 3, 16))).shape
    (1, 3, 16)
    """

    def call(self, inputs, mask=None):
        # unstack, not three slices: each slice's gradient is a full-size
        # zero-padded tensor (13% of training op time in the bench profile).
        query, key, value = ops.unstack(self._qkv(inputs), axis=2)  # 3 x (B, T, H, Dh)
        return self._attend(query, key, value, masks.key_padding_mask(mask))


@keras.saving.register_keras_serializable(package="keras_s2s")
class CausalSelfAttention(_SelfAttention):
    """Decoder self-attention: each position sees itself and earlier real tokens.

    Training and incremental decoding share this one call: with `cache`, the
    new keys and values are written into the cache at `cache_index` and the
    queries attend over the cache.

    Args:
        num_heads: H.
        key_dim: Dh, the width of each head.
        use_bias: whether projections have biases.

    Call arguments:
        inputs: float (B, T, D).
        mask: bool (B, T), True at real tokens; taken from the Keras mask of
            `inputs` when not given. Combined with the causal mask.
        cache: optional `(keys, values)`, each float (B, H, L, Dh)
            (heads-major), see `initial_cache`; or a `GrowingCache` of the
            `cache_index` positions decoded so far.
        cache_index: int scalar, position of `inputs[:, 0]`; required with
            `cache`.

    Returns:
        float (B, T, D) carrying `mask`; with a cache, `(outputs, new_cache)`.

    Example:
    >>> layer = CausalSelfAttention(num_heads=2, key_dim=8)
    >>> layer(np.zeros((1, 3, 16))).shape
    (1, 3, 16)
    """

    def call(self, inputs, mask=None, cache=None, cache_index=None):
        query, key, value = ops.unstack(self._qkv(inputs), axis=2)  # 3 x (B, T, H, Dh)
        query_length = ops.shape(inputs)[1]
        if cache is None:
            attention_mask = masks.causal_attention_mask(
                query_length, query_length, key_mask=mask
            )
            return self._attend(query, key, value, attention_mask)
        if cache_index is None:
            raise ValueError(
                f"{self.name}: `cache_index` is required when `cache` is given"
            )
        if isinstance(cache, GrowingCache):

            def append(cached, new):
                new = ops.transpose(ops.cast(new, cached.dtype), (0, 2, 1, 3))  # (B, H, T, Dh)
                return ops.concatenate([cached, new], axis=2)  # (B, H, t + T, Dh)

            keys, values = append(cache.keys, key), append(cache.values, value)
            attention_mask = masks.causal_attention_mask(
                query_length, ops.shape(keys)[2], offset=cache_index
            )
            outputs = self._attend_cached(query, keys, values, attention_mask)
            return outputs, GrowingCache(keys, values)
        keys, values = cache  # 2 x (B, H, L, Dh)
        # A scatter at (row, head, position) triples rather than
        # `ops.slice_update`: in the TF backend that lowers to
        # XlaDynamicUpdateSlice, an XLA op stock TF Serving cannot run
        # (tensorflow/serving#2217, KNOWN_TRAPS 8); TensorScatterUpdate is core
        # TensorFlow and XLA compiles it too.
        batch_size = ops.shape(keys)[0]
        grid = (batch_size, self.num_heads, query_length)
        rows = ops.broadcast_to(ops.arange(batch_size)[:, None, None], grid)
        heads = ops.broadcast_to(ops.arange(self.num_heads)[None, :, None], grid)
        positions = ops.broadcast_to(
            ops.cast(cache_index, "int32") + ops.arange(query_length)[None, None, :], grid
        )
        indices = ops.reshape(ops.stack([rows, heads, positions], axis=-1), (-1, 3))  # (B*H*T, 3)

        def write(cached, new):
            new = ops.transpose(ops.cast(new, cached.dtype), (0, 2, 1, 3))  # (B, H, T, Dh)
            return ops.scatter_update(
                cached, indices, ops.reshape(new, (-1, self.key_dim))
            )  # (B, H, L, Dh)

        # Keys and values live in two tensors: attention reads each whole,
        # where slicing one stacked cache copied both every step.
        keys, values = write(keys, key), write(values, value)
        # Slots after cache_index hold zeros (or stale values); the causal
        # mask with an offset hides them, so shapes stay fixed for XLA.
        attention_mask = masks.causal_attention_mask(
            query_length, ops.shape(keys)[2], offset=cache_index
        )
        outputs = self._attend_cached(query, keys, values, attention_mask)
        return outputs, (keys, values)

    def initial_cache(self, batch_size, max_length, dtype="float32"):
        """An empty cache for `max_length` positions: (keys, values), 2 x (B, H, L, Dh)."""
        shape = (batch_size, self.num_heads, max_length, self.key_dim)
        return ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_s2s")
class CrossAttention(_Attention):
    """Decoder queries over encoder outputs, never attending to padded source keys.

    Args:
        num_heads: H.
        key_dim: Dh, the width of each head.
        use_bias: whether projections have biases.

    Call arguments:
        query: float (B, T, D), the decoder stream.
        context: float (B, S, D), the encoder output.
        query_mask: bool (B, T); propagated as the output mask.
        context_mask: bool (B, S), True at real source tokens. Pass it
            explicitly: a mask riding on a shared `context` tensor is what
            KNOWN_TRAPS 1 loses.
        cache: optional `(keys, values)`, each float (B, H, S, Dh), from
            `compute_cache(context)`, so decoding projects the encoder
            output once per sentence. The query may then have N = B*G rows
            (beam search: row b*G + g belongs to sentence b), with
            `context_mask` (B, S) for the B sentences.

    Returns:
        float (B, T, D).

    Example:
    >>> layer = CrossAttention(num_heads=2, key_dim=8)
    >>> layer(np.zeros((1, 3, 16)), np.zeros((1, 5, 16))).shape
    (1, 3, 16)
    """

    def build(self, query_shape, context_shape=None):
        hidden_dim = query_shape[-1]
        context_dim = hidden_dim if context_shape is None else context_shape[-1]
        heads_width = self.num_heads * self.key_dim
        self.query_projection = self._add_projection(
            "query",
            (hidden_dim, self.num_heads, self.key_dim),
            (self.num_heads, self.key_dim),
            hidden_dim,
            heads_width,
        )
        self.key_value_projection = self._add_projection(
            "key_value",
            (context_dim, 2, self.num_heads, self.key_dim),
            (2, self.num_heads, self.key_dim),
            context_dim,
            heads_width,
        )
        self._build_output(hidden_dim)
        self.built = True

    def call(self, query, context, query_mask=None, context_mask=None, cache=None):
        queries = self._project("btd,dhk->bthk", query, self.query_projection)  # (B, T, H, Dh)
        mask = masks.key_padding_mask(context_mask)  # (B, 1, 1, S)
        if cache is None:
            key, value = self._keys_values(context)  # 2 x (B, S, H, Dh)
            return self._attend(queries, key, value, mask)
        # Beam search feeds G = N / B rows per sentence (row b*G + g is
        # hypothesis g of sentence b) against one copy of the sentence's keys
        # and values: the G rows attend as G query positions of that sentence,
        # so the cache is never repeated G times nor read G times per step.
        key, value = cache  # 2 x (B, H, S, Dh)
        rows, length = ops.shape(queries)[0], ops.shape(queries)[1]
        grouped = ops.reshape(
            queries, (ops.shape(key)[0], -1, self.num_heads, self.key_dim)
        )  # (B, G*T, H, Dh)
        outputs = self._attend_cached(grouped, key, value, mask)  # (B, G*T, D)
        return ops.reshape(outputs, (rows, length, ops.shape(outputs)[-1]))  # (N, T, D)

    def attention_weights(self, query, context, context_mask=None):
        """The attention probabilities, for inspection and alignment plots.

        Returns:
            float (B, H, T, S): each query's distribution over source keys;
            masked keys get exactly 0.
        """
        if not self.built:
            self.build(tuple(query.shape), tuple(context.shape))
        query = self._project("btd,dhk->bthk", query, self.query_projection)  # (B, T, H, Dh)
        key, _ = self._keys_values(context)  # (B, S, H, Dh)
        scores = ops.einsum("bthk,bshk->bhts", query, key) / ops.sqrt(
            ops.cast(self.key_dim, query.dtype)
        )  # (B, H, T, S)
        mask = masks.key_padding_mask(context_mask)
        if mask is not None:
            scores = ops.where(mask, scores, ops.cast(_MASKED_SCORE, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        return weights if mask is None else ops.where(mask, weights, 0.0)

    def compute_cache(self, context):
        """Projects the encoder output to `(keys, values)`, each (B, H, S, Dh), once.

        Heads-major and two tensors rather than one stacked one: a decoding
        step then reads them as they are, without a transpose or a slice.
        """
        key, value = self._keys_values(context)  # 2 x (B, S, H, Dh)
        return ops.transpose(key, (0, 2, 1, 3)), ops.transpose(value, (0, 2, 1, 3))

    def _keys_values(self, context):
        """(B, S, D) -> keys, values 2 x (B, S, H, Dh), one projection for both."""
        key_value = self._project(
            "bsd,dnhk->bsnhk", context, self.key_value_projection
        )  # (B, S, 2, H, Dh)
        key, value = ops.unstack(key_value, axis=2)
        return key, value
