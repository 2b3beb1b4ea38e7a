"""Where the time goes: a TF profiler trace of keras_s2s on the shared workload, by op.

Not part of `make bench` (a trace slows the steps it records). Without XLA, so
that every TensorFlow op is visible; prints the share of busy (non-idle) op
time per op type and the heaviest single ops, for `fit` steps and / or
greedy-decode calls.

    python -m bench.profile_ops [--train-steps 8] [--decode-calls 3] [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import tempfile

from bench import workload

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_stats(logdir: str) -> list[dict]:
    """Rows of the profiler's framework_op_stats table for the trace in `logdir`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"the profiler could not convert the trace in {logdir}")
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    rows = [dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
            for row in table["rows"]]
    return [row for row in rows if row["type"] != "IDLE"]


def summarize(rows: list[dict], top: int) -> dict:
    busy = sum(row["total_self_time"] for row in rows) or 1.0
    by_type = collections.Counter()
    for row in rows:
        by_type[row["type"]] += row["total_self_time"]
    heaviest = sorted(rows, key=lambda row: -row["total_self_time"])[:top]
    return {
        "busy_op_ms": busy / 1e3,
        "by_type": [(name, round(100 * t / busy, 1)) for name, t in by_type.most_common(top)],
        "heaviest_ops": [(row["operation"].split("/", 1)[-1], row["type"],
                          round(100 * row["total_self_time"] / busy, 1)) for row in heaviest],
    }


def trace(fn, top: int) -> dict:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="keras_s2s_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            fn()
        finally:
            tf.profiler.experimental.stop()
        return summarize(op_stats(logdir), top)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=8, help="fit steps traced (0: none)")
    parser.add_argument("--decode-calls", type=int, default=3,
                        help="greedy_decode calls traced (0: none)")
    parser.add_argument("--top", type=int, default=15, help="rows per list")
    args = parser.parse_args(argv)

    from bench import s2s_variant

    common = workload.common()
    import keras
    import tensorflow as tf

    from keras_s2s import build_transformer
    from keras_s2s.config import TrainConfig
    from keras_s2s.decoding import greedy_decode
    from keras_s2s.training import compile_model

    src, dec_in, labels = common.make_data()
    keras.utils.set_random_seed(0)
    model = build_transformer(s2s_variant.model_config(common))
    report = {}
    if args.train_steps:
        compile_model(model, TrainConfig(label_smoothing=0.1), jit_compile=False)
        dataset = s2s_variant.make_dataset(common, src, dec_in, labels)
        model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)  # trace outside the profile
        report["train (fit, no XLA)"] = trace(
            lambda: model.fit(dataset, epochs=1, steps_per_epoch=args.train_steps, verbose=0),
            args.top)
    if args.decode_calls:
        sources = tf.constant(src[: common.BATCH])

        def decode():
            return greedy_decode(model, sources, start_id=common.BOS, end_id=common.EOS,
                                 max_length=common.DECODE_NEW_TOKENS, jit_compile=False)
        decode()

        def decode_calls():
            for _ in range(args.decode_calls):
                decode().numpy()
        report["greedy_decode (no XLA)"] = trace(decode_calls, args.top)

    for what, summary in report.items():
        print(f"\n## {what}: {summary['busy_op_ms']:.0f} ms busy op time")
        print("op type shares (% of busy op time):")
        for name, share in summary["by_type"]:
            print(f"  {share:5.1f}%  {name}")
        print("heaviest ops:")
        for name, kind, share in summary["heaviest_ops"]:
            print(f"  {share:5.1f}%  {kind:20s} {name[-110:]}")


if __name__ == "__main__":
    main()
