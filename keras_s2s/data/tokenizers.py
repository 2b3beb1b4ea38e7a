"""SentencePiece tokenizers, trained in Python and applied in the TF graph.

Training uses the `sentencepiece` library; tokenizing and detokenizing use
`tensorflow_text.SentencepieceTokenizer` built from the serialized model, so
they are graph ops that tf.data, `tf.function` and a SavedModel served by TF
Serving can run (TF Serving links tf-text ops, KNOWN_TRAPS 8; no
`py_function`). `Tokenizer` is a `tf.Module`, so a SavedModel or
`ExportArchive` that holds one tracks its SentencePiece resource
(KNOWN_TRAPS 7).

Every model in the project uses the same special ids, fixed at training:

    PAD_ID = 0    "<pad>"  padding (defined with the masks, layers/masks.py, which skip it)
    UNK_ID = 1    "<unk>"  characters outside the vocabulary
    START_ID = 2  "<s>"    first decoder input
    END_ID = 3    "</s>"   last label; decoding stops there

`tokenize` adds neither START nor END: `pipeline.decoder_io` places them.

`VocabularyTokenizer` is the other layout, that of Marian / OPUS-MT
checkpoints: SentencePiece segments the text into pieces, and the ids come
from a separate piece vocabulary (`vocabulary.json`, in keras_s2s id order,
written by `keras_s2s.pretrained.marian`), with END appended to the source.

Shape legend: N strings, L token positions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2
from tensorflow_text.python.ops import sentencepiece_tokenizer as tf_text_sentencepiece

from keras_s2s.checks import check_choice, check_number_in, check_positive_int
from keras_s2s.config import TOKENIZER_TYPES
from keras_s2s.data import corpus as corpus_lib
from keras_s2s.layers.masks import PAD_ID
from keras_s2s.run_dir import (
    SOURCE_SENTENCEPIECE_FILE,
    TARGET_SENTENCEPIECE_FILE,
    VOCABULARY_FILE,
)

UNK_ID = 1
START_ID = 2
END_ID = 3
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
# A leading ">>code<<" (Marian's target-language token), up to the first "<<".
_LANGUAGE_CODE = r"(?s)^(>>.*?<<)(.*)$"

# Trainer options that fix the special ids or the input; a caller setting
# them through `sentencepiece_options` would break the contract above.
_RESERVED_OPTIONS = {
    "pad_id", "unk_id", "bos_id", "eos_id", "pad_piece", "unk_piece",
    "bos_piece", "eos_piece", "input", "model_prefix", "model_writer",
    "sentence_iterator", "vocab_size", "model_type", "character_coverage",
    "input_sentence_size",
}


class _SentencepieceModel(tf.saved_model.experimental.TrackableResource):
    """The SentencePiece model as a resource that survives kernel-cache resets.

    tf-text's own resource is owned by the kernel of the op that creates it,
    and the eager kernel cache is emptied by `tf.random.set_seed`,
    `keras.utils.set_random_seed` and `keras.backend.clear_session`: every
    tokenizer made before such a call then fails with "Resource
    .../_0_SentencepieceOp/... does not exist" (tensorflow/text#570, #802).
    Given a `shared_name`, the op keeps the resource in the resource manager
    instead, where a cache reset does not reach it. The name is a hash of
    the model, so identical models share one resource (loading the same file
    twice adds nothing); resources live until the process ends.
    """

    def __init__(self, model_proto: bytes):
        super().__init__()
        self._model_proto = model_proto
        digest = hashlib.sha256(model_proto).hexdigest()[:32]
        self._shared_name = f"keras_s2s_sentencepiece_{digest}"
        _ = self.resource_handle  # creates the resource now

    def _create_resource(self):
        return tf_text_sentencepiece.gen_sentencepiece_tokenizer.sentencepiece_op(
            model=self._model_proto, shared_name=self._shared_name
        )


class Tokenizer(tf.Module):
    """A SentencePiece model whose tokenize/detokenize are TensorFlow ops.

    Args:
        model_proto: a serialized SentencePiece `ModelProto` (the bytes of a
            `.model` file) using the special ids of this module.
        name: `tf.Module` name.

    Example:
    >>> tokenizer = Tokenizer.load("tokenizers/shared.model")
    >>> ids = tokenizer.tokenize(tf.constant(["A dog runs."]))  # ragged (1, None)
    >>> tokenizer.detokenize(ids)
    <tf.Tensor: shape=(1,), dtype=string, numpy=array([b'A dog runs.'], dtype=object)>
    """

    def __init__(self, model_proto: bytes, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(model_proto, bytes):
            raise TypeError(
                "`model_proto` must be the bytes of a SentencePiece .model file; "
                f"received {type(model_proto).__name__}"
            )
        processor = spm.SentencePieceProcessor(model_proto=model_proto)
        found = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
        if found != (PAD_ID, UNK_ID, START_ID, END_ID):
            raise ValueError(
                "the SentencePiece model must use pad_id=0, unk_id=1, bos_id=2, "
                "eos_id=3 (keras_s2s PAD_ID, UNK_ID, START_ID, END_ID); received "
                "pad_id={}, unk_id={}, bos_id={}, eos_id={}. Train it with "
                "`train_tokenizers`, or pass those ids to SentencePieceTrainer".format(*found)
            )
        self._model_proto = model_proto
        self.vocabulary_size = processor.get_piece_size()
        # An attribute of this tf.Module, so its model resource is tracked.
        self._sentencepiece = tf_text.SentencepieceTokenizer(
            model=model_proto, out_type=tf.int32
        )
        # Swapped for a resource that `set_random_seed` cannot destroy (see
        # `_SentencepieceModel`); tests/data pin this against tf-text upgrades.
        self._sentencepiece._model_resource = _SentencepieceModel(model_proto)

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._model_proto

    def tokenize(self, strings) -> tf.RaggedTensor:
        """Strings (N,) -> int32 ids, ragged (N, None), without START or END."""
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank != 1:
            raise ValueError(
                f"`strings` must be a vector (N,) of strings; received shape {strings.shape}"
            )
        return self._sentencepiece.tokenize(strings)  # (N, None)

    def detokenize(self, ids) -> tf.Tensor:
        """Ids (N, L), dense or ragged -> strings (N,).

        Each row is read up to its first END_ID; PAD_ID and START_ID are
        dropped, so decoder outputs (START y1 .. yn END PAD ..) and labels
        both detokenize to the text. Ids outside the vocabulary (a model
        with a padded output layer can emit them) become UNK, which
        SentencePiece spells " ⁇ ".
        """
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=PAD_ID)
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)  # (N, L)
        if ids.shape.rank != 2:
            raise ValueError(f"`ids` must have shape (N, L); received shape {ids.shape}")
        in_vocabulary = (ids >= 0) & (ids < self.vocabulary_size)
        ids = tf.where(in_vocabulary, ids, UNK_ID)
        # True from the first END onwards (the END included).
        ended = tf.cumsum(tf.cast(ids == END_ID, tf.int32), axis=1) > 0
        keep = ~ended & (ids != PAD_ID) & (ids != START_ID)
        return self._sentencepiece.detokenize(tf.ragged.boolean_mask(ids, keep))

    def id_to_piece(self, ids) -> list[str]:
        """Ids -> their SentencePiece pieces, for display (alignment plots)."""
        pieces = self._sentencepiece.id_to_string(tf.constant(list(ids), tf.int32))
        return [piece.decode("utf-8") for piece in pieces.numpy()]

    def save(self, directory: str | os.PathLike, name: str) -> str:
        """Writes `<name>.model` and `<name>.vocab` (piece<TAB>score lines).

        Returns:
            The path of the `.model` file, which `Tokenizer.load` reads.
        """
        os.makedirs(directory, exist_ok=True)
        model_path = os.path.join(os.fspath(directory), f"{name}.model")
        _write_atomically(model_path, self._model_proto)
        processor = spm.SentencePieceProcessor(model_proto=self._model_proto)
        vocabulary = "".join(
            f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n"
            for i in range(self.vocabulary_size)
        )
        vocab_path = os.path.join(os.fspath(directory), f"{name}.vocab")
        _write_atomically(vocab_path, vocabulary.encode("utf-8"))
        return model_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Reads a `.model` file written by `save` (or by SentencePiece)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`path` must be a SentencePiece .model file; received path={os.fspath(path)!r}"
            )
        with open(path, "rb") as file:
            return cls(file.read())


class VocabularyTokenizer(tf.Module):
    """SentencePiece pieces looked up in a separate vocabulary, in TensorFlow ops.

    This is how Marian / OPUS-MT checkpoints tokenize (`MarianTokenizer`):
    the SentencePiece model only segments the text, and each piece's id is
    its index in a vocabulary shared by both sides; a piece missing from it
    is UNK. A leading language token `>>xx<<` is kept whole as one piece (the
    target-language tag of multilingual models). The segmentation runs in
    tensorflow-text and the lookup in a core `StaticHashTable`, both
    attributes of this `tf.Module`, so an export tracks them (KNOWN_TRAPS 7,
    8).

    Args:
        model_proto: serialized SentencePiece model that segments this side.
        pieces: the vocabulary, index = keras_s2s id; `pieces[PAD_ID]` and
            `pieces[START_ID]` are labels only (never looked up), the other
            ids follow this module's layout (UNK_ID, END_ID).
        append_end: add END to every tokenized sentence that has pieces (the
            source side of Marian models; the pipeline adds END to targets
            itself). An empty sentence stays empty, where MarianTokenizer
            gives `[</s>]`.
        name: `tf.Module` name.

    Example:
    >>> source, target = load_tokenizers("runs/opus-mt-en-de")
    >>> source.tokenize(tf.constant(["A dog runs."]))  # ragged (1, None), END last
    """

    def __init__(self, model_proto: bytes, pieces, *, append_end: bool, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(model_proto, bytes):
            raise TypeError(
                "`model_proto` must be the bytes of a SentencePiece model; "
                f"received {type(model_proto).__name__}"
            )
        pieces = [str(piece) for piece in pieces]
        if len(pieces) <= END_ID:
            raise ValueError(
                f"`pieces` must hold at least the {END_ID + 1} special ids; received "
                f"{len(pieces)} pieces"
            )
        self._model_proto = model_proto
        self._pieces = pieces
        self.append_end = bool(append_end)
        self.vocabulary_size = len(pieces)
        spm.SentencePieceProcessor(model_proto=model_proto)  # fails early on bytes that are no model
        # Looked up: every id but PAD and START, which text never produces.
        # A piece listed twice keeps its lowest id (as a dict built in order).
        lookup = {}
        for index, piece in enumerate(pieces):
            if index not in (PAD_ID, START_ID):
                lookup.setdefault(piece, index)
        self._piece_ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(lookup), tf.string),
                tf.constant(list(lookup.values()), tf.int32),
            ),
            default_value=UNK_ID,
        )
        # Detokenizing joins the pieces of the ids with this side's model, as
        # MarianTokenizer.decode does (a piece the model lacks keeps its text).
        self._piece_strings = tf.constant(pieces, tf.string)  # (V,)
        self._segmenter = tf_text.SentencepieceTokenizer(model=model_proto, out_type=tf.string)
        self._segmenter._model_resource = _SentencepieceModel(model_proto)

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._model_proto

    @property
    def pieces(self) -> list[str]:
        """The vocabulary: piece of every id."""
        return list(self._pieces)

    def tokenize(self, strings) -> tf.RaggedTensor:
        """Strings (N,) -> int32 ids, ragged (N, None); END last if `append_end`."""
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank != 1:
            raise ValueError(
                f"`strings` must be a vector (N,) of strings; received shape {strings.shape}"
            )
        has_code = tf.strings.regex_full_match(strings, _LANGUAGE_CODE)  # (N,)
        code = tf.strings.regex_replace(strings, _LANGUAGE_CODE, r"\1")  # (N,)
        text = tf.where(has_code, tf.strings.regex_replace(strings, _LANGUAGE_CODE, r"\2"), strings)
        pieces = self._segmenter.tokenize(text)  # (N, None)
        code_pieces = tf.ragged.boolean_mask(code[:, None], has_code[:, None])  # (N, 0 or 1)
        pieces = tf.concat([code_pieces, pieces], axis=1)  # (N, None)
        ids = tf.ragged.map_flat_values(self._piece_ids.lookup, pieces)  # (N, None)
        if self.append_end:
            # Not after an empty sentence: it stays empty (no ids), so that
            # serving answers "" for it as for every keras_s2s model.
            end = tf.fill([tf.shape(strings)[0], 1], tf.constant(END_ID, tf.int32))  # (N, 1)
            end = tf.ragged.boolean_mask(end, (ids.row_lengths() > 0)[:, None])  # (N, 0 or 1)
            ids = tf.concat([ids, end], axis=1)
        return ids

    def detokenize(self, ids) -> tf.Tensor:
        """Ids (N, L), dense or ragged -> strings (N,), as `MarianTokenizer.decode`.

        Each row is read up to its first END; the special ids (PAD, START,
        UNK, as `decode(skip_special_tokens=True)` drops `<unk>` too) and
        ids outside the vocabulary are dropped, and the pieces of the rest
        are joined by this side's SentencePiece model.
        """
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=PAD_ID)
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int32)  # (N, L)
        if ids.shape.rank != 2:
            raise ValueError(f"`ids` must have shape (N, L); received shape {ids.shape}")
        ended = tf.cumsum(tf.cast(ids == END_ID, tf.int32), axis=1) > 0
        keep = ~ended & (ids > END_ID) & (ids < self.vocabulary_size)  # (N, L)
        kept = tf.ragged.boolean_mask(ids, keep)  # (N, None)
        pieces = tf.ragged.map_flat_values(tf.gather, self._piece_strings, kept)  # (N, None)
        return self._segmenter.detokenize(pieces)

    def id_to_piece(self, ids) -> list[str]:
        """Ids -> their pieces, for display (alignment plots)."""
        return [self._pieces[int(i)] if 0 <= int(i) < len(self._pieces) else self._pieces[UNK_ID]
                for i in ids]


def save_vocabulary_tokenizers(
    directory: str | os.PathLike,
    source_model_proto: bytes,
    target_model_proto: bytes,
    pieces,
) -> None:
    """Writes the VocabularyTokenizer layout: source.spm, target.spm, vocabulary.json.

    `load_tokenizers(directory)` then returns a source tokenizer that
    appends END and a target tokenizer that does not (Marian's convention).
    """
    os.makedirs(directory, exist_ok=True)
    _write_atomically(os.path.join(directory, SOURCE_SENTENCEPIECE_FILE), source_model_proto)
    _write_atomically(os.path.join(directory, TARGET_SENTENCEPIECE_FILE), target_model_proto)
    document = {"pieces": list(pieces), "source_appends_end": True}
    _write_atomically(
        os.path.join(directory, VOCABULARY_FILE),
        (json.dumps(document, ensure_ascii=False, indent=0) + "\n").encode("utf-8"),
    )


def _load_vocabulary_tokenizers(directory: str) -> tuple[VocabularyTokenizer, VocabularyTokenizer]:
    path = os.path.join(directory, VOCABULARY_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
        pieces = document["pieces"]
        source_appends_end = document["source_appends_end"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: expected a JSON object with `pieces` (a list) and "
            f"`source_appends_end`; could not read it ({error!r})"
        ) from None
    protos = []
    for name in (SOURCE_SENTENCEPIECE_FILE, TARGET_SENTENCEPIECE_FILE):
        model_path = os.path.join(directory, name)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"{path} needs {name} beside it; {model_path} is missing")
        with open(model_path, "rb") as file:
            protos.append(file.read())
    return (
        VocabularyTokenizer(protos[0], pieces, append_end=source_appends_end, name="source_tokenizer"),
        VocabularyTokenizer(protos[1], pieces, append_end=False, name="target_tokenizer"),
    )


def train_tokenizers(
    corpus,
    directory: str | os.PathLike,
    *,
    vocabulary_size: int = 8000,
    shared: bool = False,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    max_sentences: int | None = None,
    seed: int = 0,
    **sentencepiece_options,
) -> tuple[Tokenizer, Tokenizer]:
    """Trains SentencePiece tokenizers on a parallel corpus and saves them.

    The corpus is streamed once into sentence files in a temporary directory
    and SentencePiece trains from those, so it is never held in Python
    memory. Training is deterministic: same corpus and arguments, same model
    bytes.

    Args:
        corpus: a corpus spec for `corpus.read_corpus` (a TSV path, or a tuple
            of two line-aligned files), an iterable of `(source, target)`
            pairs, or a function returning such an iterable.
        directory: where the models go. Shared: `shared.model` and
            `shared.vocab`; separate: `source.model`/`.vocab` and
            `target.model`/`.vocab`. `load_tokenizers(directory)` reads either.
        vocabulary_size: pieces per model, the 4 special ones included.
            Exact by default (the model's embedding sizes come from it); with
            `hard_vocab_limit=False` SentencePiece may stop below it on small
            data, so read `Tokenizer.vocabulary_size` afterwards.
        shared: one model trained on both sides and used for both (useful
            when the languages share a script, and needed for tied
            embeddings), or one model per side.
        model_type: "unigram" or "bpe".
        character_coverage: share of characters the vocabulary must cover;
            1.0 keeps every character (right for small alphabets), rarer
            ones become UNK below it (e.g. 0.9995 for CJK).
        max_sentences: if set, SentencePiece trains on a seeded sample of
            this many sentences per model (`input_sentence_size`).
        seed: SentencePiece's random seed (used by the sampling).
        **sentencepiece_options: other `SentencePieceTrainer` options, e.g.
            `normalization_rule_name="identity"`; those fixing the special
            ids or the input are refused.

    Returns:
        `(source_tokenizer, target_tokenizer)`; with `shared=True` it is the
        same `Tokenizer` twice.

    Raises:
        ValueError: on invalid arguments, an empty corpus, or a vocabulary
            size the data cannot fill (the message says the largest it can,
            e.g. about 440 per side and 900 shared for the built-in corpus).
        FileExistsError: `directory` already holds tokenizers of the other
            layout (shared vs separate), which would make loading ambiguous.
    """
    check_positive_int("vocabulary_size", vocabulary_size)
    if vocabulary_size <= len(SPECIAL_PIECES):
        raise ValueError(
            f"`vocabulary_size` must exceed the {len(SPECIAL_PIECES)} special pieces; "
            f"received vocabulary_size={vocabulary_size}"
        )
    check_choice("model_type", model_type, TOKENIZER_TYPES)
    check_number_in("character_coverage", character_coverage, "(0, 1]")
    if max_sentences is not None:
        check_positive_int("max_sentences", max_sentences)
    reserved = sorted(_RESERVED_OPTIONS & set(sentencepiece_options))
    if reserved:
        raise ValueError(
            f"`sentencepiece_options` may not set {reserved}: they are arguments of "
            "`train_tokenizers` or fixed by keras_s2s"
        )
    names = ("shared",) if shared else ("source", "target")
    other_layout = ("source", "target") if shared else ("shared",)
    stale = [
        f"{name}.model"
        for name in other_layout
        if os.path.exists(os.path.join(os.fspath(directory), f"{name}.model"))
    ]
    if stale:
        raise FileExistsError(
            f"`directory` {os.fspath(directory)!r} already holds {stale} from a "
            f"{'separate' if shared else 'shared'}-vocabulary training; remove "
            "them or use another directory, so that `load_tokenizers` is unambiguous"
        )

    options = dict(
        vocab_size=vocabulary_size,
        model_type=model_type,
        character_coverage=character_coverage,
        input_sentence_size=max_sentences or 0,
        shuffle_input_sentence=True,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=START_ID, eos_id=END_ID,
        pad_piece=SPECIAL_PIECES[PAD_ID], unk_piece=SPECIAL_PIECES[UNK_ID],
        bos_piece=SPECIAL_PIECES[START_ID], eos_piece=SPECIAL_PIECES[END_ID],
        # One thread, so that the pieces cannot depend on how the work is
        # split between threads; this project's corpora train in seconds.
        num_threads=1,
        minloglevel=2,  # SentencePiece's INFO log is hundreds of lines
    )
    options.update(sentencepiece_options)
    spm.set_random_generator_seed(seed)

    with tempfile.TemporaryDirectory(prefix="keras_s2s_spm_") as scratch:
        source_file, target_file = _write_sentence_files(corpus, scratch)
        inputs = {
            "shared": [source_file, target_file],
            "source": [source_file],
            "target": [target_file],
        }
        tokenizers = {}
        for name in names:
            model_proto = _train_one(inputs[name], name, options)
            tokenizers[name] = Tokenizer(model_proto, name=f"{name}_tokenizer")
            tokenizers[name].save(directory, name)
    if shared:
        return tokenizers["shared"], tokenizers["shared"]
    return tokenizers["source"], tokenizers["target"]


def load_tokenizers(directory: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    """Loads what `train_tokenizers` saved: `(source_tokenizer, target_tokenizer)`.

    A directory with `shared.model` gives the same `Tokenizer` twice; one
    with `source.model` and `target.model` gives two; one with
    `vocabulary.json` (an imported Marian model) gives two
    `VocabularyTokenizer`s.
    """
    def path(name):
        return os.path.join(os.fspath(directory), f"{name}.model")

    has = {name: os.path.isfile(path(name)) for name in ("shared", "source", "target")}
    if os.path.isfile(os.path.join(os.fspath(directory), VOCABULARY_FILE)):
        if any(has.values()):
            raise ValueError(
                f"`directory` {os.fspath(directory)!r} holds both {VOCABULARY_FILE} and "
                "SentencePiece .model tokenizers; keep one layout"
            )
        return _load_vocabulary_tokenizers(os.fspath(directory))
    if has["shared"] and (has["source"] or has["target"]):
        raise ValueError(
            f"`directory` {os.fspath(directory)!r} holds both shared.model and "
            "source.model/target.model; keep one layout"
        )
    if has["shared"]:
        tokenizer = Tokenizer.load(path("shared"))
        return tokenizer, tokenizer
    if has["source"] and has["target"]:
        return Tokenizer.load(path("source")), Tokenizer.load(path("target"))
    raise FileNotFoundError(
        f"`directory` {os.fspath(directory)!r} must hold shared.model, or "
        "source.model and target.model (as written by `train_tokenizers`)"
    )


def _pairs(corpus) -> Iterable[tuple[str, str]]:
    if corpus_lib.is_corpus_spec(corpus):
        return corpus_lib.read_corpus(corpus)
    if callable(corpus):
        return corpus()
    return corpus


def _write_sentence_files(corpus, directory: str) -> tuple[str, str]:
    """Streams the corpus into one sentence-per-line file per side."""
    paths = os.path.join(directory, "source.txt"), os.path.join(directory, "target.txt")
    count = 0
    with open(paths[0], "w", encoding="utf-8") as source_file, open(
        paths[1], "w", encoding="utf-8"
    ) as target_file:
        for source, target in _pairs(corpus):
            # Line breaks inside a sentence would split it in the training file.
            source_file.write(_one_line(source) + "\n")
            target_file.write(_one_line(target) + "\n")
            count += 1
    if not count:
        raise ValueError("`corpus` has no sentence pairs to train a tokenizer on")
    return paths


def _one_line(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return " ".join(text.splitlines())


def _train_one(input_files: list[str], name: str, options: dict) -> bytes:
    """Trains one model; rephrases SentencePiece's vocabulary-size errors."""
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(input=input_files, model_writer=writer, **options)
    except RuntimeError as error:
        message = str(error)
        text = {"shared": "source and target text", "source": "source text",
                "target": "target text"}[name]
        size = options["vocab_size"]
        too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
        if too_high:
            raise ValueError(
                f"`vocabulary_size`={size} is too large for the {text}: "
                f"SentencePiece can build at most {too_high.group(2)} pieces from it. "
                f"Pass vocabulary_size<={too_high.group(2)}, or more text"
            ) from None
        too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
        if too_low:
            needed = int(too_low.group(2))
            raise ValueError(
                f"`vocabulary_size`={size} is too small for the {text}: its "
                f"{needed - len(SPECIAL_PIECES)} characters (at character_coverage="
                f"{options['character_coverage']}) and the {len(SPECIAL_PIECES)} "
                f"special pieces need vocabulary_size>={needed}. Pass a larger "
                "vocabulary_size or a lower character_coverage"
            ) from None
        raise
    # The model records its training inputs: here random temporary paths,
    # which would make the bytes of two identical trainings differ.
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(writer.getvalue())
    model.trainer_spec.ClearField("input")
    return model.SerializeToString(deterministic=True)


def _write_atomically(path: str, data: bytes) -> None:
    # Readers (another process loading tokenizers) never see half a file.
    partial = path + ".partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)
