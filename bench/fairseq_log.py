"""fairseq-train's `--log-format json` log -> timed windows and epochs. Pure functions.

fairseq prints `DATE TIME | INFO | TAG | {json}`; the bench reads two tags:

* `train_inner`, every `--log-interval` updates: `num_updates`, `wps`
  (target tokens per second over the interval: the meter restarts at each
  log line, so it covers everything since the previous one), `wpb` (target
  tokens per batch, the interval's mean), `ups`, `wall` (seconds since
  start, rounded to whole seconds);
* `train`, at the end of each epoch: the same with a `train_` prefix, and
  `train_num_updates`, the updates done so far.

Values are printed as strings; they are read as numbers. fairseq's target
tokens (`ntokens`) are the target pieces plus EOS, without padding: the
same count as keras_s2s's non-pad labels (pieces plus END).
"""

from __future__ import annotations

import dataclasses
import json

from bench.train_metrics import Window

INNER, EPOCH = "train_inner", "train"


@dataclasses.dataclass
class Record:
    """One JSON log line of fairseq-train, with the harness's own clock and RSS."""

    tag: str
    stats: dict
    seen_at: float | None = None  # when the harness read the line (its clock)
    rss_mib: float | None = None  # fairseq's RSS then (process and its children)
    cpu_seconds: float | None = None  # fairseq's CPU time so far (process and its children)


def parse_line(line: str) -> tuple[str, dict] | None:
    """(tag, stats as numbers) of a `train_inner` / `train` JSON line, else None."""
    parts = line.rstrip("\n").split(" | ", 3)
    if len(parts) != 4 or parts[2] not in (INNER, EPOCH) or not parts[3].startswith("{"):
        return None
    try:
        stats = json.loads(parts[3])
    except json.JSONDecodeError:
        return None
    return parts[2], {key: _number(value) for key, value in stats.items()}


def _number(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def warmup_updates(records: list[Record], warmup_epochs: int) -> int | None:
    """Updates done when epoch `warmup_epochs` ended (None while it runs; 0 without warm-up)."""
    if warmup_epochs == 0:
        return 0
    for record in records:
        if record.tag == EPOCH and record.stats.get("epoch") == warmup_epochs:
            return int(record.stats["train_num_updates"])
    return None


def timed_windows(records: list[Record], warmup_epochs: int, log_interval: int,
                  count: int) -> list[Window]:
    """The first `count` log intervals that start after the warm-up, as Windows.

    A window's tokens are `wpb` x `log_interval`, its seconds tokens / `wps`
    (the interval's own meters; `wall` is rounded to whole seconds).
    """
    start = warmup_updates(records, warmup_epochs)
    if start is None:
        return []
    windows, previous = [], None
    for record in records:
        if record.tag != INNER:
            continue
        first = int(record.stats["num_updates"]) - log_interval
        cpu = None
        if previous and previous.cpu_seconds is not None and record.cpu_seconds is not None:
            cpu = record.cpu_seconds - previous.cpu_seconds  # between the two lines' reading
        previous = record
        if first < start:
            continue
        tokens = record.stats["wpb"] * log_interval
        windows.append(Window(first, log_interval, tokens / record.stats["wps"],
                              round(tokens), record.rss_mib, cpu))
        if len(windows) == count:
            break
    return windows


def epochs(records: list[Record]) -> list[dict]:
    """Per finished epoch: updates, fairseq's wall clock, and the harness's clock and RSS."""
    out, previous = [], None
    for record in records:
        if record.tag != EPOCH:
            continue
        stats = record.stats
        updates = int(stats["train_num_updates"])
        entry = {
            "epoch": int(stats["epoch"]),
            "updates": updates - (previous["updates_total"] if previous else 0),
            "updates_total": updates,
            "wall_total_s": stats.get("train_wall"),
            "tokens_per_s": stats.get("train_wps"),
            "loss": stats.get("train_loss"),
            "rss_mib_end": record.rss_mib,
            "seen_at": record.seen_at,
        }
        if previous and record.seen_at is not None and previous["seen_at"] is not None:
            entry["seconds"] = record.seen_at - previous["seen_at"]
        out.append(entry)
        previous = entry
    return out
