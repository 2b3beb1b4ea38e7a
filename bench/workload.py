"""The shared peer workload, imported by path from ../shared/bench/peers.

`common.py` (sizes, synthetic data, FLOP formula, timing protocol) and
`keras_timing.py` (the `model.fit` window timer) are read from the shared
folder, never copied, so keras_s2s is timed exactly as the peers are.

Two environment variables carry the run's settings into the child processes:
`BENCH_QUICK` (read by common.py itself: fewer, shorter windows) and
`KERAS_S2S_BENCH_REPEATS` (`--repeats`: timed windows and decode repeats).
"""

from __future__ import annotations

import importlib
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_DIR = os.environ.get(
    "BENCH_PEERS_DIR",
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "bench", "peers"),
)
REPEATS_ENV = "KERAS_S2S_BENCH_REPEATS"


def peer_module(name: str):
    """Imports a module of the shared peers folder (`common`, `keras_timing`, ...)."""
    if not os.path.isfile(os.path.join(PEERS_DIR, "common.py")):
        raise FileNotFoundError(
            f"The shared peer benchmarks must be at {PEERS_DIR} (../shared/bench/peers "
            "beside the repository); set BENCH_PEERS_DIR to their folder"
        )
    if PEERS_DIR not in sys.path:
        # First on the path: the peer scripts import their helpers by bare name.
        sys.path.insert(0, PEERS_DIR)
    module = importlib.import_module(name)
    if name == "common":
        _apply_repeats(module)
    return module


def common():
    """The shared `common` module, with `--repeats` applied."""
    return peer_module("common")


def _apply_repeats(common_module) -> None:
    """`--repeats N`: N timed windows and N timed decode calls, peers included."""
    value = os.environ.get(REPEATS_ENV)
    if not value:
        return
    repeats = int(value)
    common_module.TIMED_WINDOWS = repeats
    common_module.DECODE_REPEATS = repeats
    # `time_repeats` bound its defaults when common.py was imported.
    common_module.time_repeats.__defaults__ = (repeats, common_module.DECODE_WARMUP)


def protocol(common_module) -> dict:
    """The workload and timing constants in force, for the results file."""
    names = (
        "VOCAB", "D_MODEL", "HEADS", "D_FF", "N_ENC", "N_DEC", "DROPOUT", "MAX_POS",
        "BATCH", "SRC_LEN", "TGT_LEN", "MIN_LEN", "MAX_LEN", "N_DISTINCT_BATCHES", "SEED",
        "WINDOW_STEPS", "WARMUP_WINDOWS", "TIMED_WINDOWS", "DECODE_NEW_TOKENS",
        "DECODE_REPEATS", "DECODE_WARMUP", "PAD", "BOS", "EOS",
    )
    return {name: getattr(common_module, name) for name in names}
