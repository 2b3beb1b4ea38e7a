"""Smoke tests of the benchmark harness (bench/): planning, child rusage, reporting.

No model is trained and nothing is timed; the whole module runs in a few seconds.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from bench import report, run, workload

needs_peers = pytest.mark.skipif(
    not os.path.isfile(os.path.join(workload.PEERS_DIR, "common.py")),
    reason="../shared/bench/peers is not beside the repository",
)


def test_plan_alternates_ours_and_peer_a_between_two_matmul_peaks(tmp_path):
    jobs, _ = run.plan(run.parse_args(["--include-peers", "", "--bf16", "yes"]), str(tmp_path))
    names = [job[0] for job in jobs]
    assert names[0] == "matmul_start" and names[-1] == "matmul_end"
    ours = [n for n in names if n.startswith("keras_s2s")]
    assert ours == ["keras_s2s_jit1", "keras_s2s_jit0", "keras_s2s_bf16_jit0"]
    if run.installed("keras_hub"):
        assert names[1:7] == ["keras_s2s_jit1", "A_kerashub_jit1",
                              "keras_s2s_jit0", "A_kerashub_jit0",
                              "keras_s2s_bf16_jit0", "A_kerashub_bf16_jit0"]


@pytest.mark.parametrize("quick", [False, True])
def test_bf16_jobs_set_the_policy_and_read_the_peers_own_folder(tmp_path, quick):
    args = run.parse_args(["--include-peers", "", "--bf16", "yes"] + (["--quick"] if quick else []))
    args.quick = quick
    jobs = {job[0]: job for job in run.plan(args, str(tmp_path))[0]}
    ours = jobs["keras_s2s_bf16_jit0"]
    assert ours[2][ours[2].index("--precision") + 1] == "mixed_bfloat16"
    if run.installed("keras_hub"):
        _, _, argv, result_path = jobs["A_kerashub_bf16_jit0"]
        assert argv[argv.index("--policy"):][:3] == [
            "--policy", "mixed_bfloat16", "peer_a_kerashub.py"]
        # common.save_raw writes to BENCH_RAW_DIR (+ "_quick"), which
        # peer_runner points at the policy's own folder.
        folder = str(tmp_path) + "_mixed_bfloat16" + ("_quick" if quick else "")
        assert result_path == os.path.join(folder, "A_kerashub_jit0.json")


@pytest.mark.parametrize(
    ("choice", "flags", "expected"),
    [("auto", {"avx2", "fma"}, False), ("auto", {"avx2", "avx512_bf16"}, True),
     ("auto", {"amx_bf16"}, True), ("yes", set(), True), ("no", {"avx512_bf16"}, False)],
)
def test_bf16_jobs_run_only_on_cpus_with_bfloat16_units(tmp_path, monkeypatch, choice, flags,
                                                        expected):
    # Emulated bfloat16 (AVX2 only) trained 4x slower than float32: no ratio to learn from.
    monkeypatch.setattr(run, "cpu_flags", lambda: flags)
    jobs, skipped = run.plan(run.parse_args(["--bf16", choice]), str(tmp_path))
    names = [job[0] for job in jobs]
    assert ("keras_s2s_bf16_jit0" in names) is expected
    assert any("keras_s2s_jit0" == name for name in names)
    assert any("mixed bf16 jobs" in reason for reason in skipped) is not expected
    if choice == "auto" and not expected:
        assert any("avx512_bf16" in reason for reason in skipped)


def test_only_keeps_the_start_matmul_peak(tmp_path):
    jobs, _ = run.plan(run.parse_args(["--only", "bucketing"]), str(tmp_path))
    assert [job[0] for job in jobs] == ["matmul_start", "bucketing"]


def test_unknown_peer_is_rejected(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--include-peers", "Z"])
    assert "unknown ['Z']" in capsys.readouterr().err


def test_run_child_reports_the_childs_own_peak_rss(tmp_path):
    code = "x = bytearray(96 * 2**20); x[::4096] = b'1' * len(x[::4096])"
    job = run.run_child([sys.executable, "-c", code], str(tmp_path / "child.log"), dict(os.environ))
    assert job["returncode"] == 0 and not job["timed_out"]
    assert job["process_peak_rss_mib"] >= 96
    assert job["stolen_cores"] >= 0 and job["other_processes_cores"] >= 0


@pytest.mark.parametrize(
    ("line", "stolen_ticks"),
    [("cpu  100 0 50 1000 5 0 10 40 0 0", 40),
     ("cpu  100 0 50 1000 5 0 10", 0)],  # kernels without the steal column
)
def test_cpu_seconds_separate_busy_and_stolen_time(tmp_path, line, stolen_ticks):
    stat = tmp_path / "stat"
    stat.write_text(line + "\ncpu0 1 2 3 4 5 6 7 8\n")
    ticks = os.sysconf("SC_CLK_TCK")
    busy, stolen = run.cpu_seconds(str(stat))
    assert busy == pytest.approx(160 / ticks)  # user + nice + system + irq + softirq
    assert stolen == pytest.approx(stolen_ticks / ticks)


@needs_peers
def test_repeats_reach_the_shared_protocol():
    code = ("from bench import workload; c = workload.common(); "
            "print(c.TIMED_WINDOWS, c.DECODE_REPEATS, c.time_repeats.__defaults__[0])")
    env = dict(os.environ, **{workload.REPEATS_ENV: "3"})
    env.pop("BENCH_QUICK", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=workload.REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "3", "3"]


def _fake_result(tokens_per_s, greedy, beam=None):
    decode = {"greedy": {"sentences_per_s": greedy, "generated_shape": [64, 24]}}
    if beam:
        decode["beam4_cached"] = {"sentences_per_s": beam}
    return {
        "train": {"tokens_per_s_median": tokens_per_s, "step_seconds_median": 0.4,
                  "mfu_vs_measured_matmul_peak": 0.4, "compile_seconds_est": 10.0},
        "peak_rss_mib_train": 1500.0,
        "decode": decode,
        "decode_primary": "greedy",
    }


def test_ratios_and_markdown_from_fake_results():
    rows = {
        "keras_s2s_jit1": report.summary_row("keras_s2s_jit1", _fake_result(3000, 200, 50), 1600),
        "A_kerashub_jit1": report.summary_row("A_kerashub_jit1", _fake_result(2000, 100), 1700),
    }
    reference = {"summary": [
        {"name": "A_kerashub_jit1", "train_tokens_per_s": 2500},
        {"name": "C_torch_eager", "train_tokens_per_s": 1000},
    ]}
    ratios = report.ratios(rows, reference, {"torch": False, "ctranslate2": False})
    assert ratios["train_vs_best_keras_peer"]["ratio"] == pytest.approx(1.5)
    assert ratios["greedy_vs_A_jit1"]["ratio"] == pytest.approx(2.0)
    assert ratios["beam4_cost_vs_greedy_jit1"]["ratio"] == pytest.approx(4.0)
    assert "train_bf16_vs_A_bf16" not in ratios  # neither bf16 variant ran
    torch = ratios["train_vs_torch"]
    assert torch["ratio"] == pytest.approx(3.0) and "not same-run" in torch["what"]
    assert ratios["train_vs_torch_via_A"]["ratio"] == pytest.approx(1.5 * 2.5)
    assert ratios["greedy_vs_ctranslate2"]["ratio"] is None
    text = report.markdown({
        "quick": True, "command": "python -m bench.run --quick",
        "machine": {"cpu_model": "cpu", "cpu_count": 2, "simd": "avx2", "memory": "1 GiB",
                    "loadavg_start": "0 0 0"},
        "workload": "w", "rows": rows, "ratios": ratios, "bucketing": {"skipped": "no corpus"},
        "not_measured": ["D"], "out": "x.json", "wall_seconds": 1.0,
    })
    assert "| keras_s2s, XLA | 3000 | 40% | 1500 / 1600 | 10.0 | 200 (KV cache) | 50 |" in text
    assert "| A keras-hub, XLA | 2000 |" in text


def test_serving_summary_line():
    def timing(rate):
        return {"sentences_per_s": rate}

    serving = {"by_beam": {"4": {
        "saved_model": timing(30.0), "in_process_jit1": timing(60.0), "in_process_jit0": timing(32.0),
        "saved_model_over_in_process": 0.5, "saved_model_over_in_process_no_xla": 30.0 / 32.0,
        "saved_model_latency": {"p50_ms": 120.4, "p95_ms": 180.6},
    }}}
    assert report.serving_summary(serving) == (
        "beam 4: 30.0 sentences/s = 0.50x in-process with XLA (60.0), 0.94x without (32.0); "
        "one-sentence latency p50 120 ms, p95 181 ms")
    serving["by_beam"]["4"].update({
        "saved_model_xla": timing(54.0), "saved_model_xla_over_in_process": 0.9,
        "saved_model_xla_latency": {"p50_ms": 80.2, "p95_ms": 95.7},
    })
    assert report.serving_summary(serving).endswith(
        "p95 181 ms; XLA export (--jit-compile): 54.0 sentences/s = 0.90x in-process with XLA, "
        "latency p50 80 ms, p95 96 ms")
    assert report.serving_summary({"skipped": "no corpus"}) == "no corpus"
    assert report.serving_summary(None) == "not run"


def test_plan_runs_the_serving_job_before_the_last_matmul_peak(tmp_path):
    jobs, _ = run.plan(run.parse_args([]), str(tmp_path))
    names = [job[0] for job in jobs]
    assert names[-4:] == ["bucketing", "serving", "multi30k-decode", "matmul_end"]


def test_bf16_rows_get_their_own_ratios():
    rows = {name: report.summary_row(name, _fake_result(tokens, 100, 40), 1000)
            for name, tokens in (("keras_s2s_jit0", 2000), ("A_kerashub_jit0", 2000),
                                 ("keras_s2s_bf16_jit0", 3600), ("A_kerashub_bf16_jit0", 2400))}
    rows["D_ctranslate2"] = report.summary_row("D_ctranslate2", _fake_result(None, 80), 300)
    ratios = report.ratios(rows, None, {"torch": False, "ctranslate2": True})
    # float32 against float32 peers only, bf16 against bf16; the cross ratio says so.
    assert ratios["train_vs_best_keras_peer"]["ratio"] == pytest.approx(1.0)
    assert ratios["train_bf16_vs_A_bf16"]["ratio"] == pytest.approx(1.5)
    cross = ratios["train_bf16_vs_best_fp32_keras_peer"]
    assert cross["ratio"] == pytest.approx(1.8) and "precision's gain" in cross["what"]
    assert ratios["greedy_vs_ctranslate2"]["numerator"] == "keras_s2s_jit0"
    assert "different precisions" in ratios["greedy_bf16_vs_ctranslate2"]["what"]
    assert {"beam4_cost_vs_greedy_jit0", "beam4_cost_vs_greedy_bf16_jit0"} <= set(ratios)
    assert rows["keras_s2s_bf16_jit0"]["label"] == "keras_s2s, mixed bf16, no XLA"


def test_peer_runner_policy_runs_the_script_in_its_own_folder_with_the_peak(tmp_path):
    peers, raw = tmp_path / "peers", tmp_path / "raw"
    peers.mkdir()
    raw.mkdir()
    (raw / "matmul_peak.json").write_text('{"peak_gflops": 123.0}')
    (peers / "common.py").write_text(
        "import os\nRAW_DIR = os.environ['BENCH_RAW_DIR']\n")
    (peers / "fake_peer.py").write_text(
        "import json, os, sys, keras, common\n"
        "out = os.path.join(common.RAW_DIR, 'fake.json')\n"
        "json.dump({'argv': sys.argv[1:], 'policy': keras.config.dtype_policy().name,\n"
        "           'peak': os.path.isfile(os.path.join(common.RAW_DIR, 'matmul_peak.json'))},\n"
        "          open(out, 'w'))\n")
    env = dict(os.environ, BENCH_PEERS_DIR=str(peers), BENCH_RAW_DIR=str(raw))
    subprocess.run([sys.executable, "-m", "bench.peer_runner", "--policy", "mixed_bfloat16",
                    "fake_peer.py", "--jit", "0"], env=env, cwd=workload.REPO_ROOT, check=True)
    written = json.loads((tmp_path / "raw_mixed_bfloat16" / "fake.json").read_text())
    assert written == {"argv": ["--jit", "0"], "policy": "mixed_bfloat16", "peak": True}



def test_children_share_keras_s2s_onednn_setting(monkeypatch, tmp_path):
    # The peers never import keras_s2s, which sets it on import: the bench
    # gives every child the same kernel library.
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert run.child_env(False, None, str(tmp_path))["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert run.child_env(False, None, str(tmp_path))["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_serving_throughput_is_timed_in_turns_latency_path_by_path():
    # Drift of the VM must fall on every path of a row alike: after each
    # path's warm-up calls, the timed calls go round-robin.
    import types

    from bench import serving

    calls = []

    def path(name):
        return lambda batch: calls.append((name, len(batch)))

    common = types.SimpleNamespace(DECODE_WARMUP=2, DECODE_REPEATS=3)
    translates = {"a": path("a"), "b": path("b")}
    rows = serving.interleaved_throughput(common, translates, ["x", "y"])
    names = [name for name, _ in calls]
    assert names == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert all(size == 2 for _, size in calls)
    assert set(rows) == {"a", "b"} and len(rows["a"]["seconds"]) == 3
    assert rows["a"]["sentences_per_s"] == 2 / rows["a"]["median_seconds"]

    calls.clear()
    latency = serving.latencies(translates, "x")
    # One sentence per call, path after path (warm-up call included).
    assert calls == [("a", 1)] * (serving.LATENCY_CALLS + 1) + [("b", 1)] * (serving.LATENCY_CALLS + 1)
    assert latency["a"]["p50_ms"] <= latency["a"]["p95_ms"]
