"""Multi30k inputs of the `multi30k-train` jobs: the data folder, the cached
SentencePiece model, piece lengths, and fairseq's binarized copy.

The data folder is an argument (`--data-dir`): Multi30k's `train.en`,
`train.de`, `val.en`, `val.de` (https://github.com/multi30k/dataset,
data/task1/raw, decompressed). Nothing here knows where it lies.

Caches live under the temporary folder, keyed by the files' path, size and
modification time and by every setting that changes their contents, so a
second run reuses them and a changed corpus or setting makes new ones:

    $TMPDIR/keras_s2s_bench_tokenizers/<key>/   keras_s2s tokenizers (shared.model)
    $TMPDIR/keras_s2s_bench_fairseq/<key>/      pieces as text, and fairseq's BIN dir

This module imports neither TensorFlow nor fairseq at module level: the
tokenizers are trained by keras_s2s (imported on a cache miss only), and
fairseq runs as commands of its own virtual environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

REQUIRED_FILES = ("train.en", "train.de", "val.en", "val.de")
SOURCE, TARGET = "en", "de"
SOURCE_URL = "https://github.com/multi30k/dataset (data/task1/raw)"
TOKENIZER_CACHE = "keras_s2s_bench_tokenizers"
FAIRSEQ_CACHE = "keras_s2s_bench_fairseq"
# fairseq's split names for ours.
FAIRSEQ_SPLITS = {"train": "train", "val": "valid"}


def missing_files(data_dir: str | None) -> list[str]:
    """The REQUIRED_FILES absent from `data_dir` (all of them when it is None or no folder)."""
    if not data_dir or not os.path.isdir(data_dir):
        return list(REQUIRED_FILES)
    return [name for name in REQUIRED_FILES
            if not os.path.isfile(os.path.join(data_dir, name))]


def skip_reason(data_dir: str | None) -> str | None:
    """Why the Multi30k jobs cannot run with `--data-dir data_dir`, or None when they can."""
    if not data_dir:
        return ("no --data-dir given: pass a Multi30k folder with "
                f"{', '.join(REQUIRED_FILES)} (from {SOURCE_URL})")
    if not os.path.isdir(data_dir):
        return f"--data-dir {data_dir!r} is not a folder"
    missing = missing_files(data_dir)
    if missing:
        return f"--data-dir {data_dir!r} lacks {', '.join(missing)} (from {SOURCE_URL})"
    return None


def train_files(data_dir: str) -> tuple[str, str]:
    return (os.path.join(data_dir, f"train.{SOURCE}"), os.path.join(data_dir, f"train.{TARGET}"))


def files_key(paths, settings: dict) -> str:
    """A cache key from the files' path, size and mtime and the settings."""
    key = hashlib.sha256()
    for path in paths:
        info = os.stat(path)
        key.update(f"{os.path.abspath(path)}:{info.st_size}:{info.st_mtime_ns};".encode())
    key.update(repr(sorted(settings.items())).encode())
    return key.hexdigest()[:16]


def cached(base_name: str, key: str, build) -> tuple[str, bool]:
    """`$TMPDIR/base_name/key`, built by `build(scratch_dir)` unless it exists.

    Returns (folder, whether it came from the cache). The folder appears
    whole or not at all (built in a scratch folder, then renamed).
    """
    base = os.path.join(tempfile.gettempdir(), base_name)
    directory = os.path.join(base, key)
    if os.path.isdir(directory):
        return directory, True
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="building_", dir=base)
    try:
        build(scratch)
        os.replace(scratch, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory, False


def tokenizer_dir(data_dir: str, train_config) -> tuple[str, bool]:
    """The keras_s2s tokenizers of this corpus and TrainConfig, trained once and cached.

    Trained by `keras_s2s.training.trainer.prepare_tokenizers`, the function
    `train()` calls, with the config's vocabulary size, type and sharing.
    """
    settings = {name: getattr(train_config, name) for name in
                ("vocabulary_size", "shared_vocabulary", "tokenizer_type", "max_source_words")}

    def build(scratch):
        from keras_s2s.training.trainer import prepare_tokenizers

        prepare_tokenizers(scratch, train_files(data_dir), train_config)

    return cached(TOKENIZER_CACHE, files_key(train_files(data_dir), settings), build)


def shared_model_path(tokenizers: str) -> str:
    """The joint SentencePiece model of a tokenizer folder (fairseq needs one vocabulary)."""
    path = os.path.join(tokenizers, "shared.model")
    if not os.path.isfile(path):
        raise ValueError(
            f"{tokenizers!r} has no shared.model: the fairseq peer needs one joint "
            "vocabulary (`shared_vocabulary: true` in the config), as "
            "`fairseq-preprocess --joined-dictionary` builds"
        )
    return path


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def tokenizer_models(tokenizers: str) -> tuple[str, str]:
    """(source, target) SentencePiece model files of a keras_s2s tokenizer folder."""
    shared = os.path.join(tokenizers, "shared.model")
    if os.path.isfile(shared):
        return shared, shared
    return os.path.join(tokenizers, "source.model"), os.path.join(tokenizers, "target.model")


def piece_lengths(tokenizers: str, data_dir: str, max_length: int, max_words: int):
    """(source pieces, target pieces + 1) of the training pairs keras_s2s keeps.

    The keep rules of keras_s2s's reader and pipeline: at most `max_words`
    whitespace words a side, a non-empty source, and both lengths at most
    `max_length` (the target counts END). Returns (lengths, pairs dropped).
    """
    import sentencepiece as spm

    source_model, target_model = tokenizer_models(tokenizers)
    source_pieces = spm.SentencePieceProcessor(model_file=source_model)
    target_pieces = spm.SentencePieceProcessor(model_file=target_model)
    sources, targets = (read_lines(path) for path in train_files(data_dir))
    lengths, dropped = [], 0
    for source, target in zip(sources, targets):
        if len(source.split()) > max_words or len(target.split()) > max_words:
            dropped += 1
            continue
        s = len(source_pieces.encode(source))
        t = len(target_pieces.encode(target)) + 1
        if not 0 < s <= max_length or t > max_length:
            dropped += 1
            continue
        lengths.append((s, t))
    return lengths, dropped


def fairseq_bin_dir(venv: str, model_path: str, data_dir: str, workers: int = 2):
    """fairseq's binarized train/valid over our SentencePiece pieces, built once and cached.

    The pieces are written as space-separated text by the sentencepiece
    package with our model, then `fairseq-preprocess --joined-dictionary`
    builds one dictionary for both sides. Returns (folder with `bin/`,
    from cache).
    """
    paths = [os.path.join(data_dir, name) for name in REQUIRED_FILES] + [model_path]
    settings = {"fairseq_preprocess": fairseq_command(venv, "fairseq-preprocess")}

    def build(scratch):
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor(model_file=model_path)
        text = os.path.join(scratch, "text")
        os.makedirs(text)
        for split, fairseq_split in FAIRSEQ_SPLITS.items():
            for language in (SOURCE, TARGET):
                lines = read_lines(os.path.join(data_dir, f"{split}.{language}"))
                with open(os.path.join(text, f"{fairseq_split}.{language}"), "w",
                          encoding="utf-8") as f:
                    f.writelines(" ".join(processor.encode(line, out_type=str)) + "\n" for line in lines)
        command = [
            fairseq_command(venv, "fairseq-preprocess"),
            "--source-lang", SOURCE, "--target-lang", TARGET,
            "--trainpref", os.path.join(text, "train"),
            "--validpref", os.path.join(text, "valid"),
            "--destdir", os.path.join(scratch, "bin"),
            "--joined-dictionary", "--workers", str(workers),
        ]
        with open(os.path.join(scratch, "preprocess.log"), "w", encoding="utf-8") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)

    return cached(FAIRSEQ_CACHE, files_key(paths, settings), build)


def fairseq_command(venv: str, name: str) -> str:
    """A console script of the fairseq virtual environment (VENV/bin/NAME)."""
    return os.path.join(venv, "bin", name)


def fairseq_venv_problem(venv: str | None) -> str | None:
    """Why the fairseq peer cannot run from `venv`, or None when it can."""
    install = ("python3 -m venv VENV && VENV/bin/pip install torch==2.11.0 "
               'torchaudio==2.11.0 "numpy<2.3" fairseq-fixed==0.12.3.1 (bench/README.md)')
    if not venv:
        return f"no --fairseq-venv given (install: {install})"
    for name in ("fairseq-train", "fairseq-preprocess"):
        if not os.path.isfile(fairseq_command(venv, name)):
            return f"--fairseq-venv {venv!r} has no bin/{name} (install: {install})"
    return None
