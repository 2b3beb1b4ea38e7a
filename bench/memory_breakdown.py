"""Where a training run's memory goes: `python -m bench.memory_breakdown TRAIN FLAGS...`.

Runs `training.train` with the given flags (the same as its command line) and
prints, as one JSON line each, at the start, at `fit`'s start, after steps
1, 2, 5, 10, 20, 40, 80 and 120 and the last step of the first epoch, at each
epoch's end and at the end:

* `rss` split into `file` (mapped files: the shared libraries), `heap` (the
  brk heap) and `anon` (other memory: mmapped blocks, thread arenas and
  stacks), MiB, from /proc/self/smaps;
* glibc's own account (`mallinfo2`): `malloc_arena` (heap and thread arenas),
  `malloc_mmapped` (blocks glibc mapped on their own: large allocations, and
  TensorFlow's oneDNN allocator pool, which is reserved, not all resident),
  `malloc_in_use`, `malloc_free` (held by the arenas, not in use);
* `pool_in_use` and `pool_peak`: the bytes TensorFlow's CPU allocator hands
  out from the oneDNN pool above (its blocks of 256 KiB and more; the
  smaller ones keep no count) now and at most since the previous record,
  MiB to two decimals. The peak is reset at each record, so `step1` holds
  the first step's high-water mark, `step5` that of steps 3-5, and an
  epoch's end that of its last steps and its validation. From `fit_start`
  on, where the allocator keeps these counts (oneDNN on: x86-64 Linux
  unless `TF_ENABLE_ONEDNN_OPTS=0`); absent elsewhere;
* `py_blocks` (`sys.getallocatedblocks`) and `gc_objects`: Python's share.

Linux with glibc only. Results: bench/results/2026-12-05-multi30k-memory.md.
"""

from __future__ import annotations

import ctypes
import gc
import json
import re
import sys
from unittest import mock

STEPS_REPORTED = frozenset({1, 2, 5, 10, 20, 40, 80, 120})


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


def resident_split(smaps_path: str = "/proc/self/smaps") -> dict[str, float]:
    """Resident MiB by kind of mapping: `file` (a path), `heap` (brk) and `anon` (the rest: mmap, stacks)."""
    split = {"file": 0.0, "heap": 0.0, "anon": 0.0}
    kind = "anon"
    with open(smaps_path, encoding="utf-8") as smaps:
        for line in smaps:
            header = re.match(r"[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)", line)
            if header:
                name = header.group(1).strip()
                kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
            elif line.startswith("Rss:"):
                split[kind] += int(line.split()[1]) / 1024.0
    return split


def malloc_info() -> dict[str, float]:
    """glibc's `mallinfo2`, MiB; empty where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mib = 2.0**20
    return {
        "malloc_arena": info.arena / mib,
        "malloc_mmapped": info.hblkhd / mib,
        "malloc_in_use": info.uordblks / mib,
        "malloc_free": info.fordblks / mib,
    }


def tensorflow_pool() -> dict[str, float]:
    """TensorFlow's CPU allocator: MiB in use, and the peak since the last call.

    Empty when TensorFlow is not imported or its CPU allocator keeps no
    counts (TensorFlow documents these calls as GPU/TPU-only; the oneDNN
    allocator happens to answer them).
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return {}
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
        tf.config.experimental.reset_memory_stats("CPU:0")
    except (ValueError, tf.errors.OpError):
        return {}
    mib = 2.0**20
    return {"pool_in_use": round(info["current"] / mib, 2), "pool_peak": round(info["peak"] / mib, 2)}


def breakdown(at: str, pool: bool = True) -> dict:
    """One record: where this process's memory is now (`pool`: with `tensorflow_pool`)."""
    split = resident_split()
    record = {"at": at, "rss": sum(split.values()), **split, **malloc_info()}
    record = {k: round(v) if isinstance(v, float) else v for k, v in record.items()}
    record.update(tensorflow_pool() if pool else {})
    record.update(py_blocks=sys.getallocatedblocks(), gc_objects=len(gc.get_objects()))
    return record


def report(at: str, pool: bool = True) -> None:
    print(json.dumps(breakdown(at, pool)), flush=True)


def main(argv=None) -> None:
    import keras

    class MemoryProbe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step = 0
            report("fit_start")

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1  # counted over the whole fit
            if self.step in STEPS_REPORTED or self.step == self.params.get("steps"):
                report(f"step{self.step}")

        def on_epoch_end(self, epoch, logs=None):
            report(f"epoch{epoch + 1}_end")

    fit = keras.Model.fit

    def fit_with_probe(model, *args, callbacks=None, **kwargs):
        return fit(model, *args, callbacks=[*(callbacks or []), MemoryProbe()], **kwargs)

    from training.train import main as train_main

    report("start", pool=False)  # before TensorFlow's runtime starts
    with mock.patch.object(keras.Model, "fit", fit_with_probe):
        train_main(argv)
    report("end")


if __name__ == "__main__":
    main()
