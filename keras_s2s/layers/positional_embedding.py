"""Token embedding (scaled by sqrt(D) by default) plus sinusoidal or learned positions, then dropout.

Shape legend: B batch, L sequence length, D hidden_dim, V vocabulary.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_s2s.checks import check_bool, check_choice, check_number_in
from keras_s2s.config import POSITION_KINDS, SINUSOIDAL_LAYOUTS
from keras_s2s.layers import masks


def sinusoidal_table(max_length, hidden_dim, layout="interleaved"):
    """The fixed position table, (max_length, D) float32; row p is position p.

    Column pair j holds sin and cos of `p / 10000 ** (2j / D)`, laid out as
    `layout` says (see SINUSOIDAL_LAYOUTS). Position 0 is the first token:
    Marian counts from 0 too (BART, unlike it, offsets positions by 2).
    """
    check_choice("layout", layout, SINUSOIDAL_LAYOUTS)
    positions = np.arange(max_length)[:, None]  # (L, 1)
    frequencies = np.exp(
        -math.log(10000.0) * np.arange(0, hidden_dim, 2) / hidden_dim
    )  # (ceil(D/2),)
    angles = positions * frequencies[None, :]  # (L, ceil(D/2))
    sines, cosines = np.sin(angles), np.cos(angles[:, : hidden_dim // 2])
    table = np.zeros((max_length, hidden_dim), dtype="float32")
    if layout == "interleaved":
        table[:, 0::2] = sines
        table[:, 1::2] = cosines
    else:
        table[:, : sines.shape[1]] = sines
        table[:, sines.shape[1] :] = cosines
    return table


@keras.saving.register_keras_serializable(package="keras_s2s")
class PositionalEmbedding(keras.layers.Layer):
    """Embeds token ids and adds positions; the output mask is `tokens != 0`.

    Args:
        vocabulary_size: V; id 0 is padding.
        hidden_dim: D.
        max_length: longest sequence accepted; longer input raises an error
            naming `max_length`.
        positions: "sinusoidal" (fixed table) or "learned".
        scale_embeddings: multiply the token embeddings by sqrt(D) before
            adding the positions (the Transformer paper, Marian); False adds
            them as they are.
        sinusoidal_layout: column order of the sinusoidal table,
            "interleaved" or "halves" (see `sinusoidal_table`).
        dropout: dropout rate on the sum of tokens and positions, in
            training only (fairseq, Marian and the Transformer paper drop
            there as well as on every residual branch).

    Call arguments:
        inputs: int tensor (B, L) of token ids.
        start_index: position of the first token (int or scalar tensor);
            incremental decoding embeds token i with `start_index=i`.
        reverse: if True, `inputs` are hidden states (B, L, D) and the call
            returns float32 logits (B, L, V) against the token embedding
            matrix: the tied output projection. The input's mask passes on.

    Returns:
        float tensor (B, L, D) carrying the Keras mask `inputs != 0`
        (with `reverse=True`: logits (B, L, V)).

    Example:
    >>> layer = PositionalEmbedding(100, 16, max_length=8)
    >>> layer(np.array([[5, 6, 0]])).shape
    (1, 3, 16)
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        max_length,
        positions="sinusoidal",
        scale_embeddings=True,
        sinusoidal_layout="interleaved",
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("positions", positions, POSITION_KINDS)
        check_choice("sinusoidal_layout", sinusoidal_layout, SINUSOIDAL_LAYOUTS)
        check_bool("scale_embeddings", scale_embeddings)
        check_number_in("dropout", dropout, "[0, 1)")
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.max_length = max_length
        self.positions = positions
        self.scale_embeddings = scale_embeddings
        self.sinusoidal_layout = sinusoidal_layout
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=hidden_dim**-0.5
            ),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.scale = math.sqrt(hidden_dim) if scale_embeddings else 1.0
        self.dropout = dropout
        # The layer's own policy, as in Residual: a float32 dropout would cast
        # a bfloat16 stream back to float32.
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="dropout")

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        if self.positions == "learned":
            self.position_embedding = self.add_weight(
                name="position_embedding",
                shape=(self.max_length, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        else:
            # Not a weight: nothing to train or save, rebuilt identically on load.
            self.position_table = ops.convert_to_tensor(
                sinusoidal_table(self.max_length, self.hidden_dim, self.sinusoidal_layout)
            )
        self.built = True

    @property
    def embeddings(self):
        """The (V, D) token embedding matrix, for tied output projections."""
        return self.token_embedding.embeddings

    def call(self, inputs, start_index=0, reverse=False):
        if reverse:
            # The matmul in the compute dtype (bfloat16 under mixed_bfloat16),
            # float32 logits for the softmax, like the untied OutputProjection.
            hidden = ops.cast(inputs, self.compute_dtype)  # (B, L, D)
            table = ops.cast(self.embeddings, self.compute_dtype)  # (V, D)
            # One 2-D matmul over all B*L positions. A (B, L, D) x (D, V)
            # matmul broadcasts the table over B, and TensorFlow's gradient
            # then computes one (D, V) table gradient per sequence, (B, D, V),
            # and sums them: 940 MiB at B=240 on the Multi30k recipe, a
            # different size for every batch shape, held by the allocator's
            # pool for the rest of the run (docs/traps.md, trap 15).
            batch, length = ops.shape(hidden)[0], ops.shape(hidden)[1]
            logits = tf.matmul(
                ops.reshape(hidden, (-1, self.hidden_dim)), table, transpose_b=True
            )  # (B*L, V)
            logits = ops.reshape(logits, (batch, length, self.vocabulary_size))  # (B, L, V)
            return ops.cast(logits, "float32")
        length = ops.shape(inputs)[1]
        checks = self._check_length(length, start_index)
        tokens = self.token_embedding(inputs)  # (B, L, D)
        tokens = tokens * ops.cast(self.scale, tokens.dtype)
        table = (
            self.position_embedding
            if self.positions == "learned"
            else self.position_table
        )
        # The slice must wait for the check, or it fails first with a message
        # that does not name `max_length`.
        with tf.control_dependencies(checks):
            positions = ops.slice(
                table, (start_index, 0), (length, self.hidden_dim)
            )  # (L, D)
        return self.dropout_layer(tokens + ops.cast(positions, tokens.dtype)[None, :, :])

    def _check_length(self, length, start_index):
        message = (
            f"{self.name}: sequence longer than `max_length`={self.max_length} "
            "tokens; shorten or truncate the input, or build the model with a "
            "larger `max_length`"
        )
        if isinstance(length, int) and isinstance(start_index, int):
            if start_index + length > self.max_length:
                raise ValueError(f"{message} (received {start_index + length})")
            return []
        # Dynamic length (inside tf.function): checked when the graph runs.
        # XLA compiles asserts away, but the position slice still fails there.
        return [tf.debugging.assert_less_equal(
            tf.cast(start_index, "int32") + tf.cast(length, "int32"),
            self.max_length,
            message=message,
        )]

    def compute_mask(self, inputs, mask=None):
        if "float" in str(inputs.dtype):  # reverse call: keep the hidden states' mask
            return mask
        return masks.padding_mask(inputs)

    def compute_output_spec(self, inputs, start_index=0, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.vocabulary_size), "float32")
        return keras.KerasTensor((*inputs.shape, self.hidden_dim), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "max_length": self.max_length,
                "positions": self.positions,
                "scale_embeddings": self.scale_embeddings,
                "sinusoidal_layout": self.sinusoidal_layout,
                "dropout": self.dropout,
            }
        )
        return config
