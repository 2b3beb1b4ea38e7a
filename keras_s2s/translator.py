"""`Translator`: strings in, strings out, with a run's tokenizers and model.

Shape legend: B batch, S source length, L generated length, T target length.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from keras_s2s import decoding
from keras_s2s.config import ModelConfig
from keras_s2s.data.tokenizers import END_ID, PAD_ID, START_ID, UNK_ID, Tokenizer, load_tokenizers
from keras_s2s.models import CONFIG_FILE, TransformerParts, load_run_model


def prepare_sources(tokenizer, sentences, max_length):
    """Sentences -> encoder ids, in TensorFlow ops (the SavedModel runs this too).

    Invalid UTF-8 bytes become U+FFFD (the tokenizer would fail the whole
    batch on them), sentences are truncated to `max_length` pieces, and a
    sentence with no pieces (empty, whitespace) gets one UNK so attention
    has a key; the caller replaces its output with "".

    Args:
        tokenizer: the source `Tokenizer`.
        sentences: tf.string (N,).
        max_length: the model's `max_length`.

    Returns:
        `(encoder_tokens int32 (N, S>=1), empty bool (N,))`.
    """
    text = tf.strings.unicode_transcode(
        sentences, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    pieces = tokenizer.tokenize(text)[:, :max_length]  # (N, None)
    empty = tf.equal(pieces.row_lengths(), 0)  # (N,)
    dense = pieces.to_tensor(PAD_ID)  # (N, S); S = 0 when every row is empty
    dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])  # (N, S>=1)
    first = tf.where(empty, tf.constant(UNK_ID, tf.int32), dense[:, 0])  # (N,)
    return tf.concat([first[:, None], dense[:, 1:]], axis=1), empty


class Translator:
    """Translates sentences with a trained model.

    Args:
        model: a model made by `build_transformer` (or reloaded from `.keras`).
        source_tokenizer: tokenizes the input sentences.
        target_tokenizer: turns generated ids back into text.
        beam_size: default beam size; 1 is greedy search.
        length_penalty: GNMT alpha of beam search.
        max_length: most generated tokens; by default the model's
            `max_length - 1` (one cache slot holds the start token).
        jit_compile: run the search under XLA (faster on CPU; the exported
            SavedModel runs without XLA, as TF Serving does).

    Example:
    >>> translator = Translator.from_run_dir("runs/builtin")
    >>> translator.translate(["the small dog sees a cat ."])
    """

    def __init__(
        self,
        model: keras.Model,
        source_tokenizer: Tokenizer,
        target_tokenizer: Tokenizer,
        *,
        beam_size: int = 4,
        length_penalty: float = 0.6,
        max_length: int | None = None,
        jit_compile: bool = True,
    ):
        self.model = model
        self.jit_compile = jit_compile
        self.parts = TransformerParts.from_model(model)
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.model_max_length = self.parts.source_embedding.max_length
        self.max_length = max_length or self.parts.target_embedding.max_length - 1

    @classmethod
    def from_run_dir(cls, run_dir: str, precision: str | None = None, **kwargs) -> "Translator":
        """Loads `model.keras` and the tokenizers of a training run directory.

        `precision` decodes under another dtype policy than the training's
        (see `load_run_model`), e.g. "float32" for a mixed_bfloat16 run.
        """
        model = load_run_model(run_dir, precision)
        config = ModelConfig.load(os.path.join(run_dir, CONFIG_FILE))
        source_tokenizer, target_tokenizer = load_tokenizers(run_dir)
        sizes = (source_tokenizer.vocabulary_size, target_tokenizer.vocabulary_size)
        if sizes != (config.source_vocabulary_size, config.target_vocabulary_size):
            raise ValueError(
                f"{run_dir}: the tokenizers' vocabulary sizes {sizes} do not match "
                f"config.json ({config.source_vocabulary_size}, {config.target_vocabulary_size})"
            )
        return cls(model, source_tokenizer, target_tokenizer, **kwargs)

    def encode_sources(self, sentences):
        """Sentences -> `(encoder ids int32 (B, S), empty bool (B,))`; see `prepare_sources`."""
        ids, empty = prepare_sources(
            self.source_tokenizer, tf.constant(list(sentences), tf.string), self.model_max_length
        )
        return ids.numpy(), empty.numpy()

    def translate_ids(self, encoder_tokens, beam_size=None):
        """(B, S) ids -> (generated ids (B, L), scores (B,) or None for greedy)."""
        beam_size = self.beam_size if beam_size is None else beam_size
        if beam_size == 1:
            ids = decoding.greedy_decode(
                self.model,
                encoder_tokens,
                start_id=START_ID,
                end_id=END_ID,
                max_length=self.max_length,
                jit_compile=self.jit_compile,
            )
            return np.asarray(ids), None
        ids, scores = decoding.beam_decode(
            self.model,
            encoder_tokens,
            start_id=START_ID,
            end_id=END_ID,
            max_length=self.max_length,
            beam_size=beam_size,
            length_penalty=self.length_penalty,
            jit_compile=self.jit_compile,
        )
        return np.asarray(ids), np.asarray(scores)

    def translate(
        self,
        sentences,
        beam_size: int | None = None,
        batch_size: int = 64,
        return_attention: bool = False,
    ):
        """Translates a list of sentences.

        Args:
            sentences: list of str.
            beam_size: overrides the default beam size (1 = greedy).
            batch_size: sentences decoded together.
            return_attention: also return, per sentence, the last decoder
                layer's cross-attention (target pieces x source pieces,
                averaged over heads) for the produced translation.

        Returns:
            list of str; with `return_attention`, `(translations, alignments)`
            where each alignment is a dict with `weights` (T, S), `source`
            and `target` piece lists.
        """
        sentences = list(sentences)
        translations, alignments = [], []
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start : start + batch_size]
            encoder_tokens, empty = self.encode_sources(chunk)  # (B, S), (B,)
            ids, _ = self.translate_ids(encoder_tokens, beam_size)  # (B, L)
            texts = self.target_tokenizer.detokenize(tf.constant(ids)).numpy()
            translations += [
                "" if blank else text.decode("utf-8") for text, blank in zip(texts, empty)
            ]
            if return_attention:
                alignments += self._alignments(encoder_tokens, ids)
        return (translations, alignments) if return_attention else translations

    def _alignments(self, encoder_tokens, ids):
        start = np.full((ids.shape[0], 1), START_ID, "int32")
        decoder_tokens = np.concatenate([start, ids], axis=1)[:, :-1] if ids.shape[1] else start
        weights = np.asarray(
            self.parts.cross_attention_weights(encoder_tokens, decoder_tokens)
        )  # (B, T, S)
        result = []
        for row in range(ids.shape[0]):
            source_ids = [int(i) for i in encoder_tokens[row] if i != PAD_ID]
            target_ids = [int(i) for i in ids[row] if i != PAD_ID]
            result.append(
                {
                    "weights": weights[row, : len(target_ids), : len(source_ids)],
                    "source": self.source_tokenizer.id_to_piece(source_ids),
                    "target": self.target_tokenizer.id_to_piece(target_ids),
                }
            )
        return result


def plot_attention(alignment: dict, path: str, title: str | None = None) -> str:
    """Draws one alignment from `translate(..., return_attention=True)` as a PNG heat map."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    weights = alignment["weights"]
    height, width = weights.shape
    figure, axes = plt.subplots(figsize=(1.0 + 0.45 * width, 1.0 + 0.4 * height))
    axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-9))
    axes.set_xticks(range(width), alignment["source"], rotation=60, ha="right")
    axes.set_yticks(range(height), alignment["target"])
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
