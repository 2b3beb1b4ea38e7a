"""Results -> summary rows, ratios and the markdown report. Pure functions, no TensorFlow."""

from __future__ import annotations

import json
import os

# name -> (label, decoding description). Order = table order.
LABELS = {
    "keras_s2s_jit1": ("keras_s2s, XLA", "KV cache"),
    "keras_s2s_jit0": ("keras_s2s, no XLA", "KV cache"),
    "A_kerashub_jit1": ("A keras-hub, XLA", "cached"),
    "A_kerashub_jit0": ("A keras-hub, no XLA", "cached"),
    "keras_s2s_bf16_jit0": ("keras_s2s, mixed bf16, no XLA", "KV cache"),
    "A_kerashub_bf16_jit0": ("A keras-hub, mixed bf16, no XLA", "cached"),
    "B_tftutorial_maskfix_jit1": ("B tutorial design, XLA, masks fixed", "no cache"),
    "B_tftutorial_maskfix_jit0": ("B tutorial design, no XLA, masks fixed", "no cache"),
    "C_torch_eager": ("C torch.nn.Transformer eager", "no cache"),
    "C_torch_compile": ("C torch.nn.Transformer compiled", "no cache"),
    "D_ctranslate2": ("D CTranslate2 fp32", "C++ engine"),
}
FP32_KERAS_PEERS = ("A_kerashub_jit1", "A_kerashub_jit0",
                    "B_tftutorial_maskfix_jit1", "B_tftutorial_maskfix_jit0")
KERAS_PEERS = (*FP32_KERAS_PEERS, "A_kerashub_bf16_jit0")
FP32_OURS = ("keras_s2s_jit1", "keras_s2s_jit0")
OURS = (*FP32_OURS, "keras_s2s_bf16_jit0")
TORCH = ("C_torch_eager", "C_torch_compile")
REFERENCE_NOTE = "reference run, not same-run"


def summary_row(name: str, result: dict, process_rss_mib: float | None = None) -> dict:
    """One table row from a run's result file (keras_s2s or a peer's)."""
    train = result.get("train") or {}
    decode = result.get("decode") or {}
    primary = decode.get(result.get("decode_primary") or "", {})
    beam = decode.get("beam4_cached", {})
    label, decoding = LABELS.get(name, (name, ""))
    return {
        "name": name,
        "label": label,
        "train_tokens_per_s": train.get("tokens_per_s_median"),
        "train_step_s": train.get("step_seconds_median"),
        "mfu": train.get("mfu_vs_measured_matmul_peak"),
        "compile_s_est": train.get("compile_seconds_est"),
        "first_step_s": train.get("first_step_seconds"),
        "peak_rss_mib_train": result.get("peak_rss_mib_train"),
        "peak_rss_mib_process": process_rss_mib,
        "greedy_sent_per_s": primary.get("sentences_per_s"),
        "greedy_decoding": decoding,
        "greedy_variant": result.get("decode_primary"),
        "greedy_shape": primary.get("generated_shape"),
        "beam4_sent_per_s": beam.get("sentences_per_s"),
        "sentinel_gflops_before_after": train.get("sentinel_matmul_gflops_before_after"),
        "cpu_busy_during_fit": (train.get("cpu_during_fit") or {}).get("busy_frac"),
        "loss_finite": train.get("loss_finite"),
        "mask_check": result.get("mask_check_max_abs_diff_extra_src_pads"),
    }


def _best(rows: dict, names, key):
    """(name, value) of the largest `key` among `names` that were measured."""
    found = [(rows[n][key], n) for n in names if n in rows and rows[n].get(key)]
    if not found:
        return None, None
    value, name = max(found)
    return name, value


def _ratio(label, numerator, denominator, **extra):
    (num_name, num), (den_name, den) = numerator, denominator
    if not num or not den:
        return None
    return {"ratio": num / den, "what": label, "numerator": num_name,
            "denominator": den_name, **extra}


def ratios(rows: dict, reference: dict | None, installed: dict) -> dict:
    """Throughput ratios keras_s2s / peer; `rows` maps name -> summary_row.

    Args:
        rows: this run's rows.
        reference: ../shared/bench/peers/reference-results.json, for the torch
            peer when torch is not installed here (labelled as such).
        installed: {"torch": bool, "ctranslate2": bool}.
    """
    out = {}
    tok, greedy = "train_tokens_per_s", "greedy_sent_per_s"
    peer_a = ("A_kerashub_jit1", "A_kerashub_jit0")
    ours = _best(rows, FP32_OURS, tok)  # the float32 rows: every peer below is float32
    # Like for like: float32 against float32, mixed bf16 against mixed bf16.
    out["train_vs_best_keras_peer"] = _ratio(
        "train tokens/s, best float32 keras_s2s / best float32 Keras peer (same run)",
        ours, _best(rows, FP32_KERAS_PEERS, tok))
    out["train_bf16_vs_A_bf16"] = _ratio(
        "train tokens/s, keras_s2s / keras-hub, both mixed bf16 without XLA (same run)",
        ("keras_s2s_bf16_jit0", rows.get("keras_s2s_bf16_jit0", {}).get(tok)),
        ("A_kerashub_bf16_jit0", rows.get("A_kerashub_bf16_jit0", {}).get(tok)))
    out["train_bf16_vs_best_fp32_keras_peer"] = _ratio(
        "train tokens/s, keras_s2s mixed bf16 / best float32 Keras peer (same run; "
        "includes the precision's gain, which the peers would get too)",
        ("keras_s2s_bf16_jit0", rows.get("keras_s2s_bf16_jit0", {}).get(tok)),
        _best(rows, FP32_KERAS_PEERS, tok))
    for jit in (1, 0):
        s2s, peer = f"keras_s2s_jit{jit}", f"A_kerashub_jit{jit}"
        out[f"train_vs_A_jit{jit}"] = _ratio(
            f"train tokens/s, {s2s} / {peer} (same run)",
            (s2s, rows.get(s2s, {}).get(tok)), (peer, rows.get(peer, {}).get(tok)))
        out[f"greedy_vs_A_jit{jit}"] = _ratio(
            f"greedy sentences/s, {s2s} / {peer} cached sampler (same run)",
            (s2s, rows.get(s2s, {}).get(greedy)), (peer, rows.get(peer, {}).get(greedy)))
    out["greedy_vs_best_A"] = _ratio(
        "greedy sentences/s, best keras_s2s / best keras-hub cached sampler (same run)",
        _best(rows, FP32_OURS, greedy), _best(rows, peer_a, greedy))

    ref_rows = {r["name"]: r for r in (reference or {}).get("summary", [])}
    torch_same_run = _best(rows, TORCH, tok)
    if torch_same_run[0]:
        out["train_vs_torch"] = _ratio(
            "train tokens/s, best keras_s2s / best torch peer (same run)", ours, torch_same_run)
    elif ref_rows:
        why = "torch not installed" if not installed.get("torch") else "torch peer not run"
        out["train_vs_torch"] = _ratio(
            "train tokens/s, best keras_s2s (this run) / best torch peer "
            f"({REFERENCE_NOTE}: {why})", ours, _best(ref_rows, TORCH, tok), same_run=False)
        out["train_vs_torch_via_A"] = _via_a(rows, ref_rows, ours, TORCH, "torch")
    b_peers = ("B_tftutorial_maskfix_jit1", "B_tftutorial_maskfix_jit0")
    if ref_rows and not _best(rows, b_peers, tok)[0]:
        out["train_vs_B_via_A"] = _via_a(rows, ref_rows, ours, b_peers, "B (masks fixed)")

    ct2 = rows.get("D_ctranslate2", {}).get(greedy)
    if ct2:
        out["greedy_vs_ctranslate2"] = _ratio(
            "greedy sentences/s, best float32 keras_s2s / CTranslate2 fp32 (same run)",
            _best(rows, FP32_OURS, greedy), ("D_ctranslate2", ct2))
        out["greedy_bf16_vs_ctranslate2"] = _ratio(
            "greedy sentences/s, keras_s2s mixed bf16 / CTranslate2 fp32 (same run; "
            "different precisions)",
            ("keras_s2s_bf16_jit0", rows.get("keras_s2s_bf16_jit0", {}).get(greedy)),
            ("D_ctranslate2", ct2))
    else:
        why = ("ctranslate2 not installed" if not installed.get("ctranslate2")
               else "peer D not run (--include-peers D)")
        out["greedy_vs_ctranslate2"] = {
            "ratio": None, "what": f"greedy vs CTranslate2: not measured, {why}"}
    for name in OURS:
        row = rows.get(name, {})
        if row.get(greedy) and row.get("beam4_sent_per_s"):
            out[f"beam4_cost_vs_greedy_{name.removeprefix('keras_s2s_')}"] = {
                "ratio": row[greedy] / row["beam4_sent_per_s"],
                "what": f"{name}: time per sentence, beam search (4 beams) / greedy",
            }
    return {k: v for k, v in out.items() if v is not None}


def _via_a(rows, ref_rows, ours, peer_names, peer_label):
    """A peer not run here, carried over through peer A (run here and in the reference).

    (best keras_s2s / best A, this run) x (best A / best peer, reference run):
    the machine's speed cancels out, not its load or its run-to-run noise.
    """
    tok = "train_tokens_per_s"
    peer_a = ("A_kerashub_jit1", "A_kerashub_jit0")
    here_a, ref_a = _best(rows, peer_a, tok), _best(ref_rows, peer_a, tok)
    ref_peer = _best(ref_rows, peer_names, tok)
    if not (ours[1] and here_a[1] and ref_a[1] and ref_peer[1]):
        return None
    return {
        "ratio": (ours[1] / here_a[1]) * (ref_a[1] / ref_peer[1]),
        "what": f"train tokens/s, (best keras_s2s / best A, this run) x (best A / best "
                f"{peer_label}, {REFERENCE_NOTE}): estimate vs {ref_peer[0]}",
        "same_run": False,
    }


def fmt(value, spec, missing="–"):
    """`format(value, spec)` for numbers, `missing` for anything else (None)."""
    return format(value, spec) if isinstance(value, (int, float)) else missing


def markdown(results: dict) -> str:
    """The report printed at the end of a run."""
    machine = results["machine"]
    quick = " (QUICK smoke test: not for results)" if results["quick"] else ""
    lines = [
        f"## keras_s2s benchmark{quick}",
        "",
        f"Command: `{results['command']}`",
        (f"Machine: {machine['cpu_model']}, {machine['cpu_count']} logical cores "
         f"({machine['simd']}), {machine['memory']}; "
         f"TF_ENABLE_ONEDNN_OPTS={machine.get('tf_enable_onednn_opts') or 'unset'}; load average at start "
         f"{machine['loadavg_start']}, at end {machine.get('loadavg_end', '?')}."),
        ("fp32 tf.matmul peak (MFU denominator): "
         f"{fmt(results.get('matmul_peak_gflops'), '.0f')} GFLOP/s at start, "
         f"{fmt(results.get('matmul_peak_gflops_end'), '.0f')} at end."),
        f"Workload: {results['workload']}",
        ("CPU used by other processes during each job (cores, of "
         f"{machine['cpu_count']}): {machine.get('other_processes_cores_per_job', '?')}"),
        ("CPU taken by the hypervisor for other guests (steal) during each job (cores): "
         f"{machine.get('stolen_cores_per_job', '?')}"),
        "",
        ("| peer | train tokens/s | MFU | peak RSS MiB (train / process) | compile s "
         "| greedy sent/s | beam4 sent/s |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"].values():
        if row.get("error"):
            lines.append(f"| {row['label']} | failed: {row['error'][:80]} | | | | | |")
            continue
        rss = f"{fmt(row['peak_rss_mib_train'], '.0f')} / {fmt(row['peak_rss_mib_process'], '.0f')}"
        greedy = fmt(row["greedy_sent_per_s"], ".0f")
        if row["greedy_sent_per_s"] is not None and row["greedy_decoding"]:
            greedy += f" ({row['greedy_decoding']})"
        mfu = row["mfu"] * 100 if row["mfu"] is not None else None
        lines.append(
            f"| {row['label']} | {fmt(row['train_tokens_per_s'], '.0f')} | "
            f"{fmt(mfu, '.0f')}{'%' if mfu is not None else ''} | {rss} | "
            f"{fmt(row['compile_s_est'], '.1f')} | {greedy} | "
            f"{fmt(row['beam4_sent_per_s'], '.0f')} |")
    lines += ["", "Ratios (keras_s2s / peer; > 1 means keras_s2s is faster):", ""]
    for ratio in results["ratios"].values():
        value = "" if ratio["ratio"] is None else f": {ratio['ratio']:.2f}"
        lines.append(f"- {ratio['what']}{value}")
    bucketing = results.get("bucketing") or {}
    if "summary" in bucketing:
        padding = "; ".join(
            f"{label} (bucket width {run['settings']['bucket_width']}): {run['summary']}, "
            f"{run['distinct_full_batch_shapes']} full-size shapes (what a repeating pipeline shows)"
            for label, run in (("no XLA", bucketing), ("XLA", bucketing.get("xla")))
            if run
        )
    else:
        padding = bucketing.get("skipped") or bucketing.get("error") or "not run"
    lines += ["", f"Real data (keras_s2s.data on Multi30k train): {padding}"]
    lines += ["", f"Exported SavedModel (strings in and out): {serving_summary(results.get('serving'))}"]
    if results.get("multi30k_decode"):
        from bench.multi30k_decode import markdown_table

        lines += ["", "Real-data decoding (Multi30k test2016, a trained run):", "",
                  markdown_table(results["multi30k_decode"])]
    if results.get("multi30k_train"):
        lines += ["", *multi30k_markdown(results["multi30k_train"],
                                         results.get("multi30k_train_ratios") or {})]
    if results.get("not_measured"):
        lines += ["", "Not measured:"] + [f"- {item}" for item in results["not_measured"]]
    lines += ["", f"Full results: {results['out']} (wall time {results['wall_seconds']:.0f} s)"]
    return "\n".join(lines)


def serving_summary(serving: dict | None) -> str:
    """Per beam size: SavedModel (plain, then XLA) vs in-process throughput, and latency."""
    if not serving or "by_beam" not in serving:
        return (serving or {}).get("skipped") or (serving or {}).get("error") or "not run"
    parts = []
    for beam, row in serving["by_beam"].items():
        served, latency = row["saved_model"], row["saved_model_latency"]
        parts.append(
            f"beam {beam}: {served['sentences_per_s']:.1f} sentences/s = "
            f"{row['saved_model_over_in_process']:.2f}x in-process with XLA "
            f"({row['in_process_jit1']['sentences_per_s']:.1f}), "
            f"{row['saved_model_over_in_process_no_xla']:.2f}x without "
            f"({row['in_process_jit0']['sentences_per_s']:.1f}); one-sentence latency "
            f"p50 {latency['p50_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms")
        if "saved_model_xla" in row:  # runs before the XLA export existed lack it
            xla, xla_latency = row["saved_model_xla"], row["saved_model_xla_latency"]
            parts[-1] += (
                f"; XLA export (--jit-compile): {xla['sentences_per_s']:.1f} sentences/s = "
                f"{row['saved_model_xla_over_in_process']:.2f}x in-process with XLA, latency "
                f"p50 {xla_latency['p50_ms']:.0f} ms, p95 {xla_latency['p95_ms']:.0f} ms")
    return "; ".join(parts)


def load_reference(peers_dir: str) -> dict | None:
    path = os.path.join(peers_dir, "reference-results.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def multi30k_row(name: str, result: dict | None, process_rss_mib: float | None,
                 error: str | None) -> dict:
    """One row of the Multi30k training table from a multi30k-train child's result."""
    if result is None:
        return {"name": name, "error": error, "process_peak_rss_mib": process_rss_mib}
    traces = result.get("train_function_traces")
    shapes = result.get("batch_shapes")
    return {
        "name": name,
        "framework": result["framework"],
        "error": None,
        "tokens_per_s_median": result.get("tokens_per_s_median"),
        "tokens_per_s_min_max": result.get("tokens_per_s_min_max"),
        "windows": len(result.get("windows") or []),
        "window_steps": result["protocol"]["window_steps"],
        "seconds_per_epoch": result.get("seconds_per_epoch"),
        "batches_per_epoch": result.get("batches_per_epoch"),
        "tokens_per_step_mean": result.get("tokens_per_step_mean"),
        "tokens_per_cpu_s_median": result.get("tokens_per_cpu_s_median"),
        "mfu": result.get("mfu"),
        "model_gflops_per_s": result.get("model_gflops_per_s"),
        "flops_per_target_token": result["flops"]["corpus"]["per_target_token"],
        # keras_s2s: ru_maxrss of the training process; fairseq: wait4 of fairseq-train.
        "peak_rss_mib": result.get("peak_rss_mib"),
        "process_peak_rss_mib": process_rss_mib,
        "rss_mib_window_ends": [w.get("rss_mib_end") for w in result.get("windows") or []],
        "rss_mib_epoch_ends": [e.get("rss_mib_end") for e in result.get("epochs") or []],
        "batch_shapes": shapes["distinct"] if shapes else None,
        "batch_shapes_new_after_warmup": shapes["new_after_warmup"] if shapes else None,
        "train_function_traces": traces,
        "versions": result.get("versions"),
    }


def multi30k_ratios(rows: dict) -> dict:
    """keras_s2s / fairseq from the same run: tokens/s, seconds per epoch, peak RSS."""
    ours = rows.get("multi30k-train-keras_s2s") or {}
    peer = rows.get("multi30k-train-fairseq") or {}
    out = {}
    compared = (
        ("tokens_per_s_median",
         "target tokens/s, keras_s2s / fairseq (same run; > 1: keras_s2s faster)"),
        ("seconds_per_epoch",
         "seconds per epoch, keras_s2s / fairseq (same run; < 1: keras_s2s faster)"),
        ("tokens_per_cpu_s_median",
         ("target tokens per CPU-second, keras_s2s / fairseq (same run; less sensitive to "
         "other processes than wall time)")),
        ("peak_rss_mib", "peak RSS, keras_s2s / fairseq (same run)"),
    )
    for key, what in compared:
        if ours.get(key) and peer.get(key):
            out[key] = {"ratio": ours[key] / peer[key], "what": what}
    return out


def _traces(traces) -> str:
    if traces is None:
        return "n/a (eager)"
    return ", ".join(f"{name} {count}" for name, count in traces.items()) or "–"


def _mib_list(values) -> str:
    return " → ".join(fmt(v, ".0f") for v in values) or "–"


def multi30k_line(row: dict) -> str:
    """One line for the console as each job ends."""
    if row.get("error"):
        return f"FAILED: {row['error']}"
    return (f"{fmt(row['tokens_per_s_median'], '.0f')} target tokens/s (median), "
            f"{fmt(row['seconds_per_epoch'], '.0f')} s/epoch, MFU {fmt(row['mfu'], '.3f')}, "
            f"peak RSS {fmt(row['peak_rss_mib'], '.0f')} MiB, "
            f"RSS at window ends {_mib_list(row['rss_mib_window_ends'])} MiB, "
            f"batch shapes {fmt(row['batch_shapes'], 'd')}, "
            f"traces {_traces(row['train_function_traces'])}")


def multi30k_markdown(rows: dict, ratios: dict) -> list[str]:
    """The Multi30k training section of the report."""
    lines = [
        "Real-data training (Multi30k En→De, the committed config; non-pad target tokens):",
        "",
        ("| framework | target tokens/s (median; min–max) | tokens per CPU-s "
         "| s/epoch (batches) | MFU | peak RSS MiB | RSS MiB at epoch ends "
         "| RSS MiB at window ends | batch shapes | train-function traces |"),
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for row in rows.values():
        if row.get("error"):
            lines.append(f"| {row['name']} | failed: {row['error'][:80]} | | | | | | | | |")
            continue
        low, high = row["tokens_per_s_min_max"] or (None, None)
        mfu = row["mfu"] * 100 if row["mfu"] is not None else None
        lines.append(
            f"| {row['framework']} | {fmt(row['tokens_per_s_median'], '.0f')} "
            f"({fmt(low, '.0f')}–{fmt(high, '.0f')}; {row['windows']} × "
            f"{row['window_steps']} steps) | {fmt(row['tokens_per_cpu_s_median'], '.0f')} | "
            f"{fmt(row['seconds_per_epoch'], '.0f')} ({fmt(row['batches_per_epoch'], 'd')}) | "
            f"{fmt(mfu, '.1f')}{'%' if mfu is not None else ''} | "
            f"{fmt(row['peak_rss_mib'], '.0f')} | {_mib_list(row['rss_mib_epoch_ends'])} | "
            f"{_mib_list(row['rss_mib_window_ends'])} | {fmt(row['batch_shapes'], 'd')} | "
            f"{_traces(row['train_function_traces'])} |")
    lines.append("")
    lines += [f"- {ratio['what']}: {ratio['ratio']:.2f}" for ratio in ratios.values()]
    return lines
