"""Child process: runs one shared peer script exactly as `python SCRIPT ARGS` would.

The script runs as `__main__` with the peers folder first on `sys.path` (as
running it from there does); the only addition is `--repeats` (timed windows
and decode repeats), applied to the shared `common` module before the script
starts. The script writes its own result file into BENCH_RAW_DIR.

    python -m bench.peer_runner peer_a_kerashub.py --jit 1
"""

from __future__ import annotations

import os
import runpy
import sys

from bench import workload


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m bench.peer_runner SCRIPT [ARGS...]")
    script = os.path.join(workload.PEERS_DIR, argv[0])
    if not os.path.isfile(script):
        raise SystemExit(f"no peer script {script}")
    workload.common()  # imported once, with --repeats applied, before the script's import
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
