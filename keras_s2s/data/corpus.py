"""Streaming readers for parallel corpora.

Two on-disk formats are read, both as strict UTF-8, one sentence pair per line:

* **aligned files**: `train.en` and `train.de`, line *i* of one translating
  line *i* of the other (Multi30k, WMT);
* **TSV**: `source<TAB>target` per line. Columns after the second are
  ignored, so files such as Tatoeba's `spa.txt`, whose newer versions carry
  an attribution third column, read unchanged. A tab inside a sentence is
  therefore impossible to express; no supported corpus has one.

The readers are generators: the corpus is never held in memory, which lets
`tf.data.Dataset.from_generator` stream it (see `pipeline.pairs_dataset`).

Every line is cleaned the same way: the line break (LF or CRLF) is removed,
a UTF-8 byte-order mark at the start of a file is removed, and each side is
stripped of surrounding whitespace. Inner whitespace is left alone.

Malformed input is an error (`CorpusError`, naming file and line), never a
guess: line counts that differ, a TSV line without a tab, invalid UTF-8.
Pairs that are well-formed but unusable are skipped *and counted* in a
`CorpusStats`, never silently:

* `skipped_empty`: a side is empty after stripping (a blank TSV line counts
  here too, so a trailing blank line is harmless);
* `skipped_too_long`: a side has more than `max_words` whitespace-separated
  words. Words, not characters, because they are comparable across scripts
  and close to the token lengths the model sees; the exact token-length
  limit is applied later, in the tf.data pipeline.

Errors are raised where they are found, while streaming: pairs before a bad
line have already been yielded when the error is raised.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator

Pair = tuple[str, str]

_BOM = "\ufeff"


class CorpusError(ValueError):
    """A corpus file is malformed: the message names the file and line."""


@dataclasses.dataclass
class CorpusStats:
    """Counts filled in by the readers while they stream.

    Attributes:
        read: pairs (lines) read, kept or not.
        kept: pairs yielded.
        skipped_empty: pairs dropped because a side was empty.
        skipped_too_long: pairs dropped because a side exceeded `max_words`.
    """

    read: int = 0
    kept: int = 0
    skipped_empty: int = 0
    skipped_too_long: int = 0

    def summary(self) -> str:
        """One line, e.g. `read 120, kept 117, skipped 2 empty, 1 too long`."""
        return (
            f"read {self.read}, kept {self.kept}, skipped "
            f"{self.skipped_empty} empty, {self.skipped_too_long} too long"
        )


def read_parallel_files(
    source_path: str | os.PathLike,
    target_path: str | os.PathLike,
    *,
    max_words: int | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Pair]:
    """Yields `(source, target)` from two line-aligned files.

    Args:
        source_path: one source sentence per line.
        target_path: the translation of line *i* of `source_path` on line *i*.
        max_words: if set, pairs with a side of more than this many
            whitespace-separated words are skipped (and counted).
        stats: a `CorpusStats` to fill in as pairs are read.

    Returns:
        A generator of `(source, target)` string pairs, stripped, both sides
        non-empty.

    Raises:
        FileNotFoundError: at the call, if a file does not exist.
        CorpusError: while iterating, if the files have different line
            counts or invalid UTF-8; raised when reached, after the pairs
            before it have been yielded.
    """
    # Arguments are checked now, not at the first `next()`, so that a typo
    # fails where it is written rather than deep inside a tf.data iterator.
    _check_max_words(max_words)
    _check_file("source_path", source_path)
    _check_file("target_path", target_path)
    stats = CorpusStats() if stats is None else stats
    return _parallel_pairs(source_path, target_path, max_words, stats)


def _parallel_pairs(source_path, target_path, max_words, stats) -> Iterator[Pair]:
    with open(source_path, "rb") as source_file, open(target_path, "rb") as target_file:
        # zip_longest rather than zip: zip would silently stop at the shorter file.
        lines = itertools.zip_longest(source_file, target_file)
        for line_number, (source_raw, target_raw) in enumerate(lines, start=1):
            if source_raw is None or target_raw is None:
                short, long = (
                    (source_path, target_path)
                    if source_raw is None
                    else (target_path, source_path)
                )
                raise CorpusError(
                    f"{os.fspath(short)} has fewer lines than {os.fspath(long)}: "
                    f"it ended after {line_number - 1} lines, where "
                    f"{os.fspath(long)} continues at line {line_number}; "
                    "the two files must be line-aligned translations"
                )
            source = _decode(source_raw, source_path, line_number).strip()
            target = _decode(target_raw, target_path, line_number).strip()
            pair = _keep((source, target), max_words, stats)
            if pair is not None:
                yield pair


def read_tsv(
    path: str | os.PathLike,
    *,
    max_words: int | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Pair]:
    """Yields `(source, target)` from `source<TAB>target` lines.

    Columns after the second are ignored (e.g. Tatoeba attribution). A blank
    line counts as a pair with empty sides: skipped and counted.

    Args:
        path: the TSV file.
        max_words: if set, pairs with a side of more than this many
            whitespace-separated words are skipped (and counted).
        stats: a `CorpusStats` to fill in as pairs are read.

    Returns:
        A generator of `(source, target)` string pairs, stripped, both sides
        non-empty.

    Raises:
        FileNotFoundError: at the call, if the file does not exist.
        CorpusError: while iterating, if a non-blank line has no tab or
            invalid UTF-8; raised when reached, after the pairs before it
            have been yielded.
    """
    _check_max_words(max_words)
    _check_file("path", path)
    stats = CorpusStats() if stats is None else stats
    return _tsv_pairs(path, max_words, stats)


def _tsv_pairs(path, max_words, stats) -> Iterator[Pair]:
    with open(path, "rb") as file:
        for line_number, raw in enumerate(file, start=1):
            line = _decode(raw, path, line_number)
            if not line.strip():
                pair = ("", "")
            else:
                columns = line.split("\t")
                if len(columns) < 2:
                    raise CorpusError(
                        f"{os.fspath(path)}:{line_number}: no tab separating "
                        f"source and target in {_preview(line)}; expected "
                        "`source<TAB>target` on every line"
                    )
                pair = (columns[0].strip(), columns[1].strip())
            pair = _keep(pair, max_words, stats)
            if pair is not None:
                yield pair


def is_corpus_spec(corpus: object) -> bool:
    """True if `corpus` names files: a TSV path, or a tuple of two paths.

    Only a *tuple* of exactly two paths is a file pair, so a list of
    sentence pairs is never mistaken for one.
    """
    paths = (str, os.PathLike)
    if isinstance(corpus, paths):
        return True
    return (
        isinstance(corpus, tuple)
        and len(corpus) == 2
        and all(isinstance(part, paths) for part in corpus)
    )


def read_corpus(
    spec: str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike],
    *,
    max_words: int | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Pair]:
    """One entry point for both formats: a TSV path or `(source_path, target_path)`.

    Args:
        spec: a TSV file, or a tuple of two line-aligned files.
        max_words: see `read_tsv` / `read_parallel_files`.
        stats: see `read_tsv` / `read_parallel_files`.

    Returns:
        The generator of `read_tsv` or `read_parallel_files`.

    Example:
    >>> stats = CorpusStats()
    >>> pairs = read_corpus(("train.en", "train.de"), max_words=50, stats=stats)
    """
    if not is_corpus_spec(spec):
        raise TypeError(
            "`spec` must be a TSV path or a tuple (source_path, target_path); "
            f"received spec={spec!r:.200}"
        )
    if isinstance(spec, tuple):
        return read_parallel_files(*spec, max_words=max_words, stats=stats)
    return read_tsv(spec, max_words=max_words, stats=stats)


def _decode(raw: bytes, path, line_number: int) -> str:
    """Strict UTF-8 decoding of one line, without its LF or CRLF."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{os.fspath(path)}:{line_number}: invalid UTF-8 at byte "
            f"{error.start + 1} of the line ({error.reason}); the corpus must "
            "be UTF-8 encoded"
        ) from None
    if line_number == 1 and line.startswith(_BOM):
        line = line[len(_BOM):]
    return line.rstrip("\r\n")


def _keep(pair: Pair, max_words: int | None, stats: CorpusStats) -> Pair | None:
    """Counts `pair` in `stats`; returns it if kept, None if skipped."""
    stats.read += 1
    if not pair[0] or not pair[1]:
        stats.skipped_empty += 1
        return None
    if max_words is not None and max(len(side.split()) for side in pair) > max_words:
        stats.skipped_too_long += 1
        return None
    stats.kept += 1
    return pair


def _check_max_words(max_words) -> None:
    if max_words is not None and (
        isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1
    ):
        raise ValueError(
            f"`max_words` must be a positive integer or None; received "
            f"max_words={max_words!r}"
        )


def _check_file(name: str, path) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`{name}` must be an existing corpus file; received {name}={os.fspath(path)!r}"
        )


def _preview(line: str, limit: int = 40) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")
