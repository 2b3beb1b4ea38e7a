"""`Translator`: strings in, strings out, with a run's tokenizers and model.

Shape legend: B batch, S source length, L generated length, T target length.
"""

from __future__ import annotations

import collections

import keras
import numpy as np
import tensorflow as tf

from keras_s2s import decoding
from keras_s2s.checks import check_positive_int
from keras_s2s.data.tokenizers import END_ID, PAD_ID, START_ID, UNK_ID, Tokenizer, load_tokenizers
from keras_s2s.models import TransformerParts, load_run_model
from keras_s2s.run_dir import CONFIG_FILE, RunDir


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


# Sentences per batch of `Translator.translate` (see `Translator.default_batch_size`).
DEFAULT_BATCH_SIZE = 64
XLA_BEAM_BATCH_SIZE = 8
NO_XLA_BATCH_SIZE = 512


def length_sorted_batches(lengths, batch_size):
    """Row indices grouped into batches of similar length, longest first.

    Args:
        lengths: (N,) ints, e.g. source pieces per sentence.
        batch_size: most rows per batch.

    Returns:
        list of int arrays; together a permutation of `range(N)`. The sort
        is stable, so equal lengths keep their input order.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")  # (N,)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_batch(encoder_tokens, batch_size):
    """(B, S) -> (B', S): B rounded up to a power of two (at most `batch_size`).

    The added rows repeat the last row, so they stop when it stops and never
    make the search run longer; their outputs are to be dropped. With one
    shape per power of two, XLA compiles a bounded number of batch sizes
    (log2(batch_size) + 1) instead of one per remainder.
    """
    rows = encoder_tokens.shape[0]
    target = min(batch_size, 1 << max(rows - 1, 0).bit_length())
    if target <= rows:
        return encoder_tokens
    copies = np.repeat(encoder_tokens[-1:], target - rows, axis=0)  # (B' - B, S)
    return np.concatenate([encoder_tokens, copies], axis=0)


class Translator:
    """Translates sentences with a trained model.

    Args:
        model: a model made by `build_transformer` (or reloaded from `.keras`).
        source_tokenizer: tokenizes the input sentences.
        target_tokenizer: turns generated ids back into text.
        strategy: the default decoding strategy (`keras_s2s.decoding`
            `Greedy()`, `Beam(size, length_penalty)`, `Sampling(...)`).
        max_length: most generated tokens; by default the model's
            `max_length - 1` (one cache slot holds the start token).
        jit_compile: run the search under XLA (`uses_xla` says when that
            pays); None (the default) and False: without XLA, as the exported
            SavedModel and TF Serving run it.

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
        strategy: decoding.Strategy = decoding.DEFAULT_STRATEGY,
        max_length: int | None = None,
        jit_compile: bool | None = None,
    ):
        if jit_compile not in (None, True, False):
            raise ValueError(
                f"`jit_compile` must be True, False or None (per strategy); received {jit_compile!r}"
            )
        self.model = model
        self.jit_compile = jit_compile
        self.parts = TransformerParts.from_model(model)
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        decoding.check_strategy(strategy)
        self.strategy = strategy
        self.model_max_length = self.parts.source_embedding.max_length
        self.max_length = max_length or self.parts.target_embedding.max_length - 1
        # (strategy, B, S) of every search call, S as fed: under XLA each
        # distinct (strategy, B, S rounded up to 8) is one compilation.
        self.search_shapes = collections.Counter()

    @classmethod
    def from_run_dir(cls, run_dir: str, precision: str | None = None, **kwargs) -> "Translator":
        """Loads `model.keras` and the tokenizers of a training run directory.

        `precision` decodes under another dtype policy than the training's
        (see `load_run_model`), e.g. "float32" for a mixed_bfloat16 run.
        """
        run = RunDir(run_dir)
        model = load_run_model(run_dir, precision)
        config = run.read_model_config()
        run.require_tokenizers()
        source_tokenizer, target_tokenizer = load_tokenizers(run_dir)
        sizes = (source_tokenizer.vocabulary_size, target_tokenizer.vocabulary_size)
        if sizes != (config.source_vocabulary_size, config.target_vocabulary_size):
            raise ValueError(
                f"{run_dir}: the tokenizers' vocabulary sizes {sizes} do not match "
                f"{CONFIG_FILE} ({config.source_vocabulary_size}, {config.target_vocabulary_size})"
            )
        return cls(model, source_tokenizer, target_tokenizer, **kwargs)

    def encode_sources(self, sentences):
        """Sentences -> `(encoder ids int32 (B, S), empty bool (B,))`; see `prepare_sources`."""
        ids, empty = prepare_sources(
            self.source_tokenizer, tf.constant(list(sentences), tf.string), self.model_max_length
        )
        return ids.numpy(), empty.numpy()

    def translate_ids(self, encoder_tokens, strategy=None):
        """(B, S) ids -> (generated ids (B, L), scores (B,)); see `decoding.decode`."""
        strategy = self.strategy if strategy is None else strategy
        self.search_shapes[(strategy, *np.shape(encoder_tokens))] += 1
        ids, scores = decoding.decode(
            self.model,
            encoder_tokens,
            strategy,
            start_id=START_ID,
            end_id=END_ID,
            max_length=self.max_length,
            jit_compile=self.uses_xla(strategy),
        )
        return np.asarray(ids), np.asarray(scores)

    def uses_xla(self, strategy: decoding.Strategy) -> bool:
        """Whether `strategy` runs under XLA: only when `jit_compile=True`.

        Without XLA finished sentences leave the batch and no shape is
        compiled, so large batches pay. Measured on Multi30k test2016 (the
        recipe's model, 2-core CPU, bench/results/2026-12-05-multi30k-decode.json),
        the whole test set: 250 sentences/s (beam 5) and 536 (greedy)
        without XLA in batches of 512, against 128 and 193 under XLA. XLA
        pays for a stream of small requests once each shape is compiled:
        greedy, one sentence 7 ms against 27 (p50), requests of 32
        sentences 232 sentences/s against 114; but the first pass over the
        test set in requests of 32, which compiles, took 19 s against 9.
        """
        del strategy  # one rule for every strategy
        return bool(self.jit_compile)

    def default_batch_size(self, strategy: decoding.Strategy) -> int:
        """Sentences per batch when `translate` is not told: under XLA 8 for beam search, else 64; without XLA 512.

        Under XLA a batch runs until its slowest sentence stops, and each
        sentence brings K rows. Measured on Multi30k test2016 (beam 5, 2-core
        CPU, XLA), batches of 4, 8, 16, 32 and 64 sentences decoded about
        90, 90, 68, 48 and 45 sentences/s; greedy search was as fast at 16 as
        at 64. Without XLA finished sentences leave the batch, so a large
        batch costs no waiting and spreads each step's many small ops over
        more rows: beam 5 decoded 118, 153, 172, 234 and 300 sentences/s at
        32, 64, 128, 256 and 512 (one process, the second of two passes over
        the test set; `evaluate --batch-size` sets it).
        """
        if not self.uses_xla(strategy):
            return NO_XLA_BATCH_SIZE
        if strategy.rows_per_sentence > 1:
            return XLA_BEAM_BATCH_SIZE
        return DEFAULT_BATCH_SIZE

    def translate(
        self,
        sentences,
        strategy: decoding.Strategy | None = None,
        batch_size: int | None = None,
        return_attention: bool = False,
        progress=None,
    ):
        """Translates a list of sentences.

        The sentences are tokenized together, decoded in batches of similar
        source length (longest first, see `length_sorted_batches`) and
        returned in their input order: a batch's search runs until its
        slowest sentence stops, so mixing short and long sentences makes
        every short one wait, and padding them costs encoder work too.
        Under XLA a partial batch is padded to a power-of-two size by
        repeating one of its rows (`pad_batch`), so that XLA compiles for a
        bounded set of batch sizes; the copies' outputs are dropped.

        Args:
            sentences: list of str.
            strategy: overrides the default decoding strategy.
            batch_size: sentences decoded together; None: `default_batch_size`.
            return_attention: also return, per sentence, the last decoder
                layer's cross-attention (target pieces x source pieces,
                averaged over heads) for the produced translation.
            progress: optional callable, called with the number of
                sentences decoded so far after every batch.

        Returns:
            list of str; with `return_attention`, `(translations, alignments)`
            where each alignment is a dict with `weights` (T, S), `source`
            and `target` piece lists.
        """
        sentences = list(sentences)
        strategy = self.strategy if strategy is None else strategy
        batch_size = self.default_batch_size(strategy) if batch_size is None else batch_size
        check_positive_int("batch_size", batch_size)
        translations = [""] * len(sentences)
        alignments = [None] * len(sentences)
        if not sentences:
            return (translations, alignments) if return_attention else translations
        encoder_tokens, empty = self.encode_sources(sentences)  # (N, S), (N,)
        lengths = np.sum(encoder_tokens != PAD_ID, axis=1)  # (N,)
        done = 0
        for rows in length_sorted_batches(lengths, batch_size):
            batch = encoder_tokens[rows, : lengths[rows].max()]  # (B, S_batch)
            if self.uses_xla(strategy):
                batch = pad_batch(batch, batch_size)  # (B', S_batch), B' a power of 2 or batch_size
            ids, _ = self.translate_ids(batch, strategy)  # (B', L)
            ids = ids[: len(rows)]  # (B, L)
            texts = self.target_tokenizer.detokenize(tf.constant(ids)).numpy()
            for row, text in zip(rows, texts):
                translations[row] = "" if empty[row] else text.decode("utf-8")
            if return_attention:
                for row, alignment in zip(rows, self._alignments(batch[: len(rows)], ids)):
                    alignments[row] = alignment
            done += len(rows)
            if progress is not None:
                progress(done)
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
