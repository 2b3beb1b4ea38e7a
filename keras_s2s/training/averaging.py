"""Checkpoint averaging: one model whose weights are the mean of several epochs'.

Averaging the last (or best) few epoch checkpoints of a run smooths out the
noise of the final optimiser steps and usually gains a little BLEU for free;
the published Multi30k result averages the last 10. `average_run` writes the
averaged model as a new run directory, so `training.evaluate` and
`training.export` take it as they take the run itself: the source run's
settings, tokenizers and corpus (`RunDir.copy_settings`), the averaged model,
and averaged.json saying which checkpoints and how they were chosen
(`keras_s2s.run_dir` lists the files).
"""

from __future__ import annotations

import csv
import math
import os

import keras
import numpy as np

from keras_s2s.checks import check_positive_int
from keras_s2s.files import atomic_directory
from keras_s2s.models import load_run_model
from keras_s2s.run_dir import (
    AVERAGED_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RunDir,
    checkpoint_epoch,
)


def higher_is_better(metric: str) -> bool:
    """Losses are minimised; anything else (`val_bleu`, accuracy) is maximised."""
    return "loss" not in metric


def _read_history(run: RunDir) -> dict:
    if not run.has(METRICS_FILE):
        raise ValueError(
            f"`best` needs the run's per-epoch history, but {run.file(METRICS_FILE)} does not "
            "exist; use `last` (--last) instead"
        )
    return run.read_json(METRICS_FILE).get("history", {})


def _read_epoch_log(path: str, metric: str) -> dict[int, float]:
    """`{epoch: value}` from the trainer's history.csv (epoch column 0-based).

    The log survives resumption (Keras appends to it), so it is preferred
    over metrics.json; an epoch logged twice keeps its last row.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if metric not in fields:
            raise ValueError(
                f"`metric` {metric!r} is not in the history of {path}; "
                f"available: {sorted(name for name in fields if name != 'epoch')}"
            )
        values = {}
        for line, row in enumerate(reader, start=2):
            try:
                values[int(row["epoch"]) + 1] = float(row[metric])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}:{line}: expected an epoch number and a {metric!r} value; "
                    f"received {row!r}"
                ) from None
    return values


def _epoch_values(run_dir: str, metric: str, last_epoch: int) -> dict[int, float]:
    """`{epoch: metric value}` of a run, from history.csv or else metrics.json."""
    run = RunDir(run_dir)
    if run.has(HISTORY_FILE):
        return _read_epoch_log(run.file(HISTORY_FILE), metric)
    history = _read_history(run)
    if metric not in history:
        raise ValueError(
            f"`metric` {metric!r} is not in the history of {run.file(METRICS_FILE)}; "
            f"available: {sorted(history)}"
        )
    values = history[metric]
    if len(values) != last_epoch:
        raise ValueError(
            f"the history has {len(values)} `{metric}` values (epochs 1-{len(values)}) but "
            f"the checkpoints run to epoch {last_epoch}; entry i of the history must be "
            f"epoch i + 1 (a resumed or fine-tuned run restarts its history); "
            "use `last` (--last) instead"
        )
    return {epoch: float(value) for epoch, value in enumerate(values, start=1)}


def select_checkpoints(
    run_dir: str,
    *,
    last: int | None = None,
    best: int | None = None,
    metric: str = "val_loss",
) -> list[str]:
    """Chooses the checkpoints to average, returned in epoch order.

    Args:
        run_dir: a training run directory (RUN_DIR/checkpoints/epoch-NNN.weights.h5).
        last: take the last `last` epochs.
        best: take the `best` epochs with the best `metric` in RUN_DIR/history.csv
            (written epoch by epoch, resumption included) or else RUN_DIR/metrics.json
            (lower is better when the name contains "loss", higher otherwise;
            NaN ranks worst; ties go to the later epoch). Exactly one of
            `last` and `best` must be given.
        metric: a logged metric, e.g. "val_loss" or "val_bleu". In
            metrics.json, entry i of the history must be epoch i + 1.

    Returns:
        Checkpoint paths, oldest epoch first.
    """
    if (last is None) == (best is None):
        raise ValueError(
            "pass exactly one of `last` (the last N epochs) and `best` (the best N by "
            f"`metric`); received last={last!r}, best={best!r}"
        )
    name, count = ("last", last) if last is not None else ("best", best)
    check_positive_int(name, count, " (how many checkpoints to average)")
    run = RunDir(run_dir)
    checkpoints = run.checkpoints()
    directory = run.checkpoints_dir
    if not checkpoints:
        raise ValueError(
            f"no checkpoints in {directory}: expected epoch-NNN.weights.h5 files, "
            "which training writes after every epoch"
        )
    if count > len(checkpoints):
        raise ValueError(
            f"`{name}` asks for {count} checkpoints but only {len(checkpoints)} exist in "
            f"{directory}; pass {name}={len(checkpoints)} or fewer"
        )
    if last is not None:
        return [path for _, path in checkpoints[-last:]]

    values = _epoch_values(run_dir, metric, checkpoints[-1][0])
    unscored = [epoch for epoch, _ in checkpoints if epoch not in values]
    if unscored:
        raise ValueError(
            f"no `{metric}` value for the checkpoints of epochs {unscored} in the history of "
            f"{run_dir}; use `last` (--last) instead"
        )
    sign = -1.0 if higher_is_better(metric) else 1.0

    def rank(item):
        epoch, _ = item
        value = values[epoch]
        return (math.inf if math.isnan(value) else sign * value, -epoch)

    chosen = sorted(checkpoints, key=rank)[:best]
    return [path for _, path in sorted(chosen)]


def average_weights(model: keras.Model, checkpoint_paths: list[str]) -> keras.Model:
    """Sets `model`'s weights to the mean of `checkpoint_paths`' and returns it.

    Each `.weights.h5` file is loaded into `model` in turn and its float
    variables summed in float64, so the mean is exact to the variables' own
    precision whatever the number of checkpoints. Non-float variables (the
    integer states of dropout seed generators) are not averaged: they keep
    the value the last load left. The model's own weights are overwritten.

    Args:
        model: a model of the architecture that wrote the checkpoints.
        checkpoint_paths: `.weights.h5` files (`select_checkpoints` gives them).

    Returns:
        `model`, holding the averaged weights.
    """
    paths = list(checkpoint_paths)
    if not paths:
        raise ValueError("`checkpoint_paths` is empty; pass at least one .weights.h5 file")
    variables = [v for v in model.variables if keras.backend.is_float_dtype(v.dtype)]
    totals = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    for path in paths:
        try:
            model.load_weights(path)
        except ValueError as error:
            detail = " ".join(str(error).split())  # Keras prints whole tensors: keep the gist
            raise ValueError(
                f"checkpoint {path} does not fit the model (another architecture?): "
                f"{detail[:300]}{'...' if len(detail) > 300 else ''}"
            ) from error
        for total, variable in zip(totals, variables):
            total += np.asarray(variable.numpy(), np.float64)
    for total, variable in zip(totals, variables):
        mean = total / len(paths)
        variable.assign(mean.astype(keras.backend.standardize_dtype(variable.dtype)))
    return model


def average_run(
    run_dir: str,
    output_dir: str,
    *,
    last: int | None = None,
    best: int | None = None,
    metric: str = "val_loss",
    overwrite: bool = False,
) -> dict:
    """Averages a run's checkpoints into a new run directory, atomically.

    The output is written to a temporary folder beside `output_dir` and
    renamed into place, so a failure never leaves half a run directory; an
    existing `output_dir` is replaced (the same way) only with `overwrite`.

    Args:
        run_dir: a trained run directory (model.keras, config.json,
            tokenizers, checkpoints/).
        output_dir: the new run directory; must not be `run_dir` or hold it.
        last, best, metric: which checkpoints; see `select_checkpoints`.
        overwrite: replace an existing `output_dir`.

    Returns:
        What was written to OUTPUT_DIR/averaged.json: `checkpoints` (paths
        relative to the source run), `epochs`, `selection` (the keyword
        arguments that choose them again) and `source_run` (absolute path).

    Example:
    >>> average_run("runs/multi30k", "runs/multi30k-avg", last=10)
    """
    source = os.path.realpath(run_dir)
    target = os.path.realpath(output_dir)
    if target == source or source.startswith(target + os.sep):
        raise ValueError(
            f"`output_dir` must be a new directory, not the run directory or one holding it; "
            f"received run_dir={run_dir!r}, output_dir={output_dir!r}"
        )
    if os.path.exists(output_dir) and not overwrite:
        raise ValueError(
            f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it"
        )
    run = RunDir(run_dir)
    for name in (MODEL_FILE, CONFIG_FILE):
        run.require(name)
    run.require_tokenizers()

    paths = select_checkpoints(run_dir, last=last, best=best, metric=metric)
    model = load_run_model(run_dir)
    average_weights(model, paths)
    epochs = [checkpoint_epoch(path) for path in paths]
    info = {
        "checkpoints": [os.path.relpath(p, run_dir) for p in paths],
        "epochs": epochs,
        "selection": {"last": last} if last is not None else {"best": best, "metric": metric},
        "source_run": source,
    }

    with atomic_directory(target, overwrite=overwrite) as staging:
        run.copy_settings(staging)
        averaged = RunDir(staging)
        model.save(averaged.file(MODEL_FILE))
        averaged.write_json(AVERAGED_FILE, info)
    return info
