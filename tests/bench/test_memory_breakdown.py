"""bench.memory_breakdown: the resident split of a smaps file, and the records of a tiny run."""

import json
import os
import subprocess
import sys

import pytest

from bench import memory_breakdown
from tests.helpers import REPO_ROOT, train_command

SMAPS = """\
55d0c0000000-55d0c4000000 rw-p 00000000 00:00 0                          [heap]
Size:              65536 kB
Rss:                2048 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 1234                       /usr/lib/libtensorflow_cc.so.2
Rss:                1024 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                3072 kB
7f0000400000-7f0000500000 rw-p 00000000 00:00 0                          [anon:glibc]
Rss:                1024 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 512 kB
"""


def test_resident_split_sorts_mappings_by_kind(tmp_path):
    path = tmp_path / "smaps"
    path.write_text(SMAPS)
    split = memory_breakdown.resident_split(str(path))
    assert split == {"heap": 2.0, "file": 1.0, "anon": 4.5}  # [anon:...] and [stack] are anon


def vm_rss_mib():
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_this_process_split_matches_the_kernel_and_glibc_accounts():
    record = memory_breakdown.breakdown("now")
    # The kernel's own total: a mapping missed or counted twice would show here.
    assert abs(record["rss"] - vm_rss_mib()) <= max(8.0, 0.02 * record["rss"])
    # glibc: arena bytes = in use + free; a wrong mallinfo2 layout breaks it.
    assert abs(record["malloc_in_use"] + record["malloc_free"] - record["malloc_arena"]) <= 2
    assert record["file"] > 0 and record["anon"] > 0


def test_the_pool_record_follows_tensorflows_allocator():
    import tensorflow as tf

    if not memory_breakdown.tensorflow_pool():  # resets the peak
        pytest.skip("this TensorFlow's CPU allocator keeps no counts (oneDNN off)")
    block = tf.fill([1024, 1024], 1.0)  # 4 MiB, a pool allocation
    pool = memory_breakdown.tensorflow_pool()
    assert pool["pool_peak"] >= pool["pool_in_use"] >= 4.0
    del block
    after = memory_breakdown.tensorflow_pool()
    assert after["pool_in_use"] <= pool["pool_in_use"] - 4.0 + 0.01
    assert after["pool_peak"] >= 4.0  # the peak since the last record still saw the block


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_a_tiny_run_reports_each_point(tmp_path):
    # 2048-token batches: the logits (B, T, 120) float32 are pool blocks (256 KiB and more).
    command = train_command(tmp_path / "run", epochs=1, steps_per_epoch=7, batch_tokens=2048)
    command[1:3] = ["-m", "bench.memory_breakdown"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    points = [record["at"] for record in records]
    # Steps 1, 2, 5 of STEPS_REPORTED, then the epoch's last step.
    assert points == ["start", "fit_start", "step1", "step2", "step5", "step7", "epoch1_end", "end"]
    for record in records:
        assert record["malloc_arena"] > 0 and record["py_blocks"] > 0
    assert "pool_peak" not in records[0]  # TensorFlow's runtime has not started
    if "pool_peak" in records[1]:  # the allocator keeps counts (oneDNN on)
        for record in records[1:]:
            assert 0 <= record["pool_in_use"] <= record["pool_peak"]
        assert records[2]["pool_peak"] >= records[1]["pool_in_use"] + 0.25
    assert records[-1]["rss"] > records[0]["rss"]  # TensorFlow's runtime and the model
