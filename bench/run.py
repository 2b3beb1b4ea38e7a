"""`make bench`: keras_s2s against its peers on the shared workload, in one run.

Every measurement runs in its own child process, one at a time (2 cores: never
two measurements at once), so each peak RSS is that variant's own (`wait4`
rusage of the child) and every number comes from the same machine state:

    matmul peak -> keras_s2s XLA -> A XLA -> keras_s2s no XLA -> A no XLA
    -> keras_s2s bf16 no XLA -> A bf16 no XLA (on CPUs with bf16 units) -> optional peers (--include-peers) -> Multi30k bucketing -> SavedModel
    serving vs in-process -> Multi30k training, keras_s2s then fairseq (with --data-dir
    and --fairseq-venv) -> matmul peak again

This process imports no TensorFlow; it starts the children, collects their
JSON, writes `--out` and prints the markdown report.

    python -m bench.run [--quick] [--out bench/results/latest.json] [--repeats N]
                        [--include-peers B,B0,C,Cc,D] [--bf16 auto|yes|no] [--only JOB,...]
                        [--data-dir MULTI30K_DIR] [--fairseq-venv VENV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

from bench import multi30k_data, report, workload
from bench.multi30k_train import (
    DEFAULT_WARMUP_EPOCHS,
    DEFAULT_WINDOW_STEPS,
    DEFAULT_WINDOWS,
)
from bench.peer_runner import policy_raw_dir
from bench.s2s_variant import variant_name

DEFAULT_OUT = os.path.join("bench", "results", "latest.json")
# Optional peers: key -> (result name, script and arguments, module it needs).
OPTIONAL_PEERS = {
    "B": ("B_tftutorial_maskfix_jit1", ["peer_b_tftutorial.py", "--jit", "1", "--fixmask", "1"],
          None),
    "B0": ("B_tftutorial_maskfix_jit0", ["peer_b_tftutorial.py", "--jit", "0", "--fixmask", "1"],
           None),
    "C": ("C_torch_eager", ["peer_c_torch.py", "--compile", "0"], "torch"),
    "Cc": ("C_torch_compile", ["peer_c_torch.py", "--compile", "1"], "torch"),
    "D": ("D_ctranslate2", ["peer_d_ct2.py"], "ctranslate2"),
}
# B is not run by default: with its 24 XLA programs for decoding it costs
# 3-5 minutes, a third of the run; `--include-peers B` adds it. D
# (CTranslate2, decoding only) takes seconds; `make bench` installs it.
DEFAULT_PEERS = "D"
JOB_TIMEOUT_S = 1200
# multi30k-decode runs up to 8 decoding children of its own (each under JOB_TIMEOUT_S).
MULTI30K_DECODE_TIMEOUT_S = 8 * JOB_TIMEOUT_S
# The Multi30k training jobs: a warm-up epoch and about one timed epoch each,
# plus tokenization and caches on a first run.
MULTI30K_TIMEOUT_S = 3600
MULTI30K_OURS, MULTI30K_FAIRSEQ = "multi30k-train-keras_s2s", "multi30k-train-fairseq"
# `--only GROUP` selects all of its jobs.
JOB_GROUPS = {"multi30k-train": (MULTI30K_OURS, MULTI30K_FAIRSEQ)}
BF16 = "mixed_bfloat16"
# CPU flags of bfloat16 matmul units. Without them oneDNN emulates bfloat16:
# on an AVX2-only EPYC the keras_s2s bf16 job trained 4.2x slower than float32
# (226 against 950 tokens/s) and took 16 minutes, so `--bf16 auto` skips it.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="keras_s2s training and decoding throughput against peers, in one run.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the shared protocol's BENCH_QUICK windows "
                             "(3-step windows, 1 warm-up, 2 timed); not for results")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="results JSON (default %(default)s; bench/results/ is git-ignored)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed windows and timed decode calls, for keras_s2s and the "
                             "peers alike (default: the shared protocol's 5, 2 with --quick)")
    parser.add_argument("--include-peers", default=DEFAULT_PEERS,
                        help="comma-separated optional peers besides A (keras-hub, always "
                             "run): B = tutorial design with masks fixed, XLA; B0 = same "
                             "without XLA; C / Cc = torch eager / compiled (needs torch); "
                             "D = CTranslate2 (needs ctranslate2); default: none")
    parser.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                        help="the mixed-bfloat16 jobs (ours and keras-hub's): auto = only on "
                             "CPUs with bfloat16 matmul units (avx512_bf16 or amx_bf16)")
    parser.add_argument("--only", default="",
                        help="run only these jobs (comma-separated names as printed, e.g. "
                             "keras_s2s_jit1,bucketing; multi30k-train = both Multi30k "
                             "training jobs); the start matmul peak always runs")
    parser.add_argument("--data-dir", default=None,
                        help="Multi30k folder (train/val/test2016 .en and .de) for the "
                             "multi30k-train and multi30k-decode jobs; without it they are skipped")
    parser.add_argument("--fairseq-venv", default=None,
                        help="virtual environment with fairseq-fixed for the fairseq peers of "
                             "multi30k-train and multi30k-decode (install line in bench/README.md); "
                             "without it those peers are skipped")
    # multi30k-decode (bench.multi30k_decode): real-data decoding of a trained run.
    parser.add_argument("--run-dir", help="multi30k-decode: a trained Multi30k run directory")
    parser.add_argument("--fairseq-data-bin", help="multi30k-decode: fairseq-preprocessed Multi30k")
    parser.add_argument("--fairseq-checkpoint", help="multi30k-decode: a fairseq checkpoint")
    parser.add_argument("--multi30k-warmup-epochs", type=int, default=DEFAULT_WARMUP_EPOCHS,
                        help="multi30k-train: untimed epochs first (default %(default)s)")
    parser.add_argument("--multi30k-windows", type=int, default=DEFAULT_WINDOWS,
                        help="multi30k-train: timed windows (default %(default)s)")
    parser.add_argument("--multi30k-window-steps", type=int, default=DEFAULT_WINDOW_STEPS,
                        help="multi30k-train: steps per window (default %(default)s)")
    args = parser.parse_args(argv)
    if args.multi30k_warmup_epochs < 0:
        parser.error("--multi30k-warmup-epochs must be non-negative; received "
                     f"{args.multi30k_warmup_epochs}")
    for name in ("multi30k_windows", "multi30k_window_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer; "
                         f"received {getattr(args, name)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be a positive integer; received {args.repeats}")
    peers = [p.strip() for p in args.include_peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(OPTIONAL_PEERS))
    if unknown:
        parser.error(f"--include-peers: unknown {unknown}; choose from {sorted(OPTIONAL_PEERS)}")
    args.peers = peers
    args.only = [j.strip() for j in args.only.split(",") if j.strip()]
    return args


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def plan(args, raw_dir: str, log_dir: str | None = None):
    """Ordered jobs: (name, kind, argv, result file) plus the reasons for skipped ones."""
    py = sys.executable
    jobs, skipped = [], []

    def s2s(jit, precision="float32"):
        name = variant_name(bool(jit), precision)
        out = os.path.join(raw_dir, f"{name}.json")
        return (name, "s2s", [py, "-m", "bench.s2s_variant", "--jit", str(jit),
                              "--precision", precision, "--out", out], out)

    def peer(name, script_args):
        return (name, "peer", [py, "-m", "bench.peer_runner", *script_args], None)

    def bf16_peer(name, script_args, result_name):
        # The peer names its file itself, so the bf16 run writes to a folder of its own.
        quick = "_quick" if args.quick else ""
        out = os.path.join(policy_raw_dir(raw_dir, BF16) + quick, result_name + ".json")
        return (name, "peer", [py, "-m", "bench.peer_runner", "--policy", BF16, *script_args],
                out)

    jobs.append(("matmul_start", "matmul",
                 [py, "-m", "bench.matmul_peak", "--out", os.path.join(raw_dir, "matmul_peak.json")],
                 os.path.join(raw_dir, "matmul_peak.json")))
    a_ok = installed("keras_hub")
    for jit in (1, 0):  # alternate ours and peer A, so slow drift hits both
        jobs.append(s2s(jit))
        if a_ok:
            jobs.append(peer(f"A_kerashub_jit{jit}", ["peer_a_kerashub.py", "--jit", str(jit)]))
    # Mixed bfloat16 without XLA (XLA's CPU backend runs bfloat16 dots slower
    # than float32), ours and peer A alike, so the precision's gain is not
    # counted as ours.
    if run_bf16(args.bf16, cpu_flags()):
        jobs.append(s2s(0, BF16))
        if a_ok:
            jobs.append(bf16_peer("A_kerashub_bf16_jit0", ["peer_a_kerashub.py", "--jit", "0"],
                                  "A_kerashub_jit0"))
    else:
        skipped.append(f"mixed bf16 jobs (--bf16 {args.bf16}): this CPU has none of "
                       f"{', '.join(BF16_CPU_FLAGS)}, so bfloat16 matmuls are emulated "
                       "(--bf16 yes runs them anyway)" if args.bf16 == "auto"
                       else "mixed bf16 jobs: --bf16 no")
    if not a_ok:
        skipped.append("peer A (keras-hub): keras_hub not installed")
    for key in args.peers:
        name, script_args, module = OPTIONAL_PEERS[key]
        if module and not installed(module):
            skipped.append(f"{name}: {module} not installed")
            continue
        jobs.append(peer(name, script_args))
    out = os.path.join(raw_dir, "bucketing.json")
    jobs.append(("bucketing", "bucketing", [py, "-m", "bench.bucketing", "--out", out], out))
    out = os.path.join(raw_dir, "serving.json")
    jobs.append(("serving", "serving", [py, "-m", "bench.serving", "--out", out], out))
    out = os.path.join(raw_dir, "multi30k_decode.json")
    jobs.append(("multi30k-decode", "multi30k_decode", multi30k_decode_argv(args, out), out))
    multi30k, multi30k_skipped = multi30k_jobs(args, raw_dir, log_dir or raw_dir)
    jobs += multi30k
    out = os.path.join(raw_dir, "matmul_peak_end.json")
    jobs.append(("matmul_end", "matmul", [py, "-m", "bench.matmul_peak", "--out", out], out))
    if args.only:
        known = {job[0] for job in jobs} | set(multi30k_skipped)
        wanted = {name for group in args.only for name in JOB_GROUPS.get(group, (group,))}
        unknown = sorted(set(args.only) - known - set(JOB_GROUPS))
        if unknown:
            raise SystemExit(f"--only: unknown job(s) {unknown}; jobs are "
                             f"{sorted(known | set(JOB_GROUPS))}")
        jobs = [job for job in jobs if job[0] == "matmul_start" or job[0] in wanted]
        multi30k_skipped = {k: v for k, v in multi30k_skipped.items() if k in wanted}
    return jobs, skipped + [f"{name}: {why}" for name, why in multi30k_skipped.items()]


def multi30k_jobs(args, raw_dir: str, log_dir: str):
    """The Multi30k training jobs (keras_s2s, then fairseq) and {name: why} of skipped ones."""
    py = sys.executable
    protocol = ["--warmup-epochs", str(args.multi30k_warmup_epochs),
                "--windows", str(args.multi30k_windows),
                "--window-steps", str(args.multi30k_window_steps)]
    problem = multi30k_data.skip_reason(args.data_dir)
    if problem:
        return [], {MULTI30K_OURS: problem, MULTI30K_FAIRSEQ: problem}
    data_dir = os.path.abspath(args.data_dir)
    jobs, skipped = [], {}
    out = os.path.join(raw_dir, MULTI30K_OURS + ".json")
    jobs.append((MULTI30K_OURS, "multi30k",
                 [py, "-m", "bench.multi30k_train", "--data-dir", data_dir, "--out", out,
                  *protocol], out))
    problem = multi30k_data.fairseq_venv_problem(args.fairseq_venv)
    if problem:
        skipped[MULTI30K_FAIRSEQ] = problem
    else:
        out = os.path.join(raw_dir, MULTI30K_FAIRSEQ + ".json")
        jobs.append((MULTI30K_FAIRSEQ, "multi30k",
                     [py, "-m", "bench.fairseq_train", "--venv",
                      os.path.abspath(args.fairseq_venv), "--data-dir", data_dir, "--out", out,
                      "--log", os.path.join(log_dir, MULTI30K_FAIRSEQ + ".fairseq.log"),
                      *protocol], out))
    return jobs, skipped


def multi30k_decode_argv(args, out) -> list[str]:
    """bench.multi30k_decode's command; it skips itself (with the reason) without its data."""
    # Its children's logs and hypotheses go beside the run's own logs (kept).
    log_dir = os.path.join(os.path.splitext(os.path.abspath(args.out))[0] + ".logs",
                           "multi30k-decode")
    argv = [sys.executable, "-m", "bench.multi30k_decode", "--out", out, "--log-dir", log_dir]
    for flag in ("data_dir", "run_dir", "fairseq_venv", "fairseq_data_bin", "fairseq_checkpoint"):
        value = getattr(args, flag, None)
        if value:
            argv += ["--" + flag.replace("_", "-"), os.path.abspath(value)]
    return argv


def run_bf16(choice: str, flags: set) -> bool:
    """Whether to run the mixed-bfloat16 jobs: `--bf16 yes|no`, or auto by CPU flags."""
    if choice != "auto":
        return choice == "yes"
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def cpu_flags() -> set:
    """The `flags` of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def run_child(argv, log_path, env, timeout_s=JOB_TIMEOUT_S) -> dict:
    """Runs one child to completion; returns exit code, wall time and its own peak RSS."""
    import subprocess

    started = time.perf_counter()
    busy_before, stolen_before = cpu_seconds()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=workload.REPO_ROOT)
        timed_out = False
        while True:
            # wait4 (not Popen.wait): the rusage of this child alone.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout_s and not timed_out:
                proc.kill()  # our own child, by its pid
                timed_out = True
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    child_cpu = usage.ru_utime + usage.ru_stime
    busy_after, stolen_after = cpu_seconds()
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_seconds": wall,
        "process_peak_rss_mib": usage.ru_maxrss / 1024.0,  # Linux: KiB
        "child_cpu_seconds": child_cpu,
        # The machine is shared: CPU the rest of the system used meanwhile,
        # in cores (busy time of all CPUs minus this child's, per second).
        "other_processes_cores": max(0.0, busy_after - busy_before - child_cpu) / wall,
        # The machine is a VM: CPU time the hypervisor gave to other guests
        # while this one was ready to run (steal), in cores. Neither `ps` nor
        # the child's rusage sees it, and it slows every step it lands on.
        "stolen_cores": max(0.0, stolen_after - stolen_before) / wall,
        "log": log_path,
    }


def cpu_seconds(stat_path: str = "/proc/stat") -> tuple[float, float]:
    """(busy, stolen) time of all CPUs since boot (/proc/stat), in seconds."""
    with open(stat_path, encoding="utf-8") as f:
        fields = [int(value) for value in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def log_tail(path, lines=12) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def machine_info() -> dict:
    model, flags = "unknown", cpu_flags()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "?"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    simd = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "simd": simd or "no AVX2",
        "memory": memory,
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def command_line(argv) -> str:
    command = shlex.join([os.path.relpath(sys.executable), "-m", "bench.run", *argv])
    return f"make bench ({command})" if os.environ.get("MAKELEVEL") and not argv else command


def load_runtime():
    """keras_s2s/runtime.py by path: importing the package would load TensorFlow here."""
    path = os.path.join(workload.REPO_ROOT, "keras_s2s", "runtime.py")
    spec = importlib.util.spec_from_file_location("keras_s2s_runtime", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env(quick: bool, repeats: int | None, raw_dir: str) -> dict:
    env = dict(os.environ)
    env["BENCH_RAW_DIR"] = raw_dir
    env["KERAS_BACKEND"] = "tensorflow"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # keras_s2s asks for TensorFlow's oneDNN kernels on every x86 CPU; the peers
    # get the same runtime, so the ratios compare models, not kernel libraries.
    load_runtime().prefer_onednn(env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (workload.REPO_ROOT, env.get("PYTHONPATH")) if p)
    env.pop("BENCH_QUICK", None)
    if quick:
        env["BENCH_QUICK"] = "1"
    env.pop(workload.REPEATS_ENV, None)
    if repeats:
        env[workload.REPEATS_ENV] = str(repeats)
    return env


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.quick = args.quick or bool(os.environ.get("BENCH_QUICK"))
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"  # before common.py is imported
    if args.repeats:
        os.environ[workload.REPEATS_ENV] = str(args.repeats)
    common = workload.common()
    started = time.perf_counter()

    out_path = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    log_dir = os.path.splitext(out_path)[0] + ".logs"
    os.makedirs(log_dir, exist_ok=True)
    raw_dir = tempfile.mkdtemp(prefix="keras_s2s_bench_raw_")
    # common.save_raw (the peers) writes to RAW_DIR + "_quick" in quick mode.
    peer_raw_dir = raw_dir + ("_quick" if args.quick else "")
    env = child_env(args.quick, args.repeats, raw_dir)

    results = {
        "command": command_line(argv),
        "quick": args.quick,
        "machine": {**machine_info(), "tf_enable_onednn_opts": env.get("TF_ENABLE_ONEDNN_OPTS")},
        "protocol": workload.protocol(common),
        "workload": workload_line(common),
        "flops_formula": "train FLOPs/step = 6 * N * T + attention-score FLOPs (common.py "
                         "train_flops); N = trainable weights minus token/position embedding "
                         "tables (output projection included), from the model's weights; "
                         "T = non-pad target tokens. MFU = model FLOP/s / matmul peak at start.",
        "timing_method": "model.fit(epochs=warm-up+timed windows, steps_per_epoch=WINDOW_STEPS) "
                         "with the peers' keras_timing.WindowTimer callback: window time = "
                         "on_epoch_end - on_epoch_begin stamps; compile s = first step "
                         "(fit start -> first on_train_batch_end) - median step.",
        "installed": {m: installed(m) for m in ("keras_hub", "torch", "ctranslate2")},
        "out": args.out,
        "runs": {},
        "rows": {},
        "not_measured": [],
    }
    jobs, skipped = plan(args, raw_dir, log_dir)
    results["not_measured"] += skipped
    print(results["command"], flush=True)
    for reason in skipped:
        print(f"skipped: {reason}", flush=True)
    machine = results["machine"]
    print(f"machine: {machine['cpu_model']}, {machine['cpu_count']} cores, "
          f"load {machine['loadavg_start']}", flush=True)
    try:
        for index, (name, kind, child_argv, result_path) in enumerate(jobs, 1):
            if kind in ("s2s", "multi30k") and results.get("matmul_peak_gflops"):
                child_argv = [*child_argv, "--peak-gflops", str(results["matmul_peak_gflops"])]
            print(f"[{index}/{len(jobs)}] {name} ...", end=" ", flush=True)
            timeouts = {"multi30k_decode": MULTI30K_DECODE_TIMEOUT_S, "multi30k": MULTI30K_TIMEOUT_S}
            job = run_child(child_argv, os.path.join(log_dir, name + ".log"), env,
                            timeouts.get(kind, JOB_TIMEOUT_S))
            if result_path is None:  # a peer script names its own file
                result_path = os.path.join(peer_raw_dir, name + ".json")
            result, error = None, None
            if job["returncode"] == 0 and os.path.isfile(result_path):
                with open(result_path, encoding="utf-8") as f:
                    result = json.load(f)
            else:
                last_line = (log_tail(job["log"]).strip().splitlines() or [""])[-1]
                timed_out = " (timed out)" if job["timed_out"] else ""
                error = (f"exit {job['returncode']}{timed_out}; "
                         f"log {os.path.relpath(job['log'])}: {last_line}")
            results["runs"][name] = {"job": job, "result": result, "error": error}
            print(f"{job['wall_seconds']:.0f} s (other processes used "
                  f"{job['other_processes_cores']:.1f} cores meanwhile, the hypervisor "
                  f"took {job['stolen_cores']:.2f})"
                  + (f"  FAILED: {error}" if error else ""), flush=True)
            if kind == "multi30k":
                results.setdefault("multi30k_train", {})[name] = report.multi30k_row(
                    name, result, job["process_peak_rss_mib"], error)
                print(f"    {report.multi30k_line(results['multi30k_train'][name])}", flush=True)
                continue
            if result is None:
                if kind in ("bucketing", "serving", "multi30k_decode"):
                    results[kind] = {"error": error}
                elif kind in ("s2s", "peer"):
                    row = {"name": name, "label": report.LABELS.get(name, (name,))[0],
                           "error": error}
                    results["rows"][name] = row
                continue
            if name == "matmul_start":
                results["matmul_peak_gflops"] = result["peak_gflops"]
            elif name == "matmul_end":
                results["matmul_peak_gflops_end"] = result["peak_gflops"]
            elif kind in ("bucketing", "serving", "multi30k_decode"):
                results[kind] = result
            else:
                row = report.summary_row(name, result, job["process_peak_rss_mib"])
                results["rows"][name] = row
                print(f"    train {report.fmt(row['train_tokens_per_s'], '.0f')} tokens/s, "
                      f"MFU {report.fmt(row['mfu'], '.2f')}, "
                      f"greedy {report.fmt(row['greedy_sent_per_s'], '.0f')} sentences/s",
                      flush=True)
    finally:
        shutil.rmtree(raw_dir, ignore_errors=True)
        shutil.rmtree(raw_dir + "_quick", ignore_errors=True)
        for folder in (policy_raw_dir(raw_dir, BF16), policy_raw_dir(raw_dir, BF16) + "_quick"):
            shutil.rmtree(folder, ignore_errors=True)

    # Table order, not run order.
    order = list(report.LABELS)
    results["rows"] = dict(sorted(results["rows"].items(),
                                  key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    installed_modules = results["installed"]
    results["ratios"] = report.ratios(results["rows"], report.load_reference(workload.PEERS_DIR),
                                      installed_modules)
    results["not_measured"] += not_measured_notes(results, installed_modules)
    if results.get("multi30k_train"):
        results["multi30k_train_ratios"] = report.multi30k_ratios(results["multi30k_train"])
    results["machine"]["loadavg_end"] = loadavg()
    others = [run["job"]["other_processes_cores"] for run in results["runs"].values()]
    results["machine"]["other_processes_cores_per_job"] = {
        name: round(run["job"]["other_processes_cores"], 2)
        for name, run in results["runs"].items()}
    results["machine"]["other_processes_cores_max"] = max(others) if others else None
    results["machine"]["stolen_cores_per_job"] = {
        name: round(run["job"]["stolen_cores"], 2) for name, run in results["runs"].items()}
    results["wall_seconds"] = time.perf_counter() - started
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, default=str)
    print()
    print(report.markdown(results), flush=True)
    failed = [name for name, run in results["runs"].items() if run["error"]]
    return 1 if failed else 0


def workload_line(common) -> str:
    c = common
    return (
        f"V={c.VOCAB}, d={c.D_MODEL}, {c.HEADS} heads, FF {c.D_FF}, {c.N_ENC}+{c.N_DEC} "
        f"layers, dropout {c.DROPOUT}; batch {c.BATCH}, lengths {c.MIN_LEN}..{c.MAX_LEN} "
        f"padded to {c.TGT_LEN}; tokens = non-pad target tokens; median of "
        f"{c.TIMED_WINDOWS} windows of {c.WINDOW_STEPS} steps after {c.WARMUP_WINDOWS} "
        f"warm-up windows; greedy/beam: {c.BATCH} sources x {c.DECODE_NEW_TOKENS} new "
        f"tokens, median of {c.DECODE_REPEATS} calls after {c.DECODE_WARMUP} warm-up"
    )


def not_measured_notes(results, installed_modules) -> list[str]:
    notes = []
    if not installed_modules["torch"]:
        notes.append("torch peer (C): torch is not installed in this environment; its ratio "
                     "comes from ../shared/bench/peers/reference-results.json "
                     f"({report.REFERENCE_NOTE})")
    if not installed_modules["ctranslate2"]:
        notes.append("CTranslate2 decoding (D): ctranslate2 is not installed")
    notes.append("beam search for the peers: none of them implements it on this workload")
    if not any(name.startswith("B_") for name in results["rows"]):
        notes.append("peer B (TF tutorial design) is not run by default (3-5 min, mostly XLA "
                     "compiles of its uncached decoder); `--include-peers B` adds it. Its "
                     "ratio is estimated through peer A from the reference run")
    return notes


if __name__ == "__main__":
    sys.exit(main())
