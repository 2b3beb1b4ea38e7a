"""Checkpoint averaging: selection, the exact mean, the averaged run directory, the CLI.

The run here is built, not trained: a tiny model whose four epoch checkpoints
hold known random weights, so every mean can be checked against numpy.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_s2s import ModelConfig, TrainConfig, build_transformer
from keras_s2s.data import generate_pairs, train_tokenizers
from keras_s2s.decoding import Greedy
from keras_s2s.run_dir import RunDir
from keras_s2s.training.averaging import (
    average_run,
    average_weights,
    select_checkpoints,
)
from keras_s2s.translator import Translator
from tests.helpers import REPO_ROOT
from training import average as average_cli

EPOCHS = 4
HISTORY = {
    "loss": [4.0, 3.0, 2.0, 1.5],
    "val_loss": [3.0, 2.5, 2.7, 2.6],  # best two: epochs 2 and 4
    "val_bleu": [10.0, 20.0, 30.0, 5.0],  # best two: epochs 2 and 3
}


def weights_file(epoch):
    return f"epoch-{epoch:03d}.weights.h5"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with `EPOCHS` checkpoints of known weights; read-only.

    Returns `(run_dir, {epoch: [float arrays in model.weights order]})`.
    """
    run_dir = tmp_path_factory.mktemp("averaging") / "run"
    os.makedirs(run_dir / "checkpoints")
    pairs = generate_pairs(400, seed=0)
    source, target = train_tokenizers(pairs, run_dir, vocabulary_size=100)
    config = ModelConfig(
        source_vocabulary_size=source.vocabulary_size,
        target_vocabulary_size=target.vocabulary_size,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dropout=0.1,  # gives the model integer seed-generator states
        max_length=16,
    )
    config.save(run_dir / "config.json")
    (run_dir / "train_config.json").write_text(json.dumps(TrainConfig(beam_size=1).to_dict()))
    (run_dir / "metrics.json").write_text(json.dumps({"history": HISTORY, "train_seconds": 1.0}))
    os.makedirs(run_dir / "data")
    (run_dir / "data" / "test.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:4]))
    for name in ("logs", "backup"):
        os.makedirs(run_dir / name)

    model = build_transformer(config)
    rng = np.random.default_rng(0)
    weights = {}
    for epoch in range(1, EPOCHS + 1):
        values = [rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()]
        model.set_weights(values)
        model.save_weights(str(run_dir / "checkpoints" / weights_file(epoch)))
        weights[epoch] = values
    model.set_weights([v + 100.0 for v in weights[EPOCHS]])  # the final model: none of the above
    model.save(str(run_dir / "model.keras"))
    for stray in ("notes.txt", "epoch-005.weights.h5.tmp", "epoch-x.weights.h5"):
        (run_dir / "checkpoints" / stray).write_text("not a checkpoint")
    return str(run_dir), weights


def fresh_model(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)


def mean_of(weights, epochs):
    return [np.mean([weights[e][i] for e in epochs], axis=0) for i in range(len(weights[1]))]


def assert_weights(model, expected, atol=1e-6):
    actual = model.get_weights()
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def fake_run(directory, epochs, history=None):
    """Empty checkpoint files (selection never opens them) and an optional history."""
    os.makedirs(directory / "checkpoints", exist_ok=True)
    for epoch in epochs:
        (directory / "checkpoints" / weights_file(epoch)).write_text("")
    if history is not None:
        (directory / "metrics.json").write_text(json.dumps({"history": history}))
    return str(directory)


def epochs_of(paths):
    return [int(os.path.basename(p)[len("epoch-"):-len(".weights.h5")]) for p in paths]


# Selection (listing the checkpoints: tests/test_run_dir.py).


def test_select_last(run):
    run_dir, _ = run
    assert epochs_of(select_checkpoints(run_dir, last=2)) == [3, 4]
    assert epochs_of(select_checkpoints(run_dir, last=EPOCHS)) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "metric, epochs",
    [
        ("val_loss", [2, 4]),  # lowest losses
        ("loss", [3, 4]),
        ("val_bleu", [2, 3]),  # highest BLEU
    ],
)
def test_select_best_minimises_losses_and_maximises_the_rest(run, metric, epochs):
    run_dir, _ = run
    assert epochs_of(select_checkpoints(run_dir, best=2, metric=metric)) == epochs


def test_select_best_ranks_nan_last_and_prefers_later_epochs_on_ties(tmp_path):
    run_dir = fake_run(tmp_path, [1, 2, 3, 4], {"val_loss": [float("nan"), 2.0, 1.0, 2.0]})
    assert epochs_of(select_checkpoints(run_dir, best=2)) == [3, 4]
    assert epochs_of(select_checkpoints(run_dir, best=4)) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, r"exactly one of `last`.*and `best`.*received last=None, best=None"),
        ({"last": 2, "best": 2}, r"exactly one of .*received last=2, best=2"),
        ({"last": 0}, r"`last` must be a positive integer.*received last=0"),
        ({"best": -1}, r"`best` must be a positive integer.*received best=-1"),
        ({"last": True}, r"`last` must be a positive integer.*received last=True"),
        ({"last": 2.0}, r"`last` must be a positive integer.*received last=2.0"),
    ],
)
def test_select_rejects_bad_arguments(run, kwargs, message):
    run_dir, _ = run
    with pytest.raises(ValueError, match=message):
        select_checkpoints(run_dir, **kwargs)


def test_select_without_checkpoints_is_named(tmp_path):
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "notes.txt").write_text("")
    with pytest.raises(ValueError, match=r"no checkpoints in .*checkpoints: expected epoch-NNN"):
        select_checkpoints(str(tmp_path), last=1)


@pytest.mark.parametrize("name", ["last", "best"])
def test_select_more_than_exist_says_how_many_do(run, name):
    run_dir, _ = run
    with pytest.raises(ValueError, match=rf"`{name}` asks for 5 checkpoints but only 4 exist"
                                         rf".*pass {name}=4 or fewer"):
        select_checkpoints(run_dir, **{name: 5})


def test_select_best_with_an_unknown_metric_lists_the_known_ones(run):
    run_dir, _ = run
    with pytest.raises(ValueError, match=r"`metric` 'val_accuracy' is not in the history.*"
                                         r"available: \['loss', 'val_bleu', 'val_loss'\]"):
        select_checkpoints(run_dir, best=2, metric="val_accuracy")


@pytest.mark.parametrize("values", [[3.0, 2.0], [3.0, 2.0, 1.0, 0.5, 0.2]])
def test_select_best_with_a_history_that_does_not_match_the_epochs(tmp_path, values):
    # A resumed run restarts its history: entry i would no longer be epoch i + 1.
    run_dir = fake_run(tmp_path, [1, 2, 3, 4], {"val_loss": values})
    with pytest.raises(ValueError, match=rf"the history has {len(values)} `val_loss` values "
                                         r"\(epochs 1-\d\) but the checkpoints run to epoch 4"
                                         r".*use `last`"):
        select_checkpoints(run_dir, best=1)


def test_select_best_without_metrics_json_is_named(tmp_path):
    run_dir = fake_run(tmp_path, [1, 2])
    with pytest.raises(ValueError, match=r"metrics.json does not exist; use `last`"):
        select_checkpoints(run_dir, best=1)
    assert epochs_of(select_checkpoints(run_dir, last=1)) == [2]  # `last` needs no history


# The mean.


@pytest.mark.parametrize("epochs", [[1], [3, 4], [1, 2, 3, 4]])
def test_average_weights_is_the_exact_mean(run, epochs):
    run_dir, weights = run
    paths = [os.path.join(run_dir, "checkpoints", weights_file(e)) for e in epochs]
    model = average_weights(fresh_model(run_dir), paths)
    assert_weights(model, mean_of(weights, epochs), atol=0 if len(epochs) == 1 else 1e-6)
    if epochs == [3, 4]:
        assert_weights(model, [(a + b) / 2 for a, b in zip(weights[3], weights[4])])


def test_average_weights_leaves_non_float_variables_alone(run):
    run_dir, _ = run
    model = fresh_model(run_dir)
    states = [v for v in model.variables if not keras.backend.is_float_dtype(v.dtype)]
    assert states  # the seed generators of dropout
    for state in states:
        state.assign(np.full(state.shape, 7, keras.backend.standardize_dtype(state.dtype)))
    average_weights(model, select_checkpoints(run_dir, last=2))
    for state in states:
        assert "int" in keras.backend.standardize_dtype(state.dtype)
        np.testing.assert_array_equal(state.numpy(), 7)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_average_weights_needs_checkpoints_that_fit(run):
    run_dir, _ = run
    with pytest.raises(ValueError, match=r"`checkpoint_paths` is empty"):
        average_weights(fresh_model(run_dir), [])
    other = build_transformer(ModelConfig(source_vocabulary_size=30, target_vocabulary_size=30,
                                          hidden_dim=8, num_heads=2, intermediate_dim=16,
                                          num_encoder_layers=1, num_decoder_layers=1,
                                          max_length=16))
    with pytest.raises(ValueError, match=r"checkpoint .*epoch-004.weights.h5 does not fit the model"
                                         r" \(another architecture\?\): .{1,300}\.\.\.$"):
        average_weights(other, select_checkpoints(run_dir, last=1))


# The averaged run directory.


def test_average_run_writes_a_complete_run_directory(run, tmp_path):
    run_dir, weights = run
    output_dir = str(tmp_path / "nested" / "avg")
    info = average_run(run_dir, output_dir, best=2, metric="val_bleu")

    assert info == {
        "checkpoints": [os.path.join("checkpoints", weights_file(e)) for e in (2, 3)],
        "epochs": [2, 3],
        "selection": {"best": 2, "metric": "val_bleu"},
        "source_run": os.path.realpath(run_dir),
    }
    with open(os.path.join(output_dir, "averaged.json")) as f:
        assert json.load(f) == info
    assert sorted(os.listdir(output_dir)) == [
        "averaged.json", "config.json", "data", "metrics.json", "model.keras",
        "source.model", "source.vocab", "target.model", "target.vocab", "train_config.json",
    ]
    for name in ("config.json", "train_config.json", "metrics.json", "source.model",
                 os.path.join("data", "test.tsv")):
        with open(os.path.join(run_dir, name), "rb") as original:
            with open(os.path.join(output_dir, name), "rb") as copy:
                assert original.read() == copy.read(), name
    assert_weights(fresh_model(output_dir), mean_of(weights, [2, 3]))
    assert [p for p in os.listdir(tmp_path / "nested") if p.startswith(".")] == []
    # The selection is recorded as the keyword arguments that make it again.
    assert epochs_of(select_checkpoints(run_dir, **info["selection"])) == info["epochs"]


def test_average_run_refuses_to_write_into_the_run_or_around_it(run):
    run_dir, _ = run
    for output_dir in (run_dir, run_dir + os.sep, os.path.dirname(run_dir)):
        with pytest.raises(ValueError, match=r"`output_dir` must be a new directory, not the run"):
            average_run(run_dir, output_dir, last=1, overwrite=True)
    assert len(RunDir(run_dir).checkpoints()) == EPOCHS


def test_average_run_needs_a_trained_run(tmp_path):
    run_dir = fake_run(tmp_path / "run", [1])
    with pytest.raises(ValueError, match=r"has no model.keras: train it first \(`python -m training.train --run-dir "):
        average_run(run_dir, str(tmp_path / "avg"), last=1)


def test_average_run_replaces_an_existing_output_only_when_asked(run, tmp_path):
    run_dir, weights = run
    output_dir = tmp_path / "avg"
    os.makedirs(output_dir)
    (output_dir / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"avg exists; pass overwrite=True \(--overwrite\)"):
        average_run(run_dir, str(output_dir), last=2)
    assert os.listdir(output_dir) == ["keep.txt"]

    average_run(run_dir, str(output_dir), last=2, overwrite=True)
    assert not (output_dir / "keep.txt").exists()
    assert_weights(fresh_model(str(output_dir)), mean_of(weights, [3, 4]))
    assert sorted(os.listdir(tmp_path)) == ["avg"]  # no staging or retired folder left


def test_a_failed_average_run_leaves_nothing_behind(run, tmp_path, monkeypatch):
    run_dir, _ = run
    output_dir = tmp_path / "avg"
    os.makedirs(output_dir)
    (output_dir / "keep.txt").write_text("mine")

    def broken_copy(*args):
        raise OSError("disk full")

    monkeypatch.setattr(RunDir, "copy_tokenizers", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        average_run(run_dir, str(output_dir), last=2, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        average_run(run_dir, str(tmp_path / "new"), last=2)
    assert sorted(os.listdir(tmp_path)) == ["avg"]
    assert os.listdir(output_dir) == ["keep.txt"]


# The CLI.


@pytest.mark.slow  # a fresh Python process importing TensorFlow
def test_cli_writes_a_run_the_translator_loads(run):
    run_dir, weights = run
    output_dir = run_dir + "-avg"  # the default
    try:
        result = subprocess.run(
            [sys.executable, "-m", "training.average", "--run-dir", run_dir, "--last", "2"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"averaged 2 checkpoints of {run_dir} (last 2: epochs 3, 4)" in result.stdout
        assert f"wrote {output_dir}" in result.stdout
        translator = Translator.from_run_dir(output_dir, strategy=Greedy(), jit_compile=False)
        assert_weights(translator.model, mean_of(weights, [3, 4]))
        assert len(translator.translate(["the dog sees a cat ."])) == 1
        with pytest.raises(SystemExit, match=r"^error: .*-avg exists; pass overwrite=True"):
            average_cli.main(["--run-dir", run_dir, "--last", "1"])
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def test_cli_best_with_a_metric_and_overwrite(run, tmp_path, capsys):
    run_dir, weights = run
    output_dir = str(tmp_path / "avg")
    os.makedirs(output_dir)
    average_cli.main(["--run-dir", run_dir, "--best", "2", "--metric", "val_bleu",
                      "--output-dir", output_dir, "--overwrite"])
    out = capsys.readouterr().out
    assert "(best 2 by val_bleu: epochs 2, 3)" in out and f"wrote {output_dir}" in out
    assert_weights(fresh_model(output_dir), mean_of(weights, [2, 3]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--last", "0"], r"error: `last` must be a positive integer.*received last=0"),
        (["--best", "9"], r"error: `best` asks for 9 checkpoints but only 4 exist"),
        (["--best", "1", "--metric", "bleu"], r"error: `metric` 'bleu' is not in the history"),
        (["--last", "1", "--metric", "val_bleu"], r"error: --metric ranks epochs for --best"),
    ],
)
def test_cli_errors(run, tmp_path, flags, message):
    run_dir, _ = run
    with pytest.raises(SystemExit, match=message):
        average_cli.main(["--run-dir", run_dir, "--output-dir", str(tmp_path / "avg"), *flags])
    assert not (tmp_path / "avg").exists()


def test_cli_needs_exactly_one_of_last_and_best(run, capsys):
    run_dir, _ = run
    for flags in ([], ["--last", "1", "--best", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            average_cli.parse_args(["--run-dir", run_dir, *flags])
        assert exit_info.value.code == 2
    assert "--last" in capsys.readouterr().err


def write_epoch_log(directory, rows):
    """history.csv as keras.callbacks.CSVLogger writes it (epoch column 0-based)."""
    lines = ["epoch,loss,val_bleu"] + [f"{epoch - 1},{loss},{bleu}" for epoch, loss, bleu in rows]
    (directory / "history.csv").write_text("\n".join(lines) + "\n")


def test_select_best_prefers_the_epoch_log_which_survives_resumption(tmp_path):
    # metrics.json of a resumed run holds only the epochs after the restart;
    # history.csv holds every epoch, an epoch re-run after a kill twice.
    run_dir = fake_run(tmp_path, [1, 2, 3, 4], {"val_bleu": [9.0]})
    write_epoch_log(tmp_path, [(1, 3.0, 10.0), (2, 2.0, 30.0), (3, 1.5, 5.0), (3, 1.4, 20.0),
                               (4, 1.3, 25.0)])
    assert epochs_of(select_checkpoints(run_dir, best=2, metric="val_bleu")) == [2, 4]
    assert epochs_of(select_checkpoints(run_dir, best=1, metric="loss")) == [4]


def test_select_best_names_unscored_epochs_and_bad_rows_of_the_epoch_log(tmp_path):
    run_dir = fake_run(tmp_path, [1, 2, 3])
    write_epoch_log(tmp_path, [(1, 3.0, 10.0), (3, 1.5, 5.0)])
    with pytest.raises(ValueError, match=r"no `val_bleu` value for the checkpoints of epochs \[2\]"):
        select_checkpoints(run_dir, best=1, metric="val_bleu")
    with pytest.raises(ValueError, match=r"`metric` 'val_loss' is not in the history of .*history.csv; "
                                         r"available: \['loss', 'val_bleu'\]"):
        select_checkpoints(run_dir, best=1, metric="val_loss")
    (tmp_path / "history.csv").write_text("epoch,val_bleu\n0,1.0\nx,2.0\n")
    with pytest.raises(ValueError, match=r"history.csv:3: expected an epoch number"):
        select_checkpoints(run_dir, best=1, metric="val_bleu")
