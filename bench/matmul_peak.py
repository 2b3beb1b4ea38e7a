"""Child process: this machine's fp32 `tf.matmul` peak, the MFU denominator.

The approach of ../shared/bench/peers/matmul_peak.py (its own `bench`
function is reused): median GFLOP/s of n x n matmuls for n in {2048, 4096},
the peak being the larger median. torch.matmul, which that script also
times, is left out: torch is not a keras_s2s dependency.

    python -m bench.matmul_peak --out PATH
"""

from __future__ import annotations

import argparse
import json
import os

from bench import workload

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = ((2048, 10), (4096, 5))  # (n, timed repetitions), as the shared script


def measure() -> dict:
    common = workload.common()
    shared = workload.peer_module("matmul_peak")
    import numpy as np
    import tensorflow as tf

    before = common.cpu_stat()
    results = {}
    for n, reps in SIZES:
        rng = np.random.default_rng(0)
        a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
        b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))

        def matmul(a=a, b=b):
            # CPU eager ops are synchronous; reading one element keeps it honest.
            return float(tf.matmul(a, b)[0, 0])

        results[str(n)] = shared.bench(matmul, n, reps)
    return {
        "tf_version": tf.__version__,
        "tf_matmul": results,
        "peak_gflops": max(r["gflops_median"] for r in results.values()),
        "peak_definition": "max over n in {2048, 4096} of median tf.matmul fp32 GFLOP/s",
        "cpu": common.cpu_delta(before, common.cpu_stat()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    result = measure()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"tf.matmul fp32 peak {result['peak_gflops']:.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
