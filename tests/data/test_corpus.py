import os
import re

import pytest

from keras_s2s.data.corpus import (
    CorpusError,
    CorpusStats,
    is_corpus_spec,
    read_corpus,
    read_parallel_files,
    read_tsv,
)
from tests.helpers import SHARED_DATA

MULTI30K = os.path.join(SHARED_DATA, "multi30k")


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def aligned(tmp_path, source: bytes, target: bytes):
    return write(tmp_path / "train.en", source), write(tmp_path / "train.de", target)


def test_parallel_files_strip_line_ends_whitespace_and_bom(tmp_path):
    source, target = aligned(
        tmp_path,
        "\ufeffA dog runs.\r\n  Two  cats sleep. \n".encode(),
        "Ein Hund läuft.\r\n\tZwei Katzen schlafen.\n".encode(),
    )
    stats = CorpusStats()
    assert list(read_parallel_files(source, target, stats=stats)) == [
        ("A dog runs.", "Ein Hund läuft."),
        ("Two  cats sleep.", "Zwei Katzen schlafen."),  # inner whitespace kept
    ]
    assert stats == CorpusStats(read=2, kept=2)


def test_last_line_without_newline_is_read(tmp_path):
    source, target = aligned(tmp_path, b"a\nb", b"x\ny")
    assert list(read_parallel_files(source, target)) == [("a", "x"), ("b", "y")]


def test_target_with_fewer_lines_names_both_files_and_line(tmp_path):
    source, target = aligned(tmp_path, b"1\n2\n3\n4\n5\n6\n7\n", b"1\n2\n3\n4\n5\n6\n")
    pairs = read_parallel_files(source, target)
    with pytest.raises(
        CorpusError,
        match=re.escape(
            f"{target} has fewer lines than {source}: it ended after 6 lines, "
            f"where {source} continues at line 7"
        ),
    ):
        list(pairs)


def test_source_with_fewer_lines_is_reported_too(tmp_path):
    source, target = aligned(tmp_path, b"1\n", b"1\n2\n")
    with pytest.raises(CorpusError, match=re.escape(f"{source} has fewer lines than {target}")):
        list(read_parallel_files(source, target))


def test_pairs_before_a_bad_line_are_streamed_first(tmp_path):
    # The reader is a generator: it does not read (or validate) ahead.
    source, target = aligned(tmp_path, b"a\nb\nc\n", b"x\ny\n")
    pairs = read_parallel_files(source, target)
    assert next(pairs) == ("a", "x")
    assert next(pairs) == ("b", "y")
    with pytest.raises(CorpusError, match="ended after 2 lines"):
        next(pairs)


@pytest.mark.parametrize("reader", ["parallel", "tsv"])
def test_invalid_utf8_names_file_line_and_byte(tmp_path, reader):
    bad = b"good line\nalso good\nabcd\xff rest\n"  # 0xff is the 5th byte of line 3
    if reader == "tsv":
        path = write(tmp_path / "file.tsv", bad.replace(b" ", b"\t"))
        pairs, where = read_tsv(path), path
    else:
        source, target = aligned(tmp_path, b"1\n2\n3\n", bad)
        pairs, where = read_parallel_files(source, target), target
    with pytest.raises(CorpusError, match=re.escape(f"{where}:3: invalid UTF-8 at byte 5")):
        list(pairs)


def test_tsv_reads_two_columns_and_ignores_the_rest(tmp_path):
    path = write(
        tmp_path / "spa.tsv",
        "Go.\tVe.\r\n Hi. \t Hola. \tCC-BY 2.0 (France) Attribution\textra\n".encode(),
    )
    assert list(read_tsv(path)) == [("Go.", "Ve."), ("Hi.", "Hola.")]


def test_tsv_line_without_tab_names_file_and_line(tmp_path):
    path = write(tmp_path / "file.tsv", b"a\tb\nc\td\ne\tf\nno tab here\n")
    with pytest.raises(
        CorpusError,
        match=re.escape(f"{path}:4: no tab separating source and target in 'no tab here'"),
    ):
        list(read_tsv(path))


def test_empty_sides_are_skipped_and_counted(tmp_path):
    path = write(tmp_path / "file.tsv", b"a\tb\n\tonly target\nonly source\t  \n\n   \nc\td\n")
    stats = CorpusStats()
    assert list(read_tsv(path, stats=stats)) == [("a", "b"), ("c", "d")]
    assert stats == CorpusStats(read=6, kept=2, skipped_empty=4)
    source, target = aligned(tmp_path, b"a\n\nc\n", b"x\ny\n \n")
    stats = CorpusStats()
    assert list(read_parallel_files(source, target, stats=stats)) == [("a", "x")]
    assert stats == CorpusStats(read=3, kept=1, skipped_empty=2)


def test_pairs_over_max_words_are_skipped_and_counted(tmp_path):
    path = write(
        tmp_path / "file.tsv",
        b"one two three\tuno dos tres\n"
        b"one two three four\tuno\n"  # source too long
        b"one\tuno dos tres cuatro\n",  # target too long
    )
    stats = CorpusStats()
    assert list(read_tsv(path, max_words=3, stats=stats)) == [("one two three", "uno dos tres")]
    assert stats == CorpusStats(read=3, kept=1, skipped_too_long=2)
    assert stats.summary() == "read 3, kept 1, skipped 0 empty, 2 too long"


@pytest.mark.parametrize("max_words", [0, -3, 2.5, True])
def test_max_words_must_be_a_positive_integer(tmp_path, max_words):
    path = write(tmp_path / "file.tsv", b"a\tb\n")
    with pytest.raises(ValueError, match=re.escape(f"received max_words={max_words!r}")):
        read_tsv(path, max_words=max_words)  # raised at the call, before iterating


def test_missing_file_is_reported_at_the_call(tmp_path):
    missing = str(tmp_path / "missing.de")
    source = write(tmp_path / "train.en", b"a\n")
    with pytest.raises(FileNotFoundError, match=re.escape(f"received target_path={missing!r}")):
        read_parallel_files(source, missing)


def test_read_corpus_dispatches_on_the_spec(tmp_path):
    tsv = write(tmp_path / "file.tsv", b"a\tb\n")
    source, target = aligned(tmp_path, b"c\n", b"d\n")
    assert list(read_corpus(tsv)) == [("a", "b")]
    assert list(read_corpus(tmp_path / "file.tsv")) == [("a", "b")]  # PathLike
    assert list(read_corpus((source, target))) == [("c", "d")]
    with pytest.raises(TypeError, match="`spec` must be a TSV path or a tuple"):
        read_corpus([source, target])  # a list is a list of pairs, not a spec


def test_is_corpus_spec_never_mistakes_pairs_for_paths():
    assert is_corpus_spec("a.tsv")
    assert is_corpus_spec(("a.en", "a.de"))
    assert not is_corpus_spec([("a", "b"), ("c", "d")])
    assert not is_corpus_spec((("a", "b"), ("c", "d")))


def test_first_lines_of_multi30k():
    source = os.path.join(MULTI30K, "train.en")
    target = os.path.join(MULTI30K, "train.de")
    if not (os.path.isfile(source) and os.path.isfile(target)):
        pytest.skip(f"Multi30k is not available at {MULTI30K}")
    pairs = read_parallel_files(source, target)
    first = [next(pairs) for _ in range(3)]
    pairs.close()  # closes the files without reading on
    assert first[0] == (
        "Two young, White males are outside near many bushes.",
        "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    )
    assert all(source and target for source, target in first)
