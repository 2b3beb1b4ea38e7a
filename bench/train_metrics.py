"""FLOPs, MFU and timed windows of a training run on real data. Pure functions, no TensorFlow.

Model FLOPs of training on one pair (forward + backward = 3 x forward), padding excluded:

    6 * N * t  +  3 * 4 * D * (L_enc * s^2  +  L_dec * t^2  +  L_dec * t * s)

    N   weights of the matmuls every token goes through: per encoder layer
        4 D^2 (query, key, value, output) + 2 D F (feed-forward), per decoder
        layer 8 D^2 (self- and cross-attention) + 2 D F, and D V for
        the output projection (counted when it is tied to the embedding too:
        it is a matmul; an embedding lookup is not). Biases and norms are
        left out (additions, not multiply-adds).
    s   source tokens the encoder sees, t target tokens (labels y1 .. yn END,
        as many as decoder inputs START y1 .. yn): real tokens only.
    attention  Q K^T and A V: 2 matmuls x 2 FLOP per multiply-add x D x
        (query length) x (key length), per layer; decoder self-attention as
        the full t x t square (it is computed densely; the causal mask
        halves the useful part, not the work), cross-attention t x s.

A step's FLOPs are the sum over its pairs; `corpus_flops` sums them over an
epoch's pairs, so FLOPs per target token = corpus FLOPs / corpus target
tokens is the same number for any framework trained on the same pieces.
MFU = target tokens/s x FLOPs per target token / measured fp32 matmul peak.

Shape legend: D hidden dim, F feed-forward dim, V target vocabulary,
L_enc / L_dec encoder / decoder layers.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class TransformerDims:
    """The sizes the FLOP count needs (a ModelConfig's, or fairseq's flags)."""

    hidden_dim: int
    intermediate_dim: int
    num_encoder_layers: int
    num_decoder_layers: int
    target_vocabulary_size: int


def matmul_params(dims: TransformerDims) -> int:
    """N: weights of the matmuls a token goes through (see the module docstring)."""
    d, f = dims.hidden_dim, dims.intermediate_dim
    encoder = dims.num_encoder_layers * (4 * d * d + 2 * d * f)
    decoder = dims.num_decoder_layers * (8 * d * d + 2 * d * f)
    return encoder + decoder + d * dims.target_vocabulary_size


def attention_flops(dims: TransformerDims, source_length: int, target_length: int) -> int:
    """Training FLOPs (3 x forward) of the attention scores and sums of one pair."""
    s, t = source_length, target_length
    per_key_query = 3 * 2 * 2 * dims.hidden_dim  # 3 x (2 matmuls x 2 FLOP per MAC x D)
    return per_key_query * (
        dims.num_encoder_layers * s * s + dims.num_decoder_layers * (t * t + t * s)
    )


@dataclasses.dataclass(frozen=True)
class CorpusFlops:
    """Model FLOPs of one pass over a corpus (see `corpus_flops`)."""

    pairs: int
    source_tokens: int
    target_tokens: int
    matmul_flops: int
    attention_flops: int

    @property
    def total(self) -> int:
        return self.matmul_flops + self.attention_flops

    @property
    def per_target_token(self) -> float:
        return self.total / self.target_tokens

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total": self.total,
                "per_target_token": self.per_target_token}


def corpus_flops(dims: TransformerDims, lengths: Iterable[tuple[int, int]]) -> CorpusFlops:
    """Training FLOPs of one pass over pairs of (source tokens, target tokens)."""
    n = matmul_params(dims)
    pairs = sources = targets = attention = 0
    for source_length, target_length in lengths:
        pairs += 1
        sources += source_length
        targets += target_length
        attention += attention_flops(dims, source_length, target_length)
    if not targets:
        raise ValueError("`lengths` holds no target token: no FLOPs per token to count")
    return CorpusFlops(pairs, sources, targets, 6 * n * targets, attention)


@dataclasses.dataclass(frozen=True)
class Window:
    """Consecutive timed training steps."""

    first_step: int  # global step index (0-based) of its first step
    steps: int
    seconds: float
    tokens: int  # non-pad target tokens
    rss_mib_end: float | None = None  # resident memory after its last step
    cpu_seconds: float | None = None  # CPU time the process(es) used in it, all threads

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def split_windows(step_begin, step_end, step_tokens, start: int, window_steps: int,
                  count: int, step_rss_mib=None, step_cpu=None) -> list[Window]:
    """Up to `count` windows of `window_steps` steps from global step `start` on.

    Args:
        step_begin, step_end: per global step, the clock when it began and ended.
        step_tokens: per global step, its non-pad target tokens.
        start: first timed step (the one after the warm-up).
        window_steps, count: the windows' size and how many are wanted; only
            complete windows are returned.

    A window's time runs from its first step's begin to its last step's end,
    so that whatever runs between steps inside it (an epoch's end, the
    callbacks) is counted, and nothing before it.
    """
    if window_steps < 1 or count < 1:
        raise ValueError("`window_steps` and `count` must be positive; received "
                         f"window_steps={window_steps}, count={count}")
    if not len(step_begin) == len(step_end) == len(step_tokens):
        raise ValueError("step_begin, step_end and step_tokens must have one entry per step; "
                         f"received {len(step_begin)}, {len(step_end)}, {len(step_tokens)}")
    windows = []
    for index in range(count):
        first = start + index * window_steps
        last = first + window_steps - 1
        if last >= len(step_end):
            break
        windows.append(Window(first, window_steps, step_end[last] - step_begin[first],
                              int(sum(step_tokens[first:last + 1])),
                              step_rss_mib[last] if step_rss_mib else None,
                              step_cpu[last][1] - step_cpu[first][0] if step_cpu else None))
    return windows


def summarize(windows: list[Window], batches_per_epoch: int | None,
              flops_per_token: float | None, peak_gflops: float | None) -> dict:
    """Median tokens/s over the windows, seconds per epoch and MFU.

    Seconds per epoch = batches per epoch x timed seconds / timed steps (the
    warm-up's tracing is left out; callbacks between steps are in).
    """
    if not windows:
        return {"windows": [], "tokens_per_s_median": None}
    rates = [w.tokens_per_s for w in windows]
    seconds, steps = sum(w.seconds for w in windows), sum(w.steps for w in windows)
    median = statistics.median(rates)
    out = {
        "windows": [{**dataclasses.asdict(w), "tokens_per_s": w.tokens_per_s} for w in windows],
        "tokens_per_s_median": median,
        "tokens_per_s_min_max": [min(rates), max(rates)],
        "step_seconds_mean": seconds / steps,
        "tokens_per_step_mean": sum(w.tokens for w in windows) / steps,
        "seconds_per_epoch": batches_per_epoch * seconds / steps if batches_per_epoch else None,
    }
    if all(w.cpu_seconds for w in windows):
        # Less sensitive than wall time to other processes on a shared machine.
        out["tokens_per_cpu_s_median"] = statistics.median(
            w.tokens / w.cpu_seconds for w in windows)
    if flops_per_token:
        out["model_gflops_per_s"] = median * flops_per_token / 1e9
        out["mfu"] = out["model_gflops_per_s"] / peak_gflops if peak_gflops else None
    return out


def rss_growth_by_shape(step_shapes, step_rss_mib, rss_mib_start: float) -> dict:
    """RSS added by steps with a batch shape not seen before, and by the others.

    Args:
        step_shapes: per step, its batch shape (any hashable).
        step_rss_mib: per step, the RSS after it.
        rss_mib_start: the RSS before the first step.
    """
    seen, previous = set(), rss_mib_start
    out = {"new_shape_steps": 0, "new_shape_mib": 0.0, "seen_shape_steps": 0,
           "seen_shape_mib": 0.0}
    for shape, rss in zip(step_shapes, step_rss_mib):
        kind = "seen_shape" if shape in seen else "new_shape"
        seen.add(shape)
        out[f"{kind}_steps"] += 1
        out[f"{kind}_mib"] += rss - previous
        previous = rss
    return out
