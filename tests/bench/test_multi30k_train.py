"""The multi30k-train job's logic: planning and skips, FLOPs, windows, fairseq's log, the fit probe.

Nothing here is timed; the probe test fits a tiny model for a few steps.
"""

import itertools
import json
import os

import numpy as np
import pytest

from bench import fairseq_log, fairseq_train, multi30k_data, report, run, train_metrics
from tests.helpers import SHARED_DATA

MULTI30K = os.path.join(SHARED_DATA, "multi30k")
needs_multi30k = pytest.mark.skipif(
    multi30k_data.skip_reason(MULTI30K) is not None,
    reason=f"Multi30k is not in {MULTI30K} (train/val .en/.de, from {multi30k_data.SOURCE_URL})",
)
DIMS = train_metrics.TransformerDims(hidden_dim=16, intermediate_dim=24, num_encoder_layers=1,
                                     num_decoder_layers=2, target_vocabulary_size=50)


def make_data_dir(path, files=multi30k_data.REQUIRED_FILES):
    path.mkdir(exist_ok=True)
    for name in files:
        (path / name).write_text("a b\n")
    return str(path)


def multi30k_skips(skipped):
    return [reason for reason in skipped if reason.startswith("multi30k")]


def make_venv(path):
    (path / "bin").mkdir(parents=True)
    for name in ("fairseq-train", "fairseq-preprocess", "python"):
        (path / "bin" / name).write_text("")
    return str(path)


# -- planning ---------------------------------------------------------------------------


def test_without_data_dir_both_jobs_are_skipped_and_say_why(tmp_path):
    jobs, skipped = run.plan(run.parse_args(["--only", "multi30k-train"]), str(tmp_path))
    assert [job[0] for job in jobs] == ["matmul_start"]
    skipped = multi30k_skips(skipped)
    assert len(skipped) == 2
    assert all("no --data-dir given" in reason and "train.en" in reason for reason in skipped)


def test_a_data_dir_missing_files_names_them(tmp_path):
    data_dir = make_data_dir(tmp_path / "m30k", files=("train.en", "val.de"))
    args = run.parse_args(["--only", "multi30k-train", "--data-dir", data_dir])
    jobs, skipped = run.plan(args, str(tmp_path))
    assert [job[0] for job in jobs] == ["matmul_start"]
    assert "lacks train.de, val.en" in multi30k_skips(skipped)[0]


def test_without_fairseq_venv_only_keras_s2s_runs(tmp_path):
    data_dir = make_data_dir(tmp_path / "m30k")
    args = run.parse_args(["--only", "multi30k-train", "--data-dir", data_dir,
                           "--fairseq-venv", str(tmp_path / "absent")])
    jobs, skipped = run.plan(args, str(tmp_path))
    assert [job[0] for job in jobs] == ["matmul_start", run.MULTI30K_OURS]
    expected = (f"{run.MULTI30K_FAIRSEQ}: --fairseq-venv {str(tmp_path / 'absent')!r} has no "
                "bin/fairseq-train (install: python3 -m venv VENV && VENV/bin/pip install "
                'torch==2.11.0 torchaudio==2.11.0 "numpy<2.3" fairseq-fixed==0.12.3.1 '
                "(bench/README.md))")
    assert multi30k_skips(skipped) == [expected]


def test_the_group_runs_both_with_the_protocol_and_the_data_dir(tmp_path):
    data_dir = make_data_dir(tmp_path / "m30k")
    args = run.parse_args(["--only", "multi30k-train", "--data-dir", data_dir,
                           "--fairseq-venv", make_venv(tmp_path / "venv"),
                           "--multi30k-windows", "3", "--multi30k-window-steps", "7"])
    jobs, skipped = run.plan(args, str(tmp_path / "raw"), str(tmp_path / "logs"))
    assert multi30k_skips(skipped) == []
    assert [job[0] for job in jobs] == ["matmul_start", run.MULTI30K_OURS, run.MULTI30K_FAIRSEQ]
    for name, kind, argv, out in jobs[1:]:
        assert kind == "multi30k" and out == str(tmp_path / "raw" / f"{name}.json")
        assert argv[argv.index("--data-dir") + 1] == data_dir
        assert argv[argv.index("--windows") + 1] == "3"
        assert argv[argv.index("--window-steps") + 1] == "7"
    fairseq = jobs[2][2]
    assert fairseq[fairseq.index("--log") + 1].startswith(str(tmp_path / "logs"))


def test_one_job_of_the_group_can_run_alone(tmp_path):
    data_dir = make_data_dir(tmp_path / "m30k")
    args = run.parse_args(["--only", run.MULTI30K_OURS, "--data-dir", data_dir,
                           "--fairseq-venv", make_venv(tmp_path / "venv")])
    assert [job[0] for job in run.plan(args, str(tmp_path))[0]] == [
        "matmul_start", run.MULTI30K_OURS]


def test_the_default_plan_skips_the_multi30k_jobs_without_data(tmp_path):
    jobs, skipped = run.plan(run.parse_args(["--include-peers", ""]), str(tmp_path))
    assert not any(job[0].startswith("multi30k-train") for job in jobs)
    assert any(reason.startswith(run.MULTI30K_OURS + ": no --data-dir") for reason in skipped)


@pytest.mark.parametrize("flag", ["--multi30k-windows", "--multi30k-window-steps"])
def test_window_arguments_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        run.parse_args([flag, "0"])
    assert f"{flag} must be a positive integer; received 0" in capsys.readouterr().err


@pytest.mark.parametrize("main", ["multi30k_train", "fairseq_train"])
@pytest.mark.parametrize("flag, value, message", [
    ("--windows", "0", "--windows must be a positive integer; received 0"),
    ("--window-steps", "-3", "--window-steps must be a positive integer; received -3"),
    ("--warmup-epochs", "-1", "--warmup-epochs must be non-negative; received -1"),
])
def test_both_sides_reject_an_impossible_protocol_before_reading_data(main, flag, value, message,
                                                                      tmp_path, capsys):
    from bench import multi30k_train

    module = {"multi30k_train": multi30k_train, "fairseq_train": fairseq_train}[main]
    venv = ["--venv", str(tmp_path)] if main == "fairseq_train" else []
    with pytest.raises(SystemExit) as exit_info:
        module.main([*venv, "--data-dir", str(tmp_path / "absent"), "--out",
                     str(tmp_path / "out.json"), flag, value])
    assert exit_info.value.code == 2  # argparse's usage error, not a skip
    assert message in capsys.readouterr().err


# -- FLOPs ------------------------------------------------------------------------------


def test_matmul_params_are_the_kernels_of_a_built_model_plus_the_tied_projection():
    from keras_s2s import ModelConfig, build_transformer

    model = build_transformer(ModelConfig(
        source_vocabulary_size=50, target_vocabulary_size=50, hidden_dim=16, num_heads=2,
        intermediate_dim=24, num_encoder_layers=1, num_decoder_layers=2,
        tie_embeddings="all"))
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights
                  if w.path.endswith("kernel"))
    # The output projection is the shared (V, D) embedding: a matmul with no weights of its own.
    assert train_metrics.matmul_params(DIMS) == kernels + 16 * 50


def test_attention_flops_count_real_lengths_by_hand():
    # 3 (fwd + bwd) x 2 matmuls x 2 FLOP x D=16 = 192 per (query, key) pair and layer:
    # encoder 1 x 3 x 3, decoder 2 x (5 x 5 self + 5 x 3 cross).
    assert train_metrics.attention_flops(DIMS, 3, 5) == 192 * (9 + 2 * (25 + 15))


def test_corpus_flops_per_target_token():
    flops = train_metrics.corpus_flops(DIMS, [(3, 5), (2, 1)])
    n = train_metrics.matmul_params(DIMS)
    assert (flops.pairs, flops.source_tokens, flops.target_tokens) == (2, 5, 6)
    attention = (train_metrics.attention_flops(DIMS, 3, 5)
                 + train_metrics.attention_flops(DIMS, 2, 1))
    assert flops.per_target_token == pytest.approx(6 * n + attention / 6)
    with pytest.raises(ValueError, match="no target token"):
        train_metrics.corpus_flops(DIMS, [])


# -- windows ----------------------------------------------------------------------------


def test_windows_start_after_the_warmup_and_span_begin_to_end():
    begin = [0.0, 1.0, 2.5, 3.5, 4.5, 5.5, 6.5]
    end = [0.9, 2.0, 3.4, 4.4, 5.4, 6.4, 7.4]
    tokens = [10, 11, 12, 13, 14, 15, 16]
    windows = train_metrics.split_windows(begin, end, tokens, start=2, window_steps=2, count=5,
                                          step_rss_mib=[1, 2, 3, 4, 5, 6, 7])
    # Steps 2-3 and 4-5; step 6 does not fill a third window.
    assert [(w.first_step, w.tokens, w.rss_mib_end) for w in windows] == [
        (2, 25, 4), (4, 29, 6)]
    assert [w.seconds for w in windows] == pytest.approx([4.4 - 2.5, 6.4 - 4.5])


def test_window_cpu_time_runs_from_its_first_begin_to_its_last_end():
    cpu = [(0.0, 1.5), (1.6, 3.0), (3.1, 5.0)]
    windows = train_metrics.split_windows([0, 1, 2], [1, 2, 3], [10, 10, 10], start=1,
                                          window_steps=2, count=1, step_cpu=cpu)
    assert windows[0].cpu_seconds == pytest.approx(5.0 - 1.6)
    summary = train_metrics.summarize(windows, None, None, None)
    assert summary["tokens_per_cpu_s_median"] == pytest.approx(20 / 3.4)


def test_rss_growth_is_split_between_new_and_seen_batch_shapes():
    growth = train_metrics.rss_growth_by_shape(
        ["a", "b", "a", "c", "b"], [200.0, 260.0, 261.0, 300.0, 299.0], rss_mib_start=100.0)
    assert growth == {"new_shape_steps": 3, "new_shape_mib": pytest.approx(100 + 60 + 39),
                      "seen_shape_steps": 2, "seen_shape_mib": pytest.approx(1 - 1)}


def test_split_windows_rejects_ragged_inputs():
    with pytest.raises(ValueError, match="one entry per step; received 2, 1, 2"):
        train_metrics.split_windows([0, 1], [1], [5, 5], 0, 1, 1)


def test_summary_median_seconds_per_epoch_and_mfu():
    windows = [train_metrics.Window(0, 10, 5.0, 1000), train_metrics.Window(10, 10, 4.0, 1000),
               train_metrics.Window(20, 10, 10.0, 1000)]
    summary = train_metrics.summarize(windows, batches_per_epoch=150, flops_per_token=1e7,
                                      peak_gflops=100.0)
    assert summary["tokens_per_s_median"] == pytest.approx(200.0)
    assert summary["seconds_per_epoch"] == pytest.approx(150 * 19.0 / 30)
    assert summary["mfu"] == pytest.approx(200.0 * 1e7 / 1e9 / 100.0)
    assert train_metrics.summarize([], 150, 1e7, 100.0)["tokens_per_s_median"] is None


# -- fairseq --------------------------------------------------------------------------


def test_fairseq_max_epoch_covers_the_warmup_and_the_windows():
    # 100000 target tokens in batches of at most 4096: at least 25 updates an epoch.
    epochs = fairseq_train.max_epochs_needed(1, 5, 30, 100_000, 4096, 1)
    assert (epochs - 2) * 25 >= 6 * 30
    assert fairseq_train.max_epochs_needed(1, 5, 30, 100_000, 4096, 2) > epochs


def test_fairseq_command_copies_the_model_and_the_batch():
    model = {"num_encoder_layers": 4, "num_decoder_layers": 3, "hidden_dim": 128,
             "intermediate_dim": 256, "num_heads": 4, "dropout": 0.3}
    command = fairseq_train.train_command("/v", "/bin_dir", "/save", model, 4096, 1, 30, 7)
    flags = dict(itertools.pairwise(command))  # each flag -> the word after it
    assert command[:3] == ["/v/bin/fairseq-train", "/bin_dir", "--cpu"]
    for flag, value in (("--encoder-layers", "4"), ("--decoder-layers", "3"),
                        ("--decoder-ffn-embed-dim", "256"), ("--encoder-attention-heads", "4"),
                        ("--dropout", "0.3"), ("--max-tokens", "4096"), ("--update-freq", "1"),
                        ("--log-interval", "30"), ("--max-epoch", "7"), ("--lr", "0.005")):
        assert flags[flag] == value
    assert {"--share-all-embeddings", "--no-save", "--disable-validation"} <= set(command)


# -- report -----------------------------------------------------------------------------


def _result(framework, tokens_per_s, rss, traces):
    return {
        "framework": framework, "tokens_per_s_median": tokens_per_s,
        "tokens_per_s_min_max": [tokens_per_s - 10, tokens_per_s + 10],
        "windows": [{"rss_mib_end": rss}, {"rss_mib_end": rss + 5}],
        "protocol": {"window_steps": 30}, "seconds_per_epoch": 150_000 / tokens_per_s,
        "batches_per_epoch": 149, "mfu": 0.2, "flops": {"corpus": {"per_target_token": 1.4e7}},
        "peak_rss_mib": rss + 10, "epochs": [{"rss_mib_end": rss}],
        "batch_shapes": {"distinct": 40, "new_after_warmup": 1} if traces else None,
        "train_function_traces": traces,
    }


def test_multi30k_rows_ratios_and_markdown():
    rows = {
        run.MULTI30K_OURS: report.multi30k_row(
            run.MULTI30K_OURS, _result("keras_s2s", 3000.0, 2000.0, {"one_step_on_data": 2}),
            2100.0, None),
        run.MULTI30K_FAIRSEQ: report.multi30k_row(
            run.MULTI30K_FAIRSEQ, _result("fairseq", 4000.0, 1000.0, None), 1100.0, None),
    }
    ratios = report.multi30k_ratios(rows)
    assert ratios["tokens_per_s_median"]["ratio"] == pytest.approx(0.75)
    assert ratios["seconds_per_epoch"]["ratio"] == pytest.approx(4 / 3)
    assert ratios["peak_rss_mib"]["ratio"] == pytest.approx(2010 / 1010)
    text = "\n".join(report.multi30k_markdown(rows, ratios))
    assert "| keras_s2s | 3000 (2990–3010; 2 × 30 steps) | – | 50 (149) | 20.0% | 2010 |" in text
    assert "one_step_on_data 2" in text and "n/a (eager)" in text
    assert "2000 → 2005" in text
    failed = report.multi30k_row(run.MULTI30K_FAIRSEQ, None, 50.0, "exit 1")
    assert "failed: exit 1" in "\n".join(report.multi30k_markdown({"x": failed}, {}))


# -- the fit probe ----------------------------------------------------------------------


def test_probe_counts_tokens_shapes_and_traces_and_stops_after_the_timed_steps():
    import keras
    import tensorflow as tf

    from bench.train_probe import StepProbe, instrument_fit, traced_functions
    from keras_s2s import ModelConfig, build_transformer
    from keras_s2s.config import TrainConfig
    from keras_s2s.training import compile_model

    rng = np.random.default_rng(0)

    def batch(size, length):
        tokens = rng.integers(1, 30, size=(size, length)).astype("int32")
        tokens[:, length - 2:] = 0  # two pad columns
        return {"encoder_tokens": tokens, "decoder_tokens": tokens}, tokens

    batches = [batch(4, 6), batch(2, 9), batch(4, 6)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=({"encoder_tokens": tf.TensorSpec((None, None), tf.int32),
                           "decoder_tokens": tf.TensorSpec((None, None), tf.int32)},
                          tf.TensorSpec((None, None), tf.int32))).repeat()
    model = build_transformer(ModelConfig(
        source_vocabulary_size=30, target_vocabulary_size=30, hidden_dim=8, num_heads=2,
        intermediate_dim=8, num_encoder_layers=1, num_decoder_layers=1))
    compile_model(model, TrainConfig(warmup_steps=2))
    original_fit = keras.Model.fit
    probe = StepProbe(warmup_epochs=1, timed_steps=4)
    with instrument_fit(probe):
        model.fit(dataset, epochs=10, steps_per_epoch=3, verbose=0, shuffle=False)
    assert keras.Model.fit is original_fit
    # One warm-up epoch of 3 steps, then 4 timed steps (into the third epoch), then stop.
    assert len(probe.step_end) == 7 and probe.timed_start == 3
    assert probe.steps_per_epoch == 3
    assert [e["steps"] for e in probe.epochs] == [3, 3, 1]
    assert probe.step_tokens == [4 * 4, 2 * 7, 4 * 4] * 2 + [4 * 4]
    assert set(probe.step_shapes) == {(4, 6, 4, 6, 4, 6), (2, 9, 2, 9, 2, 9)}
    assert all(b < e for b, e in zip(probe.step_begin, probe.step_end))
    traces = traced_functions(model.train_function)
    assert traces.get("one_step_on_data", 0) >= 1 and traces.get("multi_step_on_iterator", 0) >= 1
    assert probe.epochs[-1]["train_function_traces"] == traces


def test_probe_measures_one_fit_only():
    from bench.train_probe import StepProbe

    probe = StepProbe(1, 1)
    probe.model_ref = object()
    with pytest.raises(RuntimeError, match="already attached"):
        probe.attach(object())


# -- on the real corpus -----------------------------------------------------------------


@needs_multi30k
@pytest.mark.slow
def test_one_multi30k_epoch_is_about_the_issues_six_teraflops():
    # Issue 17: "one epoch is about 6.3 TFLOP (forward + backward, padding excluded)".
    from bench.multi30k_train import DEFAULT_CONFIG, settings_for
    from keras_s2s.training.settings import make_configs

    model_settings, train_config = make_configs(
        settings_for(DEFAULT_CONFIG, MULTI30K, 1, 1, {}))
    tokenizers, _ = multi30k_data.tokenizer_dir(MULTI30K, train_config)
    lengths, dropped = multi30k_data.piece_lengths(
        tokenizers, MULTI30K, model_settings["max_length"], train_config.max_source_words)
    assert len(lengths) + dropped == 29000
    dims = train_metrics.TransformerDims(
        model_settings["hidden_dim"], model_settings["intermediate_dim"],
        model_settings["num_encoder_layers"], model_settings["num_decoder_layers"],
        train_config.vocabulary_size)
    flops = train_metrics.corpus_flops(dims, lengths)
    assert 6.0e12 < flops.total < 7.0e12
    # Attention is a few percent at these lengths: 6 N dominates.
    assert 1.0 < flops.per_target_token / (6 * train_metrics.matmul_params(dims)) < 1.05


def test_fairseq_log_lines_are_read_as_numbers():
    line = ('2026-12-04 15:00:00 | INFO | train_inner | {"epoch": 2, "update": 1.227, '
            '"loss": "9.1", "wps": "3000.5", "wpb": "3100", "num_updates": "150"}')
    tag, stats = fairseq_log.parse_line(line)
    assert tag == "train_inner"
    assert stats == {"epoch": 2, "update": 1.227, "loss": 9.1, "wps": 3000.5, "wpb": 3100.0,
                     "num_updates": 150.0}
    assert fairseq_log.parse_line("2026-12-04 15:00:00 | INFO | fairseq_cli.train | {}") is None
    assert fairseq_log.parse_line(json.dumps({"not": "a log line"})) is None


def _inner(update, wps, wpb=3000, epoch=1):
    # The form of fairseq 0.12's JsonProgressBar.log lines (values are strings).
    return (f'2026-12-04 15:01:32 | INFO | train_inner | {{"epoch": {epoch}, "update": 0.038, '
            f'"loss": "13.741", "wps": "{wps}", "ups": "0.06", "wpb": "{wpb}", '
            f'"bsz": "337.6", "num_updates": "{update}", "train_wall": "90", "wall": "93"}}')


def _epoch_end(epoch, updates, wall):
    # JsonProgressBar.print: every key but "epoch" prefixed with the tag.
    return (f'2026-12-04 15:03:00 | INFO | train | {{"epoch": {epoch}, "train_loss": "9.9", '
            f'"train_wps": "2900", "train_num_updates": "{updates}", '
            f'"train_train_wall": "100", "train_wall": "{wall}"}}')


def _records(lines, clock=None):
    records = []
    for index, line in enumerate(lines):
        parsed = fairseq_log.parse_line(line)
        if parsed:
            records.append(fairseq_log.Record(*parsed, seen_at=(clock or {}).get(index),
                                              rss_mib=1000.0 + index,
                                              cpu_seconds=10.0 * index))
    return records


def test_fairseq_windows_start_after_the_warmup_epoch():
    lines = [_inner(30, 1000), _inner(60, 1000), _inner(90, 1000), _inner(120, 1000),
             _epoch_end(1, 132, 120), _inner(150, 2000, epoch=2), _inner(180, 3000, 3300, 2),
             _inner(210, 2500, epoch=2), "2026-12-04 15:04:00 | INFO | fairseq_cli.train | done"]
    records = _records(lines)
    assert fairseq_log.warmup_updates(records, 1) == 132
    assert fairseq_log.warmup_updates(records, 2) is None  # still running
    # Updates 121-150 straddle the warm-up's end: the first window is 151-180.
    windows = fairseq_log.timed_windows(records, 1, 30, 5)
    assert [(w.first_step, w.tokens, w.tokens_per_s) for w in windows] == [
        (150, 99000, pytest.approx(3000)), (180, 90000, pytest.approx(2500))]
    assert windows[0].seconds == pytest.approx(33.0)
    assert windows[0].rss_mib_end == 1006.0  # sampled when its line was read
    assert windows[0].cpu_seconds == pytest.approx(10.0)  # from the previous interval's line
    assert len(fairseq_log.timed_windows(records, 0, 30, 3)) == 3


def test_fairseq_epochs_count_their_own_updates():
    lines = [_epoch_end(1, 132, 120), _inner(150, 2000, epoch=2), _epoch_end(2, 264, 230)]
    epochs = fairseq_log.epochs(_records(lines, clock={0: 100.0, 2: 210.5}))
    assert [(e["epoch"], e["updates"], e["updates_total"]) for e in epochs] == [
        (1, 132, 132), (2, 132, 264)]
    assert epochs[1]["seconds"] == pytest.approx(110.5) and "seconds" not in epochs[0]


@pytest.mark.parametrize(("symbols", "size"), [(7788, 7792), (7789, 7800)])
def test_fairseq_dictionary_rows_add_the_specials_and_pad_to_eight(tmp_path, symbols, size):
    path = tmp_path / "dict.de.txt"
    path.write_text("".join(f"piece{i} 1\n" for i in range(symbols)))
    assert fairseq_train.fairseq_dictionary_size(str(path)) == size


def test_fairseq_process_tree_includes_children_and_sums_their_memory():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in fairseq_train.tree_pids(os.getpid())
        alone = fairseq_train.tree_rss_mib(child.pid)
        assert fairseq_train.tree_rss_mib(os.getpid()) > alone > 0
        assert fairseq_train.tree_cpu_seconds(os.getpid()) >= 0
    finally:
        child.kill()  # our own child, by its pid
        child.wait()
    assert fairseq_train.tree_rss_mib(child.pid) is None
