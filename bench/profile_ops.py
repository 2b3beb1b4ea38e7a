"""Where the time goes: a TF profiler trace of keras_s2s on the shared workload, by op.

Not part of `make bench` (a trace slows the steps it records). Two modes:

- default, no XLA: every TensorFlow op is visible; prints the share of busy
  (non-idle) op time per op type and the heaviest single ops, for `fit` steps
  and / or greedy-decode calls.
- `--xla`: one search (`--search greedy|beam`) compiled with XLA, as
  `decode(..., jit_compile=True)` runs it. The whole search is one XLA
  function, which the TF profiler shows as a single op; XLA's CPU runtime is
  asked for one trace event per HLO thunk (`--xla_cpu_enable_xprof_traceme`)
  and dumps the optimized HLO, whose metadata names the TensorFlow op each
  HLO instruction came from. Prints the shares of busy thunk time per
  TensorFlow op (the decoder layers merged) and per HLO instruction.

    python -m bench.profile_ops [--train-steps 8] [--decode-calls 3] [--top 15]
    python -m bench.profile_ops --xla [--search greedy|beam] [--decode-calls 3] [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import tempfile

from bench import s2s_variant, workload

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def op_stats(logdir: str) -> list[dict]:
    """Rows of the profiler's framework_op_stats table for the trace in `logdir`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    data, ok = plugin.xspace_to_tools_data(xplane_paths(logdir), "framework_op_stats", {})
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


# HLO instructions that only run other thunks (a loop, a branch, a call):
# their trace events span their bodies' events, so they are not counted.
CONTROL_FLOW_OPCODES = frozenset({"while", "conditional", "call"})

# `  %dot.171 = f32[64,768]{1,0} dot(%a, %b), ..., metadata={op_type="Einsum" op_name="..."}`;
# the shape may be a tuple with spaces, `(f32[64]{0}, s32[64]{0}) fusion(...)`.
_HLO_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?(\S+) = .*? ([a-z][\w-]*)\(")
_HLO_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """`name -> (opcode, TensorFlow op name)` for the instructions of an HLO module's text.

    Instructions of fused computations are included too; they never appear
    as thunks, so they are never looked up.
    """
    instructions = {}
    for line in hlo_text.splitlines():
        match = _HLO_INSTRUCTION.match(line)
        if match is None:
            continue
        op_name = _HLO_OP_NAME.search(line)
        instructions[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
    return instructions


def tf_op_group(op_name: str) -> str:
    """A TensorFlow op name with loop prefixes and Keras scope / layer numbers removed.

    `while/decoder_layer_2_1/feed_forward_block_1/feed_forward_1/output_1/MatMul`
    -> `decoder_layer/feed_forward_block/feed_forward/output/MatMul`, so the
    same op of every decoder layer (and of every loop step) adds up.
    """
    name = re.sub(r"^(while/)+", "", op_name)
    name = re.sub(r"(_\d+)+(?=/|$)", "", name)
    return name or "(no TensorFlow op)"


def xla_thunk_summary(xspace_paths: list[str], instructions: dict, calls: int,
                      top: int) -> dict:
    """Busy thunk time of the traced calls, per TensorFlow op group and per HLO instruction.

    Counts the trace events named after an instruction of the module (the
    thunks), except control flow. Two threads run thunks side by side, so
    busy thunk time can exceed the wall time.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    per_instruction = collections.Counter()  # name -> picoseconds
    launches = collections.Counter()
    for path in xspace_paths:
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id)
                    known = instructions.get(name)
                    if known is None or known[0] in CONTROL_FLOW_OPCODES:
                        continue
                    per_instruction[name] += event.duration_ps
                    launches[name] += 1
    if not per_instruction:
        raise RuntimeError(
            "the trace has no XLA thunk events: XLA_FLAGS must carry "
            "--xla_cpu_enable_xprof_traceme=true before TensorFlow starts"
        )
    busy = sum(per_instruction.values())
    per_group = collections.Counter()
    for name, picoseconds in per_instruction.items():
        per_group[tf_op_group(instructions[name][1])] += picoseconds
    return {
        "busy_thunk_ms_per_call": busy / 1e9 / calls,
        "by_tf_op": [(group, round(100 * ps / busy, 1))
                     for group, ps in per_group.most_common(top)],
        "heaviest_hlo": [(name, instructions[name][0], launches[name] // calls,
                          round(100 * ps / busy, 1), tf_op_group(instructions[name][1]))
                         for name, ps in per_instruction.most_common(top)],
    }


def trace(fn, read):
    """Runs `fn` under the TF profiler and returns `read(logdir)` of its trace."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="keras_s2s_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            fn()
        finally:
            tf.profiler.experimental.stop()
        return read(logdir)


def xplane_paths(logdir: str) -> list[str]:
    return glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)


def xla_flags_for_profile(dump_dir: str, existing: str | None) -> str:
    """XLA_FLAGS with one trace event per CPU thunk and the optimized HLO dumped as text."""
    flags = [existing or "", "--xla_cpu_enable_xprof_traceme=true",
             f"--xla_dump_to={dump_dir}", "--xla_dump_hlo_as_text"]
    return " ".join(flag for flag in flags if flag)


def search_module_text(dump_dir: str) -> str:
    """The optimized HLO of the one compiled search function in `dump_dir`."""
    paths = [path for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
             if "search" in os.path.basename(path)]
    if len(paths) != 1:
        raise RuntimeError(f"expected one optimized HLO module of the search in {dump_dir}, "
                           f"found {len(paths)}: {sorted(map(os.path.basename, paths))}")
    with open(paths[0]) as file:
        return file.read()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xla", action="store_true",
                        help="profile one search compiled with XLA, per HLO thunk")
    parser.add_argument("--search", choices=("greedy", "beam"), default="greedy",
                        help=f"the search traced (beam: {s2s_variant.BEAM_SIZE} beams)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="fit steps traced without XLA (default 8; 0: none; not with --xla)")
    parser.add_argument("--decode-calls", type=int, default=3,
                        help="search calls traced (0: none)")
    parser.add_argument("--top", type=int, default=15, help="rows per list")
    args = parser.parse_args(argv)
    if args.xla and args.train_steps:
        parser.error("--xla profiles a search only; --train-steps must be 0 or left out "
                     f"with it (received --train-steps {args.train_steps})")
    if args.xla and args.decode_calls < 1:
        parser.error(f"--xla needs --decode-calls >= 1 (received {args.decode_calls})")
    if args.train_steps is None:
        args.train_steps = 0 if args.xla else 8
    if not args.xla:
        return profile(args, dump_dir=None)
    # Before TensorFlow starts: XLA reads its flags once per process.
    dump_dir = tempfile.mkdtemp(prefix="keras_s2s_hlo_")
    try:
        os.environ["XLA_FLAGS"] = xla_flags_for_profile(dump_dir, os.environ.get("XLA_FLAGS"))
        return profile(args, dump_dir)
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)


def profile(args, dump_dir: str | None) -> None:
    """Traces what `args` asks for and prints the summaries; `dump_dir`: the HLO dump (--xla)."""
    common = workload.common()
    import keras
    import tensorflow as tf

    from keras_s2s import build_transformer
    from keras_s2s.config import TrainConfig
    from keras_s2s.decoding import Beam, Greedy
    from keras_s2s.decoding import decode as decode_batch
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
            lambda logdir: summarize(op_stats(logdir), args.top))
    if args.decode_calls:
        sources = tf.constant(src[: common.BATCH])
        options = {"start_id": common.BOS, "end_id": common.EOS,
                   "max_length": common.DECODE_NEW_TOKENS, "jit_compile": args.xla}

        def decode():
            if args.search == "greedy":
                return decode_batch(model, sources, Greedy(), **options)[0]
            return decode_batch(model, sources, Beam(size=s2s_variant.BEAM_SIZE), **options)[0]
        decode()  # traced (and compiled) outside the profile

        def decode_calls():
            for _ in range(args.decode_calls):
                decode().numpy()
        what = f"{args.search} search, {'XLA' if args.xla else 'no XLA'}"
        if args.xla:
            instructions = hlo_instructions(search_module_text(dump_dir))
            report[what] = trace(decode_calls, lambda logdir: xla_thunk_summary(
                xplane_paths(logdir), instructions, args.decode_calls, args.top))
        else:
            report[what] = trace(decode_calls, lambda logdir: summarize(op_stats(logdir), args.top))

    for what, summary in report.items():
        if "busy_thunk_ms_per_call" in summary:
            print_xla_summary(what, summary)
            continue
        print(f"\n## {what}: {summary['busy_op_ms']:.0f} ms busy op time")
        print("op type shares (% of busy op time):")
        for name, share in summary["by_type"]:
            print(f"  {share:5.1f}%  {name}")
        print("heaviest ops:")
        for name, kind, share in summary["heaviest_ops"]:
            print(f"  {share:5.1f}%  {kind:20s} {name[-110:]}")


def print_xla_summary(what: str, summary: dict) -> None:
    print(f"\n## {what}: {summary['busy_thunk_ms_per_call']:.0f} ms busy thunk time per call "
          "(two threads: may exceed the wall time)")
    print("TensorFlow ops (decoder layers merged; % of busy thunk time):")
    for group, share in summary["by_tf_op"]:
        print(f"  {share:5.1f}%  {group[-110:]}")
    print("heaviest HLO instructions (runs per call):")
    for name, opcode, runs, share, group in summary["heaviest_hlo"]:
        print(f"  {share:5.1f}%  {name:28s} {opcode:12s} {runs:4d}x  {group[-80:]}")


if __name__ == "__main__":
    main()
