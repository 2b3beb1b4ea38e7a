"""Child process: runs one shared peer script exactly as `python SCRIPT ARGS` would.

The script runs as `__main__` with the peers folder first on `sys.path` (as
running it from there does); the only addition is `--repeats` (timed windows
and decode repeats), applied to the shared `common` module before the script
starts. The script writes its own result file into BENCH_RAW_DIR.

`--policy NAME` (before the script) sets that Keras dtype policy first, so a
Keras peer runs under the same mixed precision as keras_s2s does; its result
file then goes to BENCH_RAW_DIR + "_" + NAME, beside the float32 one.

    python -m bench.peer_runner [--policy mixed_bfloat16] peer_a_kerashub.py --jit 1
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys

from bench import workload


def policy_raw_dir(raw_dir: str, policy: str) -> str:
    """Where a peer run under `--policy` writes its result file."""
    return f"{raw_dir}_{policy}"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m bench.peer_runner SCRIPT [ARGS...]")
    policy = None
    if argv[0] == "--policy":
        if len(argv) < 3:
            raise SystemExit("usage: python -m bench.peer_runner --policy NAME SCRIPT [ARGS...]")
        policy, argv = argv[1], argv[2:]
        base = os.environ.get("BENCH_RAW_DIR") or os.path.join(workload.PEERS_DIR, "raw")
        folder = policy_raw_dir(base, policy)
        # The measured matmul peak (the peer's MFU denominator) is read from
        # the same folder the results go to.
        peak = os.path.join(base, "matmul_peak.json")
        if os.path.isfile(peak):
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(peak, os.path.join(folder, "matmul_peak.json"))
        os.environ["BENCH_RAW_DIR"] = folder  # read by common.py when it is imported below
    script = os.path.join(workload.PEERS_DIR, argv[0])
    if not os.path.isfile(script):
        raise SystemExit(f"no peer script {script}")
    workload.common()  # imported once, with --repeats applied, before the script's import
    if policy:
        import keras

        keras.mixed_precision.set_dtype_policy(policy)
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
