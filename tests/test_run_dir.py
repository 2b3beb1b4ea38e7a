"""RunDir: the file names of a run (unchanged, so old runs load), round trips, atomic
writes, checkpoint listing, and errors that say what writes a missing file."""

import json
import os

import pytest

from keras_s2s import ModelConfig, TrainConfig
from keras_s2s import run_dir as run_dir_lib
from keras_s2s.run_dir import (
    AVERAGED_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TRAIN_CONFIG_FILE,
    MissingRunFile,
    RunDir,
    checkpoint_epoch,
    write_evaluation,
    write_json,
)

CONFIG = ModelConfig(source_vocabulary_size=50, target_vocabulary_size=60, hidden_dim=16,
                     num_heads=2, intermediate_dim=32)


def _hidden(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_the_file_names_on_disk_are_those_of_existing_runs():
    # Renaming any of these would stop old run directories from loading.
    names = {name: getattr(run_dir_lib, name) for name in dir(run_dir_lib)
             if name.endswith(("_FILE", "_DIR"))}
    assert names == {
        "CONFIG_FILE": "config.json", "TRAIN_CONFIG_FILE": "train_config.json",
        "MODEL_FILE": "model.keras", "METRICS_FILE": "metrics.json",
        "HISTORY_FILE": "history.csv", "AVERAGED_FILE": "averaged.json",
        "IMPORT_FILE": "import.json", "DATA_DIR": "data", "BACKUP_DIR": "backup",
        "CHECKPOINTS_DIR": "checkpoints", "LOGS_DIR": "logs", "EVAL_DIR": "eval",
        "HYPOTHESES_FILE": "hypotheses.txt", "DETOKENIZED_FILE": "hypotheses.detok.txt",
        "CHECKPOINT_FILE": "epoch-{epoch:03d}.weights.h5",
        "SHARED_TOKENIZER_FILE": "shared.model", "SOURCE_TOKENIZER_FILE": "source.model",
        "TARGET_TOKENIZER_FILE": "target.model", "SOURCE_SENTENCEPIECE_FILE": "source.spm",
        "TARGET_SENTENCEPIECE_FILE": "target.spm", "VOCABULARY_FILE": "vocabulary.json",
    }
    run = RunDir("runs/x")
    assert run.checkpoint_pattern.format(epoch=7) == os.path.join("runs/x", "checkpoints", "epoch-007.weights.h5")
    assert run.worker("worker", 1).path == os.path.join("runs/x", "worker-worker-1")
    assert run.builtin_corpus("test") == os.path.join("runs/x", "data", "test.tsv")
    assert os.path.join(run, "x") == os.path.join("runs/x", "x")  # os.PathLike


def test_configs_round_trip_and_read_files_written_before_the_module(tmp_path):
    run = RunDir(tmp_path)
    run.write_model_config(CONFIG)
    assert run.read_model_config() == CONFIG
    with open(run.file(CONFIG_FILE), encoding="utf-8") as f:
        written = f.read()
    CONFIG.save(tmp_path / "old.json")  # how runs wrote config.json until now
    assert (tmp_path / "old.json").read_text(encoding="utf-8") == written

    train_config = TrainConfig(beam_size=3, length_penalty=1.0)
    run.write_train_config(train_config)
    assert run.read_train_config() == train_config
    assert run.read_json(TRAIN_CONFIG_FILE)["beam_size"] == 3

    run.write_json(METRICS_FILE, {"history": {"loss": [2.0, 1.0]}, "b": "ü"})
    assert run.read_json(METRICS_FILE) == {"history": {"loss": [2.0, 1.0]}, "b": "ü"}
    assert _hidden(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_json(METRICS_FILE, {"old": 1})
    with pytest.raises(TypeError):
        run.write_json(METRICS_FILE, {"new": object()})  # not JSON: fails before writing

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run.write_json(METRICS_FILE, {"new": 2})
    with pytest.raises(OSError, match="disk full"):
        write_json(str(tmp_path / "fresh.json"), {"new": 2})
    monkeypatch.undo()
    assert run.read_json(METRICS_FILE) == {"old": 1}
    assert sorted(os.listdir(tmp_path)) == [METRICS_FILE]


@pytest.mark.parametrize(
    "read, missing, command",
    [
        (lambda run: run.read_model_config(), "config.json", "python -m training.train --run-dir"),
        (lambda run: run.read_train_config(), "train_config.json", "python -m training.import_marian"),
        (lambda run: run.require(MODEL_FILE), "model.keras", "train it first"),
        (lambda run: run.read_json(AVERAGED_FILE), "averaged.json", "python -m training.average"),
        (lambda run: run.require_tokenizers(), r"tokenizers \(shared.model, source.model or vocabulary.json\)",
         "python -m training.train"),
    ],
)
def test_a_missing_file_names_the_run_the_file_and_what_writes_it(tmp_path, read, missing, command):
    run = RunDir(tmp_path / "run")
    with pytest.raises(MissingRunFile, match=rf"`run_dir` '.*run' has no {missing}: .*{command}"):
        read(run)
    # Callers that caught either error for a missing file keep catching it.
    assert issubclass(MissingRunFile, ValueError) and issubclass(MissingRunFile, FileNotFoundError)


def test_read_json_defaults_only_when_asked_and_names_the_line_of_bad_json(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_json(TRAIN_CONFIG_FILE, default={}) == {}
    (tmp_path / TRAIN_CONFIG_FILE).write_text('{\n  "beam_size": 2,\n}\n')
    with pytest.raises(ValueError, match=r"train_config.json:3: not valid JSON"):
        run.read_json(TRAIN_CONFIG_FILE, default={})


def test_checkpoints_are_sorted_by_epoch_and_other_files_ignored(tmp_path):
    run = RunDir(tmp_path)
    os.makedirs(run.checkpoints_dir)
    for epoch in (10, 2, 1, 100):
        (tmp_path / "checkpoints" / run_dir_lib.CHECKPOINT_FILE.format(epoch=epoch)).write_text("")
    for stray in ("notes.txt", "epoch-3.weights.h5.tmp", "epoch-x.weights.h5", "epoch-4.keras"):
        (tmp_path / "checkpoints" / stray).write_text("")
    listed = run.checkpoints()
    assert [epoch for epoch, _ in listed] == [1, 2, 10, 100]
    assert listed[0][1] == os.path.join(str(tmp_path), "checkpoints", "epoch-001.weights.h5")
    assert [checkpoint_epoch(path) for _, path in listed] == [1, 2, 10, 100]
    assert checkpoint_epoch("checkpoints/epoch-3.weights.h5.tmp") is None


def test_a_run_without_the_checkpoints_folder_has_none(tmp_path):
    assert RunDir(tmp_path).checkpoints() == []


def test_tokenizers_and_settings_copy_without_the_weights(tmp_path):
    source = RunDir(tmp_path / "run")
    os.makedirs(source.data_dir)
    assert not source.has_tokenizers()
    for name in ("source.model", "source.vocab", "target.model", "target.vocab", CONFIG_FILE,
                 TRAIN_CONFIG_FILE, METRICS_FILE, "history.csv", MODEL_FILE, "notes.txt"):
        (tmp_path / "run" / name).write_text(name)
    (tmp_path / "run" / "data" / "test.tsv").write_text("a\tb\n")
    for folder in ("checkpoints", "backup", "logs", "eval"):
        os.makedirs(source.file(folder))
    assert source.has_tokenizers()

    tokenizers_only = tmp_path / "tokenizers"
    tokenizers_only.mkdir()
    source.copy_tokenizers(tokenizers_only)
    assert sorted(os.listdir(tokenizers_only)) == ["source.model", "source.vocab", "target.model",
                                                   "target.vocab"]
    derived = tmp_path / "derived"
    derived.mkdir()
    source.copy_settings(derived)
    assert sorted(os.listdir(derived)) == sorted(
        ["source.model", "source.vocab", "target.model", "target.vocab", CONFIG_FILE,
         TRAIN_CONFIG_FILE, METRICS_FILE, "history.csv", "data"])
    assert (derived / "data" / "test.tsv").read_text() == "a\tb\n"


def test_write_evaluation_writes_the_detokenized_file_only_when_given(tmp_path):
    write_evaluation(str(tmp_path / "eval"), {"bleu": 1.5}, ["a b", "c"])
    assert sorted(os.listdir(tmp_path / "eval")) == ["hypotheses.txt", "metrics.json"]
    assert (tmp_path / "eval" / "hypotheses.txt").read_text(encoding="utf-8") == "a b\nc\n"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == {"bleu": 1.5}
    write_evaluation(str(tmp_path / "eval"), {"bleu": 2.0}, ["x"], detokenized=["X."])
    assert (tmp_path / "eval" / "hypotheses.detok.txt").read_text(encoding="utf-8") == "X.\n"
