"""The multi30k-decode job's harness: skipping, planning, fairseq output, the table.

Nothing is decoded or timed here; the job itself runs in `python -m bench.run
--only multi30k-decode --data-dir DIR --run-dir RUN`.
"""

import json
import os
import subprocess
import sys

import pytest

from bench import multi30k_decode, run, workload

FAIRSEQ_OUTPUT = """\
2026-12-04 15:00:00 | INFO | fairseq_cli.generate | loaded 1,000 examples
S-1\t▁Two ▁dogs ▁play .
H-1\t-0.41\t▁Zwei ▁Hunde ▁spielen .
D-1\t-0.41\tZwei Hunde spielen .
S-0\t▁A ▁man ▁sleeps .
H-0\t-0.32\t▁Ein ▁Mann ▁schläft .
D-0\t-0.32\tEin Mann schläft .
P-0\t-0.1 -0.2 -0.3 -0.4 -0.5
2026-12-04 15:00:09 | INFO | fairseq_cli.generate | NOTE: hypothesis and token scores are output in base 2
2026-12-04 15:00:09 | INFO | fairseq_cli.generate | Translated 1,000 sentences (13,456 tokens) in 8.9s (112.36 sentences/s, 1511.85 tokens/s)
Generate test with beam=5: BLEU4 = 35.10, 66.0/41.5/28.0/19.3 (BP=1.000, ratio=1.012, syslen=12000, reflen=11857)
"""


def test_fairseq_log_gives_hypotheses_in_test_set_order_and_its_timing():
    parsed = multi30k_decode.parse_fairseq_log(FAIRSEQ_OUTPUT)
    assert parsed["hypotheses"] == ["Ein Mann schläft .", "Zwei Hunde spielen ."]
    assert parsed["generate_sentences"] == 1000 and parsed["generate_tokens"] == 13456
    assert parsed["generate_seconds"] == 8.9
    assert parsed["generate_sentences_per_s"] == 112.36
    assert parsed["generate_tokens_per_s"] == 1511.85


def test_fairseq_log_without_its_summary_line_is_an_error():
    with pytest.raises(ValueError, match=r"no 'Translated N sentences"):
        multi30k_decode.parse_fairseq_log("D-0\t-0.3\tEin Mann .\n")


def test_fairseq_command_is_the_peer_protocol():
    command = multi30k_decode.fairseq_command("/venv", "/bin_dir", "/ckpt.pt", 5)
    assert command[:4] == ["/venv/bin/fairseq-generate", "/bin_dir", "--path", "/ckpt.pt"]
    assert " ".join(command[4:]).startswith("--cpu --beam 5 --batch-size 128 --gen-subset test")


def test_skip_reasons_name_what_is_missing(tmp_path):
    args = multi30k_decode.parse_args(["--out", str(tmp_path / "x.json")])
    assert "pass --data-dir" in multi30k_decode.skip_reason(args)
    assert "not asked for" in multi30k_decode.fairseq_skip_reason(args)
    (tmp_path / "test2016.en").write_text("A man .\n")
    (tmp_path / "test2016.de").write_text("Ein Mann .\n")
    args = multi30k_decode.parse_args(["--out", "x.json", "--data-dir", str(tmp_path),
                                       "--run-dir", str(tmp_path)])
    assert "has no model.keras" in multi30k_decode.skip_reason(args)
    args = multi30k_decode.parse_args(["--out", "x.json", "--fairseq-venv", str(tmp_path)])
    assert "go together" in multi30k_decode.fairseq_skip_reason(args)
    args = multi30k_decode.parse_args(["--out", "x.json", "--fairseq-venv", str(tmp_path),
                                       "--fairseq-data-bin", "b", "--fairseq-checkpoint", "c"])
    assert "no fairseq-generate at" in multi30k_decode.fairseq_skip_reason(args)


def test_bad_paths_and_beams_are_rejected(capsys):
    with pytest.raises(SystemExit):
        multi30k_decode.parse_args(["--out", "x", "--paths", "in_process,ctranslate"])
    assert "unknown ['ctranslate']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        multi30k_decode.parse_args(["--out", "x", "--beams", "5,0"])
    assert "positive integers" in capsys.readouterr().err


def test_without_data_the_job_writes_its_skip_reason(tmp_path):
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "bench.multi30k_decode", "--out", str(out)],
                   check=True, cwd=workload.REPO_ROOT, capture_output=True)
    result = json.loads(out.read_text())
    assert result["skipped"].startswith("multi30k-decode: pass --data-dir")
    assert multi30k_decode.markdown_table(result) == result["skipped"]


def test_plan_passes_the_data_run_and_fairseq_arguments_as_absolute_paths(tmp_path):
    args = run.parse_args(["--only", "multi30k-decode", "--data-dir", "data",
                           "--run-dir", "runs/m", "--fairseq-venv", "fv"])
    jobs, _ = run.plan(args, str(tmp_path))
    assert [job[0] for job in jobs] == ["matmul_start", "multi30k-decode"]
    argv = jobs[1][2]
    assert argv[1:3] == ["-m", "bench.multi30k_decode"]
    for flag, value in (("--data-dir", "data"), ("--run-dir", "runs/m"), ("--fairseq-venv", "fv")):
        assert argv[argv.index(flag) + 1] == os.path.abspath(value)
    assert "--fairseq-checkpoint" not in argv


def test_markdown_table_rows_and_failures():
    row = {"sentences_per_s": 120.0, "sentences_per_s_first_pass": 80.0, "tokens_per_s": 1800.0,
           "latency_1": {"p50_ms": 20.0, "p95_ms": 31.0},
           "latency_32": {"p50_ms": 300.0, "p95_ms": 410.0}, "mean_hypothesis_pieces": 15.0,
           "mean_hypothesis_words": 12.1, "bleu": 30.5, "xla_compilations": 6,
           "search_traces": 1, "peak_rss_mib": 1500.0}
    table = multi30k_decode.markdown_table(
        {"by_path": {"in_process_beam5": row, "saved_model_beam1": {"error": "exit 1; log x"}},
         "not_measured": ["fairseq peer: not asked for"]})
    lines = table.splitlines()
    assert lines[2] == ("| keras_s2s in process (Translator, XLA) | 5 | 120.0 (80.0) | 1800 | 20 / 31 "
                        "| 300 / 410 | 15.0 (12.1) | 30.50 | 6 / 1 | 1500 |")
    assert lines[3].startswith("| keras_s2s SavedModel (serving_default, no XLA) | 1 | failed: exit 1")
    assert lines[-1] == "Not measured: fairseq peer: not asked for"
