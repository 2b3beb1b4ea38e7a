"""Child process: keras_s2s training on Multi30k through `keras_s2s.training.train`.

The committed config (training/configs/multi30k_en_de.json by default) is
resolved as `python -m training.train --config ...` resolves it, with these
overrides: the training files of `--data-dir`, no validation (`valid ""`,
no validation BLEU: the fairseq peer runs with `--disable-validation`), no
time budget, and enough epochs for the warm-up plus the timed steps. Then
`train()` itself runs: its tokenizers (copied from a cache that keras_s2s's
`prepare_tokenizers` filled once), its dataset, model, `compile_model` and
callbacks, and its `model.fit`, measured from outside by `bench.train_probe`
(a callback appended to the fit, token and shape counters in the step).

Timing: `--warmup-epochs` epochs first (every batch shape traced, caches
filled), then `--windows` windows of `--window-steps` steps; a window runs
from its first step's begin to its last step's end (callbacks between steps
included, an epoch's end too when one falls inside). Tokens = non-pad label
tokens. FLOPs per target token come from the corpus (bench.train_metrics).

    python -m bench.multi30k_train --data-dir DIR --out PATH [--peak-gflops G]
        [--config FILE] [--warmup-epochs 1] [--windows 5] [--window-steps 30]
        [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from bench import multi30k_data, train_metrics
from bench.workload import REPO_ROOT

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "training", "configs", "multi30k_en_de.json")
DEFAULT_WARMUP_EPOCHS = 1
DEFAULT_WINDOWS = 5
DEFAULT_WINDOW_STEPS = 30  # 5 x 30 = 150 steps, about one epoch of the committed config


def settings_for(config_path: str, data_dir: str, warmup_epochs: int, timed_steps: int,
                 overrides: dict) -> dict:
    """The config file's settings, pointed at `data_dir`, with the bench's overrides."""
    from keras_s2s.training.settings import resolve_settings

    source, target = multi30k_data.train_files(data_dir)
    flags = {
        "train": f"{source},{target}",
        "valid": "",
        "test": "",
        "validation_bleu_sentences": 0,
        "time_budget_minutes": 0.0,
        # An upper bound: every epoch has at least one step; the probe stops
        # the fit after the timed steps.
        "epochs": warmup_epochs + max(1, timed_steps),
        "verbose": 2,
        **overrides,
    }
    return resolve_settings(config_path, flags)


def parse_overrides(items) -> dict:
    """`--set KEY=VALUE` pairs, VALUE as JSON when it parses (numbers, booleans), else text."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE; received {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args) -> dict:
    import keras
    import tensorflow as tf

    import keras_s2s
    from bench.train_probe import StepProbe, instrument_fit, peak_rss_mib, rss_mib
    from keras_s2s import data
    from keras_s2s.config import ModelConfig
    from keras_s2s.training import train
    from keras_s2s.training.settings import make_configs

    timed_steps = args.windows * args.window_steps
    values = settings_for(args.config, args.data_dir, args.warmup_epochs, timed_steps,
                          parse_overrides(args.set))
    model_settings, train_config = make_configs(values)

    started = time.perf_counter()
    tokenizers, from_cache = multi30k_data.tokenizer_dir(args.data_dir, train_config)
    tokenizer_seconds = time.perf_counter() - started
    source_tokenizer, target_tokenizer = data.load_tokenizers(tokenizers)
    model_config = ModelConfig(source_vocabulary_size=source_tokenizer.vocabulary_size,
                               target_vocabulary_size=target_tokenizer.vocabulary_size,
                               **model_settings)
    dims = train_metrics.TransformerDims(
        model_config.hidden_dim, model_config.intermediate_dim,
        model_config.num_encoder_layers, model_config.num_decoder_layers,
        model_config.target_vocabulary_size)
    lengths, dropped = multi30k_data.piece_lengths(
        tokenizers, args.data_dir, model_config.max_length, train_config.max_source_words)
    flops = train_metrics.corpus_flops(dims, lengths)

    run_dir = tempfile.mkdtemp(prefix="keras_s2s_bench_multi30k_")
    try:
        for name in os.listdir(tokenizers):
            shutil.copyfile(os.path.join(tokenizers, name), os.path.join(run_dir, name))
        probe = StepProbe(args.warmup_epochs, timed_steps, pad_id=data.PAD_ID)
        rss_before_train = rss_mib()
        train_started = time.perf_counter()
        with instrument_fit(probe):
            model, _ = train(run_dir, train_config, model_settings)
        train_call_seconds = time.perf_counter() - train_started
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    warmup_steps = probe.timed_start if probe.timed_start is not None else len(probe.step_end)
    windows = train_metrics.split_windows(probe.step_begin, probe.step_end, probe.step_tokens,
                                          warmup_steps, args.window_steps, args.windows,
                                          probe.step_rss_mib, probe.step_cpu)
    # train() passes one pass over the data (counted) as `steps_per_epoch`.
    batches_per_epoch = probe.steps_per_epoch or (
        probe.epochs[0]["steps"] if probe.epochs else None)
    shapes_in_warmup = set(probe.step_shapes[:warmup_steps])
    shape_counts: dict[str, int] = {}
    for shape in probe.step_shapes:
        key = "x".join(map(str, shape))
        shape_counts[key] = shape_counts.get(key, 0) + 1
    traces = probe.epochs[-1]["train_function_traces"] if probe.epochs else {}
    result = {
        "name": "multi30k-train-keras_s2s",
        "framework": "keras_s2s",
        "keras_s2s_file": keras_s2s.__file__,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "config": os.path.relpath(args.config, REPO_ROOT),
        "settings": values,
        "train_config": train_config.to_dict(),
        "model_config": model_config.to_dict(),
        "tf_threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter": tf.config.threading.get_inter_op_parallelism_threads()},
        "tokenizers": {"from_cache": from_cache, "seconds": tokenizer_seconds,
                       "vocabulary_size": target_tokenizer.vocabulary_size},
        "protocol": {"warmup_epochs": args.warmup_epochs, "windows": args.windows,
                     "window_steps": args.window_steps, "accumulation_steps": 1},
        "batches_per_epoch": batches_per_epoch,
        "warmup": {
            "steps": warmup_steps,
            "seconds": sum(e["seconds"] for e in probe.epochs[:args.warmup_epochs]),
            "fit_start_to_first_step_end_seconds": (
                probe.step_end[0] - probe.fit_started if probe.step_end else None),
        },
        "train_call_seconds": train_call_seconds,
        "steps_run": len(probe.step_end),
        "epochs": probe.epochs,
        "flops": {"matmul_params_N": train_metrics.matmul_params(dims),
                  "corpus": flops.to_dict(), "pairs_dropped": dropped},
        "trainable_params": model.count_params(),
        "batch_shapes": {
            "distinct": len(shape_counts),
            "distinct_in_warmup": len(shapes_in_warmup),
            "new_after_warmup": len(set(probe.step_shapes[warmup_steps:]) - shapes_in_warmup),
            "counts": shape_counts,
            "dims": "all input tensors' dimensions, flattened: encoder (B, S), decoder (B, T), "
                    "labels (B, T)",
        },
        "train_function_traces": traces,
        "rss_mib_before_train": rss_before_train,
        "rss_mib_fit_start": probe.rss_mib_fit_start,
        "rss_mib_after_first_step": probe.step_rss_mib[0] if probe.step_rss_mib else None,
        "rss_growth_by_shape": train_metrics.rss_growth_by_shape(
            probe.step_shapes, probe.step_rss_mib, probe.rss_mib_fit_start),
        "steps": {  # per global step, in order
            "seconds": [end - begin for begin, end in zip(probe.step_begin, probe.step_end)],
            "tokens": probe.step_tokens,
            "shape": ["x".join(map(str, shape)) for shape in probe.step_shapes],
            "rss_mib": probe.step_rss_mib,
        },
        "peak_rss_mib": peak_rss_mib(),
        **train_metrics.summarize(windows, batches_per_epoch, flops.per_target_token,
                                  args.peak_gflops),
    }
    return result


def add_protocol_arguments(parser: argparse.ArgumentParser, config_help: str,
                           window_steps_help: str) -> None:
    """The flags both sides of the benchmark share: data, output, config and the timing protocol."""
    parser.add_argument("--data-dir", required=True,
                        help=f"Multi30k folder with {', '.join(multi30k_data.REQUIRED_FILES)}")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=config_help)
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="fp32 matmul peak for MFU (default: none, MFU not computed)")
    parser.add_argument("--warmup-epochs", type=int, default=DEFAULT_WARMUP_EPOCHS,
                        help="untimed epochs first (default %(default)s)")
    parser.add_argument("--windows", type=int, default=DEFAULT_WINDOWS,
                        help="timed windows after the warm-up (default %(default)s)")
    parser.add_argument("--window-steps", type=int, default=DEFAULT_WINDOW_STEPS,
                        help=f"{window_steps_help} (default %(default)s)")


def check_protocol_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Exits with argparse's usage error naming the flag and value when the protocol is impossible."""
    if args.warmup_epochs < 0:
        parser.error(f"--warmup-epochs must be non-negative; received {args.warmup_epochs}")
    for name in ("windows", "window_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer; "
                         f"received {getattr(args, name)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_arguments(parser, config_help="training config (default: the committed Multi30k one)",
                           window_steps_help="steps per timed window")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a setting of the config, as training.train's "
                             "--KEY VALUE (e.g. --set steps_per_epoch=20 for a smoke test)")
    args = parser.parse_args(argv)
    check_protocol_arguments(parser, args)
    problem = multi30k_data.skip_reason(args.data_dir)
    if problem:
        raise SystemExit(f"multi30k-train: {problem}")
    result = run(args)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"keras_s2s: {train_metrics_line(result)}", flush=True)


def train_metrics_line(result: dict) -> str:
    from bench.report import fmt

    return (f"{fmt(result.get('tokens_per_s_median'), '.0f')} target tokens/s (median), "
            f"{fmt(result.get('seconds_per_epoch'), '.0f')} s/epoch, "
            f"MFU {fmt(result.get('mfu'), '.3f')}, peak RSS "
            f"{fmt(result.get('peak_rss_mib'), '.0f')} MiB, "
            f"{result['batch_shapes']['distinct']} batch shapes, "
            f"traces {result['train_function_traces']}")


if __name__ == "__main__":
    main()
