"""The run directory: the one module that knows its files, and how to read and write them.

A run directory holds everything needed to resume, evaluate, fine-tune,
average and export a model. Its layout (the names never change, so that old
runs keep loading), with what writes each file:

    RUN_DIR/
      config.json           ModelConfig: the architecture, its only source        train, import_marian
      train_config.json     the resolved TrainConfig (decoding defaults too)      train, import_marian
      shared.model/.vocab   SentencePiece tokenizer of both sides, or             train
      source.model/.vocab   one per side (target.model/.vocab beside it)          train
      source.spm, target.spm, vocabulary.json
                            an imported Marian model's tokenizers                 import_marian
      data/                 the generated built-in corpus: train/valid/test.tsv   train (--train builtin)
      backup/               BackupAndRestore state (deleted when training ends)  train
      checkpoints/          epoch-NNN.weights.h5 after every epoch                train
      worker-TYPE-ID/       a non-chief worker's backup/ and checkpoints/         train (multi-worker)
      logs/                 TensorBoard                                           train
      model.keras           the final model                                       train, average, import_marian
      metrics.json          history, timing and corpus statistics                 train
      history.csv           per-epoch metrics, kept across resumptions            train
      averaged.json         which checkpoints an averaged run holds, how chosen   average
      import.json           where an imported model came from                     import_marian
      eval/                 hypotheses.txt, hypotheses.detok.txt, metrics.json    evaluate

Exports do not live here: they land in saved_models/NAME/VERSION (export.py).

JSON files are written atomically (a temporary file in the same folder,
then `os.replace`), so a reader never sees half a file; whole directories
(an averaged or imported run) through `files.atomic_directory`. Reading a
file the run lacks raises `MissingRunFile`, which names the directory, the
file and the command that writes it.

Example:
>>> run = RunDir("runs/builtin")
>>> config = run.read_model_config()
>>> [epoch for epoch, _ in run.checkpoints()]
[1, 2, 3]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from typing import Any, Iterable

from keras_s2s.config import ModelConfig, TrainConfig

CONFIG_FILE = "config.json"
TRAIN_CONFIG_FILE = "train_config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"  # the run's training metrics; an evaluation's in EVAL_DIR
HISTORY_FILE = "history.csv"  # one row per finished epoch, appended across resumptions
AVERAGED_FILE = "averaged.json"
IMPORT_FILE = "import.json"
DATA_DIR = "data"
BACKUP_DIR = "backup"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
EVAL_DIR = "eval"
HYPOTHESES_FILE = "hypotheses.txt"
DETOKENIZED_FILE = "hypotheses.detok.txt"
# A Keras ModelCheckpoint file pattern, and the regular expression that reads it back.
CHECKPOINT_FILE = "epoch-{epoch:03d}.weights.h5"
_CHECKPOINT_NAME = re.compile(r"epoch-(\d+)\.weights\.h5")

# Tokenizers. `Tokenizer.save(directory, name)` writes NAME.model and NAME.vocab,
# with NAME "shared", or "source" and "target"; an imported Marian model has
# its two SentencePiece models and a piece vocabulary instead.
SHARED_TOKENIZER_FILE = "shared.model"
SOURCE_TOKENIZER_FILE = "source.model"
TARGET_TOKENIZER_FILE = "target.model"
SOURCE_SENTENCEPIECE_FILE = "source.spm"
TARGET_SENTENCEPIECE_FILE = "target.spm"
VOCABULARY_FILE = "vocabulary.json"
TOKENIZER_FILES = (
    SHARED_TOKENIZER_FILE, "shared.vocab", SOURCE_TOKENIZER_FILE, "source.vocab",
    TARGET_TOKENIZER_FILE, "target.vocab",
    SOURCE_SENTENCEPIECE_FILE, TARGET_SENTENCEPIECE_FILE, VOCABULARY_FILE,
)
# Any one of these means the run has tokenizers (data.load_tokenizers checks the rest).
_TOKENIZER_MARKERS = (SHARED_TOKENIZER_FILE, SOURCE_TOKENIZER_FILE, VOCABULARY_FILE)

_TRAIN = "train it first (`python -m training.train --run-dir {path}`)"
_IMPORT = " or import a model into it (`python -m training.import_marian --run-dir {path}`)"
# What to run when a file is missing.
WRITTEN_BY = {
    CONFIG_FILE: _TRAIN + _IMPORT,
    TRAIN_CONFIG_FILE: _TRAIN + _IMPORT,
    MODEL_FILE: _TRAIN + _IMPORT,
    METRICS_FILE: _TRAIN,
    HISTORY_FILE: _TRAIN,
    CHECKPOINTS_DIR: _TRAIN,
    "tokenizers": _TRAIN + _IMPORT,
    AVERAGED_FILE: "average a run into it (`python -m training.average --run-dir RUN --output-dir {path}`)",
    IMPORT_FILE: "import a model into it (`python -m training.import_marian --run-dir {path}`)",
}


class MissingRunFile(FileNotFoundError, ValueError):
    """A run directory lacks a file it needs; the message says what writes it.

    Both a FileNotFoundError and a ValueError: callers that caught either
    for a missing run file keep working.
    """


def write_json(path: str, values: Any) -> None:
    """Writes `values` as sorted, indented JSON; readers never see half a file."""
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    write_text(path, text)


def write_text(path: str, text: str) -> None:
    """Writes `text` through a temporary file in the same folder and `os.replace`."""
    # Hidden, unique, in the same folder: os.replace is then atomic, and two
    # writers never share a temporary file.
    directory, name = os.path.split(os.path.abspath(path))
    partial = os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(partial, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def read_json(path: str) -> Any:
    """Parsed JSON; invalid JSON is a ValueError naming the file and line."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def write_evaluation(directory: str, metrics: dict, hypotheses: Iterable[str],
                     detokenized: Iterable[str] | None = None) -> None:
    """An evaluation's files: hypotheses.txt, hypotheses.detok.txt (when given), metrics.json.

    `directory` is RunDir.eval_dir by default (`evaluate --output-dir` moves it).
    """
    os.makedirs(directory, exist_ok=True)
    if detokenized is not None:
        write_text(os.path.join(directory, DETOKENIZED_FILE), "".join(f"{line}\n" for line in detokenized))
    write_text(os.path.join(directory, HYPOTHESES_FILE), "".join(f"{line}\n" for line in hypotheses))
    write_json(os.path.join(directory, METRICS_FILE), metrics)


def checkpoint_epoch(path: str) -> int | None:
    """The epoch of an `epoch-NNN.weights.h5` path; None for any other file name."""
    match = _CHECKPOINT_NAME.fullmatch(os.path.basename(path))
    return int(match.group(1)) if match else None


class RunDir:
    """One run directory: the path of each of its files, and reading and writing them.

    Args:
        path: the directory; it need not exist yet (training creates it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, name: str) -> str:
        """The path of `name` (one of this module's file names) in the run."""
        return os.path.join(self.path, name)

    def has(self, name: str) -> bool:
        return os.path.exists(self.file(name))

    def missing(self, name: str, what: str | None = None) -> MissingRunFile:
        """The error for a missing `name`: the directory, the file, and what writes it."""
        how = WRITTEN_BY.get(name, _TRAIN).format(path=self.path)
        return MissingRunFile(f"`run_dir` {self.path!r} has no {what or name}: {how}")

    def require(self, name: str) -> str:
        """The path of `name`; MissingRunFile when the run lacks it."""
        if not self.has(name):
            raise self.missing(name)
        return self.file(name)

    # JSON files.
    def read_json(self, name: str, default: Any = None) -> Any:
        """The JSON file `name`; `default` when given and the file is missing, else MissingRunFile."""
        if default is not None and not self.has(name):
            return default
        return read_json(self.require(name))

    def write_json(self, name: str, values: Any) -> None:
        write_json(self.file(name), values)

    def read_model_config(self) -> ModelConfig:
        path = self.require(CONFIG_FILE)
        return ModelConfig.from_dict(read_json(path))

    def write_model_config(self, config: ModelConfig) -> None:
        self.write_json(CONFIG_FILE, config.to_dict())

    def read_train_config(self) -> TrainConfig:
        return TrainConfig(**self.read_json(TRAIN_CONFIG_FILE))

    def write_train_config(self, train_config: TrainConfig) -> None:
        self.write_json(TRAIN_CONFIG_FILE, train_config.to_dict())

    # Training's folders and files.
    @property
    def data_dir(self) -> str:
        return self.file(DATA_DIR)

    def builtin_corpus(self, split: str) -> str:
        """The built-in corpus file of `split` ("train", "valid", "test"), as write_builtin_corpus names it."""
        return os.path.join(self.data_dir, f"{split}.tsv")

    @property
    def backup_dir(self) -> str:
        return self.file(BACKUP_DIR)

    @property
    def checkpoints_dir(self) -> str:
        return self.file(CHECKPOINTS_DIR)

    @property
    def checkpoint_pattern(self) -> str:
        """ModelCheckpoint's file path, `{epoch:03d}` left for Keras to fill."""
        return os.path.join(self.checkpoints_dir, CHECKPOINT_FILE)

    @property
    def logs_dir(self) -> str:
        return self.file(LOGS_DIR)

    @property
    def eval_dir(self) -> str:
        return self.file(EVAL_DIR)

    def worker(self, task_type: str, task_id: int) -> "RunDir":
        """A non-chief worker's scratch run inside this one (its backup and checkpoints)."""
        return RunDir(self.file(f"worker-{task_type}-{task_id}"))

    def checkpoints(self) -> list[tuple[int, str]]:
        """The epoch checkpoints: `[(epoch, path), ...]` sorted by epoch.

        Only `checkpoints/epoch-NNN.weights.h5` files count; anything else
        there (temporary files, notes) is ignored. No folder, no checkpoints.
        """
        if not os.path.isdir(self.checkpoints_dir):
            return []
        found = []
        for name in os.listdir(self.checkpoints_dir):
            epoch = checkpoint_epoch(name)
            if epoch is not None:
                found.append((epoch, os.path.join(self.checkpoints_dir, name)))
        return sorted(found)

    # Tokenizers (data.load_tokenizers and data.train_tokenizers read and write them).
    def has_tokenizers(self) -> bool:
        """Whether `data.load_tokenizers(run.path)` has tokenizers to load."""
        return any(self.has(name) for name in _TOKENIZER_MARKERS)

    def require_tokenizers(self) -> None:
        if not self.has_tokenizers():
            raise self.missing(
                "tokenizers", f"tokenizers ({', '.join(_TOKENIZER_MARKERS[:2])} or {VOCABULARY_FILE})"
            )

    def copy_tokenizers(self, to_dir: str | os.PathLike) -> None:
        """Copies the tokenizer files this run has into `to_dir`."""
        for name in TOKENIZER_FILES:
            if self.has(name):
                shutil.copyfile(self.file(name), os.path.join(to_dir, name))

    def copy_settings(self, to_dir: str | os.PathLike) -> None:
        """What a run derived from this one shares with it (an averaged run, say).

        The configs, training metrics and history, the tokenizers and the
        built-in corpus: not the model, checkpoints, backup, logs or evaluations.
        """
        for name in (CONFIG_FILE, TRAIN_CONFIG_FILE, METRICS_FILE, HISTORY_FILE):
            if self.has(name):
                shutil.copyfile(self.file(name), os.path.join(to_dir, name))
        self.copy_tokenizers(to_dir)
        if os.path.isdir(self.data_dir):
            shutil.copytree(self.data_dir, os.path.join(to_dir, DATA_DIR))
