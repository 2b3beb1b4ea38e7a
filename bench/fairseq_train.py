"""Child process: the fairseq peer of `multi30k-train`, same data, pieces, model and batches.

Runs `fairseq-train` of a separate virtual environment (`--venv`; fairseq and
torch are never imported here) on fairseq's binarized copy of the Multi30k
training set, encoded with the keras_s2s SentencePiece model of the same
config (bench.multi30k_data caches both). Its flags are the recipe of issue
17 with the architecture read from the keras_s2s config: Transformer, all
embeddings shared, Adam (0.9, 0.98), lr 0.005, inverse-sqrt warm-up,
label-smoothed cross-entropy 0.1, `--max-tokens` = the config's
`batch_tokens`, `--update-freq` 1 (the committed config's `accumulation_steps`), and no
validation (`--disable-validation`) nor checkpoints (`--no-save`).

Timing: fairseq's own meters. `--log-interval` = `--window-steps`, and each
`train_inner` line after the warm-up epoch(s) is one window (tokens = wpb x
interval, seconds = tokens / wps); the harness stops fairseq (SIGTERM to
its own child) once it has `--windows` of them. Peak RSS from `wait4` of
the fairseq process, and its RSS (with its data-loader workers) sampled at
every log line.

    python -m bench.fairseq_train --venv VENV --data-dir DIR --out PATH [--peak-gflops G]
        [--config FILE] [--warmup-epochs 1] [--windows 5] [--window-steps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time

from bench import fairseq_log, multi30k_data, train_metrics
from bench.multi30k_train import add_protocol_arguments, check_protocol_arguments

# Issue 17's fairseq recipe, except the architecture (from the config) and
# the batch (--max-tokens from the config's batch_tokens).
RECIPE = [
    "--arch", "transformer", "--share-all-embeddings",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
    "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "2000", "--warmup-init-lr", "1e-07",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
]
POLL_SECONDS = 0.2
TIMEOUT_SECONDS = 1800


def train_command(venv: str, bin_dir: str, save_dir: str, model: dict, batch_tokens: int,
                  update_freq: int, log_interval: int, max_epoch: int) -> list[str]:
    """fairseq-train's argument list for the model of a keras_s2s ModelConfig dict."""
    return [
        multi30k_data.fairseq_command(venv, "fairseq-train"), bin_dir, "--cpu",
        *RECIPE,
        "--encoder-layers", str(model["num_encoder_layers"]),
        "--decoder-layers", str(model["num_decoder_layers"]),
        "--encoder-embed-dim", str(model["hidden_dim"]),
        "--decoder-embed-dim", str(model["hidden_dim"]),
        "--encoder-ffn-embed-dim", str(model["intermediate_dim"]),
        "--decoder-ffn-embed-dim", str(model["intermediate_dim"]),
        "--encoder-attention-heads", str(model["num_heads"]),
        "--decoder-attention-heads", str(model["num_heads"]),
        "--dropout", str(model["dropout"]),
        "--max-tokens", str(batch_tokens), "--update-freq", str(update_freq),
        "--max-epoch", str(max_epoch),
        "--disable-validation", "--no-save", "--save-dir", save_dir,
        "--log-format", "json", "--log-interval", str(log_interval),
    ]


def max_epochs_needed(warmup_epochs: int, windows: int, window_steps: int, target_tokens: int,
                      batch_tokens: int, update_freq: int) -> int:
    """An upper bound on the epochs the warm-up and the windows take.

    A batch holds at most `batch_tokens` target tokens, so an epoch has at
    least ceil(target_tokens / batch_tokens) batches, and the timed updates
    (one interval may be lost aligning to the log interval) fit in that many
    epochs after the warm-up.
    """
    updates_per_epoch = max(1, math.ceil(target_tokens / batch_tokens) // update_freq)
    return warmup_epochs + math.ceil((windows + 1) * window_steps / updates_per_epoch) + 1


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (fairseq's data-loader workers)."""
    stack, seen = [pid], []
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="utf-8") as f:
                    stack += [int(child) for child in f.read().split()]
        except (OSError, ValueError):
            continue
    return seen


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its descendants so far, seconds."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for current in tree_pids(pid):
        try:
            with open(f"/proc/{current}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def tree_rss_mib(pid: int) -> float | None:
    """VmRSS of a process and its descendants (fairseq's data-loader workers), MiB."""
    total, found = 0, False
    for current in tree_pids(pid):
        try:
            with open(f"/proc/{current}/status", encoding="utf-8") as f:
                total += next((int(line.split()[1]) for line in f
                               if line.startswith("VmRSS:")), 0)
            found = True
        except OSError:
            continue
    return total / 1024.0 if found else None


def run_fairseq(command: list[str], log_path: str, warmup_epochs: int, windows: int,
                log_interval: int, env: dict) -> dict:
    """Runs fairseq-train, reading its log as it goes; stops it after the windows."""
    records: list[fairseq_log.Record] = []
    started = time.perf_counter()
    stopped = timed_out = False
    with open(log_path, "w", encoding="utf-8") as log, \
            open(log_path, encoding="utf-8") as reader:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        pending = ""
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            pending += reader.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                parsed = fairseq_log.parse_line(line)
                if parsed:
                    records.append(fairseq_log.Record(*parsed, time.perf_counter(),
                                                      tree_rss_mib(proc.pid),
                                                      tree_cpu_seconds(proc.pid)))
            if pid:
                break
            enough = len(fairseq_log.timed_windows(records, warmup_epochs, log_interval,
                                                   windows)) >= windows
            too_long = time.perf_counter() - started > TIMEOUT_SECONDS
            if (enough or too_long) and not stopped:
                os.kill(proc.pid, signal.SIGTERM)  # our own child, by its pid
                stopped, timed_out = True, too_long
            time.sleep(POLL_SECONDS)
    return {
        "records": records,
        "returncode": os.waitstatus_to_exitcode(status),
        "stopped_by_harness": stopped,
        "timed_out": timed_out,
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,  # Linux: KiB; fairseq and its reaped workers
    }


def fairseq_dictionary_size(path: str, padding_factor: int = 8) -> int:
    """Rows of fairseq's embedding for a dict.txt: its symbols, 4 specials
    (<s>, <pad>, </s>, <unk>), padded to a multiple of `padding_factor`
    (fairseq-preprocess's default)."""
    with open(path, encoding="utf-8") as f:
        symbols = 4 + sum(1 for line in f if line.strip())
    return symbols + (-symbols) % padding_factor


def venv_versions(venv: str) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('torch', 'fairseq-fixed', 'numpy')}))")
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def run(args) -> dict:
    from bench.multi30k_train import settings_for
    from keras_s2s.training.settings import make_configs

    timed_steps = args.windows * args.window_steps
    values = settings_for(args.config, args.data_dir, args.warmup_epochs, timed_steps, {})
    model_settings, train_config = make_configs(values)
    tokenizers, tokenizers_cached = multi30k_data.tokenizer_dir(args.data_dir, train_config)
    model_path = multi30k_data.shared_model_path(tokenizers)
    started = time.perf_counter()
    data_dir, bin_cached = multi30k_data.fairseq_bin_dir(args.venv, model_path, args.data_dir)
    prepare_seconds = time.perf_counter() - started
    dictionary_size = fairseq_dictionary_size(os.path.join(data_dir, "bin", "dict.de.txt"))

    import sentencepiece as spm

    from keras_s2s.config import ModelConfig

    vocabulary = spm.SentencePieceProcessor(model_file=model_path).get_piece_size()
    model = ModelConfig(source_vocabulary_size=vocabulary, target_vocabulary_size=vocabulary,
                        **model_settings).to_dict()
    # fairseq's output layer has a row per dictionary entry: the pieces seen in
    # the encoded corpus, 4 specials, padded to a multiple of 8.
    dims = train_metrics.TransformerDims(model["hidden_dim"], model["intermediate_dim"],
                                         model["num_encoder_layers"],
                                         model["num_decoder_layers"], dictionary_size)
    lengths, dropped = multi30k_data.piece_lengths(
        tokenizers, args.data_dir, model["max_length"], train_config.max_source_words)
    flops = train_metrics.corpus_flops(dims, lengths)
    max_epoch = max_epochs_needed(args.warmup_epochs, args.windows, args.window_steps,
                                  flops.target_tokens, train_config.batch_tokens,
                                  args.update_freq)
    save_dir = tempfile.mkdtemp(prefix="keras_s2s_bench_fairseq_run_")
    command = train_command(args.venv, os.path.join(data_dir, "bin"), save_dir, model,
                            train_config.batch_tokens, args.update_freq, args.window_steps,
                            max_epoch)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # fairseq's venv, not this repository
    log_path = args.log or os.path.splitext(args.out)[0] + ".fairseq.log"
    try:
        fairseq = run_fairseq(command, log_path, args.warmup_epochs, args.windows,
                              args.window_steps, env)
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)
    records = fairseq.pop("records")
    windows = fairseq_log.timed_windows(records, args.warmup_epochs, args.window_steps,
                                        args.windows)
    epochs = fairseq_log.epochs(records)
    updates_per_epoch = epochs[0]["updates"] if epochs else None
    batches_per_epoch = updates_per_epoch * args.update_freq if updates_per_epoch else None
    if fairseq["returncode"] != 0 and not fairseq["stopped_by_harness"]:
        raise SystemExit(f"fairseq-train failed (exit {fairseq['returncode']}); see {log_path}")
    return {
        "name": "multi30k-train-fairseq",
        "framework": "fairseq",
        "versions": venv_versions(args.venv),
        "command": command,
        "protocol": {"warmup_epochs": args.warmup_epochs, "windows": args.windows,
                     "window_steps": args.window_steps, "update_freq": args.update_freq},
        "data": {"tokenizers_from_cache": tokenizers_cached, "bin_from_cache": bin_cached,
                 "prepare_seconds": prepare_seconds, "dictionary_size": dictionary_size,
                 "sentencepiece_vocabulary": vocabulary},
        "batches_per_epoch": batches_per_epoch,
        "updates_per_epoch": updates_per_epoch,
        "epochs": epochs,
        "flops": {"matmul_params_N": train_metrics.matmul_params(dims),
                  "corpus": flops.to_dict(), "pairs_dropped": dropped},
        "batch_shapes": None,
        "train_function_traces": None,
        "not_applicable": "batch shapes and traces: fairseq runs torch eagerly, nothing is traced",
        "fairseq_log": log_path,
        **fairseq,
        **train_metrics.summarize(windows, batches_per_epoch, flops.per_target_token,
                                  args.peak_gflops),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", required=True,
                        help="virtual environment with fairseq-fixed (bench/README.md)")
    parser.add_argument("--log", default=None,
                        help="fairseq-train's log (default: --out with .fairseq.log)")
    add_protocol_arguments(parser,
                           config_help="keras_s2s config whose model, pieces and batch size to copy",
                           window_steps_help="updates per timed window = --log-interval")
    parser.add_argument("--update-freq", type=int, default=1,
                        help="fairseq's --update-freq (default %(default)s, as the committed "
                             "config's accumulation_steps)")
    args = parser.parse_args(argv)
    check_protocol_arguments(parser, args)
    for problem in (multi30k_data.skip_reason(args.data_dir),
                    multi30k_data.fairseq_venv_problem(args.venv)):
        if problem:
            raise SystemExit(f"multi30k-train fairseq: {problem}")
    result = run(args)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"fairseq: {result.get('tokens_per_s_median')} target tokens/s (median), "
          f"{result.get('seconds_per_epoch')} s/epoch, MFU {result.get('mfu')}, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
