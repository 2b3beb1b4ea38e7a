"""tf.distribute: MirroredStrategy on two logical CPUs, and two worker processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_s2s.training import compat
from keras_s2s.training.strategy import resolve_strategy_name
from tests.helpers import REPO_ROOT
from tests.training import distributed_job


def test_mirrored_on_two_cpus_equals_the_default_strategy(two_cpu_strategy):
    default_losses, _ = distributed_job.train(tf.distribute.get_strategy())
    mirrored = two_cpu_strategy
    assert mirrored.num_replicas_in_sync == 2
    mirrored_losses, _ = distributed_job.train(mirrored)
    # The first step sees identical weights: equal to float precision. Later
    # steps inherit round-off that Adam's normalisation amplifies a little.
    np.testing.assert_allclose(mirrored_losses[0], default_losses[0], rtol=1e-6)
    np.testing.assert_allclose(mirrored_losses, default_losses, rtol=1e-3)
    # (Raw weights are not compared: parameters whose true gradient is exactly
    # zero, such as key biases under softmax, take +-lr Adam steps on round-off.)
    assert default_losses[-1] < default_losses[0]


def test_the_replicas_really_hold_unequal_token_counts():
    # Otherwise the test above could not tell the global token mean from
    # Keras's mean of per-replica means.
    _, labels = distributed_job.batches()
    first = labels[: distributed_job.GLOBAL_BATCH]
    half = distributed_job.GLOBAL_BATCH // 2
    assert (first[:half] != 0).sum() != (first[half:] != 0).sum()


def test_auto_strategy_follows_the_environment(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert resolve_strategy_name("auto") == "default"  # no GPU here
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    assert resolve_strategy_name("auto") == "multi_worker"
    assert resolve_strategy_name("auto", tpu="grpc://10.0.0.1:8470") == "tpu"
    assert resolve_strategy_name("mirrored") == "mirrored"


def test_multi_worker_fix_is_version_gated(monkeypatch):
    monkeypatch.setattr(compat.keras, "__version__", "3.15.1")
    assert compat.needs_multi_worker_fix()
    monkeypatch.setattr(compat.keras, "__version__", "3.99.0")
    assert not compat.needs_multi_worker_fix()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(tmp_path, extra_env=None):
    """Starts two worker processes of distributed_job; returns (returncodes, outputs)."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        env.update(extra_env or {})
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.training.distributed_job", str(tmp_path / f"w{index}.npz")],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("multi-worker training did not finish within 240 s")
        outputs.append(out)
    return [p.returncode for p in processes], outputs


@pytest.mark.slow
def test_two_worker_processes_train_to_identical_weights(tmp_path):
    # KNOWN_TRAPS 10 and 11: real processes, collective all-reduce over loopback.
    returncodes, outputs = _run_two_workers(tmp_path)
    for code, out in zip(returncodes, outputs):
        assert code == 0, out[-3000:]
        assert "CollectiveAllReduceStrategy replicas=2" in out
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert first["losses"][-1] < first["losses"][0]
    np.testing.assert_array_equal(first["losses"], second["losses"])
    # A stop decision of worker 0 alone reaches worker 1 (TimeBudget's any_worker).
    assert bool(first["stop"]) and bool(second["stop"])
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])


@pytest.mark.slow
def test_stock_keras_multi_worker_fit_still_needs_the_fix(tmp_path):
    # Canary for KNOWN_TRAPS 11: when this fails, Keras fixed multi-worker fit
    # upstream and BROKEN_KERAS_VERSIONS in keras_s2s/training/compat.py can stop
    # at the last broken version.
    returncodes, outputs = _run_two_workers(
        tmp_path, {"KERAS_S2S_WITHOUT_MULTI_WORKER_FIX": "1"}
    )
    assert any(code != 0 for code in returncodes)
    assert any("PerReplica" in out for out in outputs), outputs[0][-2000:]


def test_precision_follows_the_hardware():
    from keras_s2s.training.strategy import resolve_precision

    strategy = tf.distribute.get_strategy()
    assert resolve_precision("auto", strategy) == "float32"  # CPU only here
    assert resolve_precision("mixed_bfloat16", strategy) == "mixed_bfloat16"


@pytest.mark.slow
def test_trainer_under_mirrored_strategy_logs_val_bleu_and_history(two_cpu_strategy, tmp_path):
    # The trainer's own callbacks (validation BLEU decodes the mirrored
    # model outside the replica context; CSV history; time budget) under
    # MirroredStrategy, with a tied, shared-vocabulary model.
    import csv

    from keras_s2s.training import train
    from keras_s2s.training.settings import make_configs
    from tests.helpers import TINY_SETTINGS

    settings = dict(TINY_SETTINGS, shared_vocabulary=True, tie_embeddings="all",
                    validation_bleu_sentences=16, time_budget_minutes=30.0)
    model_settings, train_config = make_configs(settings)
    run_dir = str(tmp_path / "run")
    _, history = train(run_dir, train_config, model_settings, strategy=two_cpu_strategy)
    assert len(history["val_bleu"]) == 2 and all(0 <= b <= 100 for b in history["val_bleu"])
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["val_bleu"]) == pytest.approx(history["val_bleu"][1])
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["replicas"] == 2


def test_any_worker_is_the_flag_itself_on_one_worker(two_cpu_strategy):
    from keras_s2s.training.callbacks import any_worker

    for strategy in (None, tf.distribute.get_strategy(), two_cpu_strategy):
        assert any_worker(strategy, True) is True
        assert any_worker(strategy, False) is False


@pytest.mark.slow
def test_two_worker_processes_with_clipping_equal_the_default_strategy(tmp_path):
    # Issue 20 / KNOWN_TRAPS 14 across processes: each worker clips the
    # all-reduced gradient, so two workers train the one-device weights.
    from tests.helpers import assert_same_weights

    returncodes, outputs = _run_two_workers(tmp_path, {"KERAS_S2S_CLIPPED_RUNS": "1"})
    for code, out in zip(returncodes, outputs):
        assert code == 0, out[-3000:]
        assert "CollectiveAllReduceStrategy replicas=2" in out
    for name, settings in distributed_job.CLIPPED_RUNS.items():
        _, reference = distributed_job.train(tf.distribute.get_strategy(), **settings)
        for worker in ("w0", "w1"):
            stored = np.load(tmp_path / f"clip_{name}_{worker}.npz")
            weights = [stored[f"w{i}"] for i in range(len(stored.files))]
            assert_same_weights(weights, reference, settings)
