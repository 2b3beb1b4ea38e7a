"""`build_transformer(config)`: the functional encoder-decoder model.

The model is `{"encoder_tokens": (B, S), "decoder_tokens": (B, T)} -> logits
(B, T, V)`. Its layers are named so that `TransformerParts.from_model`
finds them again in a built or reloaded model: training and incremental
decoding run the very same layers through the same two functions,
`encode` and `decode`.

Shape legend: B batch, S source length, T target length, D hidden dim,
V target vocabulary, L cache length, H heads, Dh head dim.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import keras
from keras import ops

from keras_s2s.config import ModelConfig, check_load_precision
from keras_s2s.layers.attention import GrowingCache
from keras_s2s.layers.decoder import DecoderLayer
from keras_s2s.layers.encoder import EncoderLayer
from keras_s2s.layers.logits_bias import LogitsBias
from keras_s2s.layers.masks import padding_mask
from keras_s2s.layers.output_projection import OutputProjection
from keras_s2s.layers.positional_embedding import PositionalEmbedding
from keras_s2s.run_dir import CONFIG_FILE, MODEL_FILE, RunDir

ENCODER_INPUT = "encoder_tokens"
DECODER_INPUT = "decoder_tokens"
SHARED_EMBEDDING = "shared_embedding"  # the layer's name when tie_embeddings="all"
LOGITS_BIAS = "final_logits_bias"  # the layer's name when final_logits_bias=True


@keras.saving.register_keras_serializable(package="keras_s2s")
class PaddingMask(keras.layers.Layer):
    """Token ids (B, L) -> bool (B, L), True at real tokens.

    A layer so that the functional graph carries the source padding mask as
    a tensor of its own, passed explicitly to every decoder layer.
    """

    def call(self, token_ids):
        return padding_mask(token_ids)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")


@dataclasses.dataclass
class TransformerParts:
    """The named layers of a Transformer, and the two passes over them."""

    source_embedding: PositionalEmbedding
    source_padding: PaddingMask
    encoder_layers: list[EncoderLayer]
    encoder_norm: keras.layers.Layer | None
    target_embedding: PositionalEmbedding
    decoder_layers: list[DecoderLayer]
    decoder_norm: keras.layers.Layer | None
    # An OutputProjection named "logits", or the target embedding called in
    # reverse (tied embeddings), then the LogitsBias named "final_logits_bias"
    # if the config has one: hidden (B, T, D) -> float32 logits (B, T, V).
    output_projection: Callable

    @classmethod
    def create(cls, config: ModelConfig) -> "TransformerParts":
        block_args = dict(
            num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim,
            dropout=config.dropout,
            norm_position=config.norm_position,
            layer_norm_epsilon=config.layer_norm_epsilon,
            activation=config.activation,
        )

        def final_norm(name):
            # Pre-norm stacks end un-normalized; post-norm layers already end
            # with a norm, so a second one would be redundant.
            if config.norm_position != "pre":
                return None
            return keras.layers.LayerNormalization(
                epsilon=config.layer_norm_epsilon, name=name
            )

        def embedding(vocabulary_size, name):
            return PositionalEmbedding(
                vocabulary_size,
                config.hidden_dim,
                config.max_length,
                positions=config.positions,
                scale_embeddings=config.scale_embeddings,
                sinusoidal_layout=config.sinusoidal_layout,
                dropout=config.dropout,
                name=name,
            )

        if config.tie_embeddings == "all":
            target_embedding = embedding(config.target_vocabulary_size, SHARED_EMBEDDING)
            source_embedding = target_embedding
        else:
            target_embedding = embedding(config.target_vocabulary_size, "target_embedding")
            source_embedding = embedding(config.source_vocabulary_size, "source_embedding")
        if config.tie_embeddings == "none":
            output_projection = OutputProjection(config.target_vocabulary_size, name="logits")
        else:
            output_projection = _tied_projection(
                target_embedding,
                LogitsBias(config.target_vocabulary_size, name=LOGITS_BIAS)
                if config.final_logits_bias
                else None,
            )
        return cls(
            source_embedding=source_embedding,
            source_padding=PaddingMask(name="source_padding_mask"),
            encoder_layers=[
                EncoderLayer(**block_args, name=f"encoder_layer_{i}")
                for i in range(config.num_encoder_layers)
            ],
            encoder_norm=final_norm("encoder_norm"),
            target_embedding=target_embedding,
            decoder_layers=[
                DecoderLayer(**block_args, name=f"decoder_layer_{i}")
                for i in range(config.num_decoder_layers)
            ],
            decoder_norm=final_norm("decoder_norm"),
            output_projection=output_projection,
        )

    @classmethod
    def from_model(cls, model: keras.Model) -> "TransformerParts":
        """Finds the layers of a model made by `build_transformer` (or reloaded)."""
        names = {layer.name: layer for layer in model.layers}

        def numbered(prefix):
            found = []
            while f"{prefix}_{len(found)}" in names:
                found.append(names[f"{prefix}_{len(found)}"])
            return found

        try:
            if SHARED_EMBEDDING in names:
                source_embedding = target_embedding = names[SHARED_EMBEDDING]
            else:
                source_embedding = names["source_embedding"]
                target_embedding = names["target_embedding"]
            output_projection = names.get("logits") or _tied_projection(
                target_embedding, names.get(LOGITS_BIAS)
            )
            return cls(
                source_embedding=source_embedding,
                source_padding=names["source_padding_mask"],
                encoder_layers=numbered("encoder_layer"),
                encoder_norm=names.get("encoder_norm"),
                target_embedding=target_embedding,
                decoder_layers=numbered("decoder_layer"),
                decoder_norm=names.get("decoder_norm"),
                output_projection=output_projection,
            )
        except KeyError as missing:
            raise ValueError(
                f"`model` was not built by keras_s2s.build_transformer: it has no "
                f"layer named {missing}; its layers are {sorted(names)}"
            ) from None

    def encode(self, encoder_tokens):
        """(B, S) ids -> encoder output (B, S, D) and source mask (B, S)."""
        source_mask = self.source_padding(encoder_tokens)  # (B, S)
        x = self.source_embedding(encoder_tokens)  # (B, S, D)
        for layer in self.encoder_layers:
            x = layer(x, mask=source_mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, source_mask

    def decode(
        self,
        decoder_tokens,
        encoder_output,
        source_mask,
        caches=None,
        cache_index=None,
    ):
        """Decoder stack and output projection.

        Args:
            decoder_tokens: (B, T) ids.
            encoder_output: (B, S, D).
            source_mask: (B, S) bool, passed explicitly to every layer.
            caches: optional `DecoderCache` for incremental decoding.
            cache_index: int scalar tensor, position of `decoder_tokens[:, 0]`.

        Returns:
            logits (B, T, V); with `caches`, `(logits, new_caches)`.
        """
        start_index = 0 if caches is None else cache_index
        x = self.target_embedding(decoder_tokens, start_index=start_index)  # (B, T, D)
        new_self_caches = []
        for i, layer in enumerate(self.decoder_layers):
            if caches is None:
                x = layer(x, encoder_output, context_mask=source_mask)
            else:
                x, self_cache = layer(
                    x,
                    encoder_output,
                    context_mask=source_mask,
                    self_attention_cache=caches.self_attention[i],
                    cache_index=cache_index,
                    cross_attention_cache=caches.cross_attention[i],
                )
                new_self_caches.append(self_cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        logits = self.output_projection(x)  # (B, T, V)
        if caches is None:
            return logits
        return logits, DecoderCache(tuple(new_self_caches), caches.cross_attention)

    def cross_attention_weights(self, encoder_tokens, decoder_tokens, layer=-1):
        """Teacher-forced cross-attention of one decoder layer, averaged over heads.

        Args:
            encoder_tokens: (B, S) ids.
            decoder_tokens: (B, T) ids, `[START] y1 ..`.
            layer: which decoder layer (default: the last).

        Returns:
            float (B, T, S); row t is where target position t looked.
        """
        encoder_output, source_mask = self.encode(encoder_tokens)
        target_mask = padding_mask(decoder_tokens)
        x = self.target_embedding(decoder_tokens)  # (B, T, D)
        chosen = range(len(self.decoder_layers))[layer]
        for i, decoder_layer in enumerate(self.decoder_layers[: chosen + 1]):
            if i == chosen:
                weights = decoder_layer.cross_attention_weights(
                    x, encoder_output, inputs_mask=target_mask, context_mask=source_mask
                )  # (B, H, T, S)
                return ops.mean(weights, axis=1)
            x = decoder_layer(
                x, encoder_output, inputs_mask=target_mask, context_mask=source_mask
            )

    def initial_cache(self, encoder_output, max_length, growing=False):
        """An empty self-attention cache and the cross-attention keys/values.

        Args:
            encoder_output: (B, S, D).
            max_length: L, how many target positions the cache holds.
            growing: a `GrowingCache` per layer, with no positions yet, instead
                (`max_length` is then unused).
        """
        batch_size = ops.shape(encoder_output)[0]
        return DecoderCache(
            self_attention=tuple(
                GrowingCache(*layer.initial_self_attention_cache(batch_size, 0, encoder_output.dtype))
                if growing
                else layer.initial_self_attention_cache(batch_size, max_length, encoder_output.dtype)
                for layer in self.decoder_layers
            ),
            cross_attention=tuple(
                layer.compute_cross_attention_cache(encoder_output)
                for layer in self.decoder_layers
            ),
        )


def _tied_projection(embedding, logits_bias=None):
    """Hidden (B, T, D) -> logits (B, T, V) against the embedding matrix, plus an optional bias."""
    project = functools.partial(embedding, reverse=True)
    if logits_bias is None:
        return project
    return lambda hidden: logits_bias(project(hidden))


@dataclasses.dataclass
class DecoderCache:
    """Per decoder layer: self-attention 2 x (B, H, L, Dh) and cross-attention 2 x (B, H, S, Dh), heads-major."""

    self_attention: tuple
    cross_attention: tuple


def build_transformer(config: ModelConfig) -> keras.Model:
    """Builds the functional encoder-decoder Transformer.

    Args:
        config: a `ModelConfig`.

    Returns:
        A `keras.Model` with inputs `encoder_tokens` (B, S) and
        `decoder_tokens` (B, T), int32 with pad id 0, and float32 logits
        (B, T, target_vocabulary_size) whose Keras mask is
        `decoder_tokens != 0`, so compiled losses and metrics skip padding.

    Example:
    >>> model = build_transformer(ModelConfig(source_vocabulary_size=100,
    ...                                       target_vocabulary_size=120))
    >>> model({"encoder_tokens": np.array([[5, 6, 0]]),
    ...        "decoder_tokens": np.array([[1, 7]])}).shape
    (1, 2, 120)
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"`config` must be a keras_s2s.ModelConfig; received {type(config).__name__}"
        )
    parts = TransformerParts.create(config)
    encoder_tokens = keras.Input(shape=(None,), dtype="int32", name=ENCODER_INPUT)
    decoder_tokens = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT)
    encoder_output, source_mask = parts.encode(encoder_tokens)
    logits = parts.decode(decoder_tokens, encoder_output, source_mask)
    return keras.Model(
        inputs={ENCODER_INPUT: encoder_tokens, DECODER_INPUT: decoder_tokens},
        outputs=logits,
        name="transformer",
    )


def load_run_model(run_dir: str, precision: str | None = None) -> keras.Model:
    """Loads a run directory's `model.keras`, optionally under another dtype policy.

    Args:
        run_dir: a trained run (model.keras and config.json).
        precision: None keeps the policy the model was trained with; one of
            `LOAD_PRECISIONS` rebuilds the model from config.json under that
            policy and copies the weights in. Mixed-precision variables are
            float32, so this loses nothing: a model trained in mixed_bfloat16
            decodes in float32 on a CPU without native bfloat16, and the
            other way round.
    """
    check_load_precision(precision)
    run = RunDir(run_dir)
    model = keras.saving.load_model(run.require(MODEL_FILE), compile=False)
    if precision is None:
        return model
    config = run.read_model_config()
    # The policy applies to layers created while it is set: only the rebuilt model's.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        rebuilt = build_transformer(config)
    finally:
        keras.config.set_dtype_policy(previous)
    # Both models come from the same config, so their weights line up one to one.
    saved, target = model.weights, rebuilt.weights
    mismatch = len(saved) != len(target) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(saved, target)
    )
    if mismatch:
        raise ValueError(
            f"`run_dir` {run_dir!r}: {CONFIG_FILE} does not describe {MODEL_FILE} "
            f"({len(target)} weights built from it, {len(saved)} saved), so it cannot be "
            f"rebuilt with precision={precision!r}; load it without `precision`"
        )
    rebuilt.set_weights(model.get_weights())
    return rebuilt
