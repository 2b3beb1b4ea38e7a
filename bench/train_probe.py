"""Measures a `model.fit` that someone else calls: per-step clock, tokens, batch shapes, traces.

`instrument_fit(probe)` wraps `keras.Model.fit` for the duration of a
`with` block, so that a function which builds and fits its own model (such
as `keras_s2s.training.train`) is measured without a change to it:

* the probe is appended to the fit's callbacks (clock at each step's begin
  and end, RSS at each epoch's end, and a stop once the timed steps are done);
* the model's `train_step` is wrapped to write, into two variables, the
  step's non-pad label tokens and the shapes of its input tensors (a few
  scalar ops in the traced step, read after each step);
* `traced_functions(model.train_function)` counts how often each
  `tf.function` inside Keras's train function was traced.

Nothing else of the fit changes: same dataset, same step, same callbacks.
"""

from __future__ import annotations

import contextlib
import resource
import time

import keras
import numpy as np
import tensorflow as tf

MAX_SHAPE_VALUES = 32


def rss_mib() -> float:
    """This process's resident set size now (VmRSS), MiB."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds() -> float:
    """CPU time of this process so far, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def traced_functions(function, depth: int = 6) -> dict[str, int]:
    """{name: tracing count} of the `tf.function`s reachable from `function`.

    Keras's TensorFlow trainer makes `model.train_function` a plain Python
    function whose closure holds a `tf.function` over the iterator, which
    calls another `tf.function` over one batch; both are found by walking
    closures, `__wrapped__` and `python_function`.
    """
    found: dict[str, int] = {}
    seen: set[int] = set()

    def visit(obj, level):
        if obj is None or id(obj) in seen or level > depth:
            return
        seen.add(id(obj))
        if hasattr(obj, "experimental_get_tracing_count"):
            name = getattr(obj, "__name__", type(obj).__name__)
            found[name] = found.get(name, 0) + obj.experimental_get_tracing_count()
            visit(getattr(obj, "python_function", None), level + 1)
            return
        visit(getattr(obj, "__wrapped__", None), level + 1)
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value) and not isinstance(value, (type, keras.layers.Layer)):
                visit(value, level + 1)

    visit(function, 0)
    return found


class StepProbe(keras.callbacks.Callback):
    """Clock, tokens and shapes of every step; stops the fit after the timed steps.

    Args:
        warmup_epochs: epochs run before timing starts (tracing, caches).
        timed_steps: steps run after the warm-up; then `stop_training` is set.
        pad_id: label id that is not a token.
    """

    def __init__(self, warmup_epochs: int, timed_steps: int, pad_id: int = 0):
        super().__init__()
        self.warmup_epochs = warmup_epochs
        self.timed_steps = timed_steps
        self.pad_id = pad_id
        self.step_begin: list[float] = []
        self.step_end: list[float] = []
        self.step_tokens: list[int] = []
        self.step_shapes: list[tuple[int, ...]] = []
        self.step_rss_mib: list[float] = []  # RSS after each step
        self.step_cpu: list[tuple[float, float]] = []  # process CPU s at its begin, end
        self.rss_mib_fit_start: float | None = None
        self.epochs: list[dict] = []
        # First global step after the warm-up.
        self.timed_start: int | None = 0 if warmup_epochs == 0 else None
        self.fit_started: float | None = None
        self.steps_per_epoch: int | None = None  # as the fit was called
        self.model_ref = None
        self._tokens = self._shape = None
        self._epoch_begin = 0.0

    # -- wiring ---------------------------------------------------------------
    def attach(self, model) -> None:
        """Wraps `model.train_step` to record tokens and shapes (before fit traces it)."""
        if self.model_ref is not None:
            raise RuntimeError("StepProbe measures one fit; this one was already attached")
        self.model_ref = model
        with model.distribute_strategy.scope():
            self._tokens = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="probe_tokens")
            # The dimensions of all input tensors, zero-padded to a fixed size.
            self._shape = tf.Variable(tf.zeros([MAX_SHAPE_VALUES], tf.int64),
                                      trainable=False, name="probe_shape")
        original = model.train_step
        probe = self

        def train_step(data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            probe._tokens.assign(tf.math.count_nonzero(y != probe.pad_id, dtype=tf.int64))
            shape = tf.concat([tf.shape(t, out_type=tf.int64)
                               for t in tf.nest.flatten((x, y))], axis=0)
            size = shape.shape[0]  # the sum of the ranks, known when tracing
            if size > MAX_SHAPE_VALUES:
                raise ValueError(f"the batch has {size} dimensions in all; StepProbe "
                                 f"records at most MAX_SHAPE_VALUES={MAX_SHAPE_VALUES}")
            probe._shape.assign(tf.pad(shape, [[0, MAX_SHAPE_VALUES - size]]))
            return original(data)

        model.train_step = train_step

    # -- callback -------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.fit_started = time.perf_counter()
        self.rss_mib_fit_start = rss_mib()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_begin = time.perf_counter()
        self._epoch_first_step = len(self.step_end)

    def on_train_batch_begin(self, batch, logs=None):
        self._cpu_begin = cpu_seconds()
        self.step_begin.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        self.step_end.append(time.perf_counter())
        self.step_cpu.append((self._cpu_begin, cpu_seconds()))
        self.step_tokens.append(int(self._tokens.numpy()))
        self.step_shapes.append(tuple(int(v) for v in np.trim_zeros(self._shape.numpy(), "b")))
        self.step_rss_mib.append(rss_mib())
        done = len(self.step_end)
        if self.timed_start is not None and done >= self.timed_start + self.timed_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        steps = len(self.step_end) - self._epoch_first_step
        self.epochs.append({
            "epoch": epoch,
            "steps": steps,
            "seconds": now - self._epoch_begin,
            "tokens": sum(self.step_tokens[self._epoch_first_step:]),
            "distinct_shapes_so_far": len(set(self.step_shapes)),
            "train_function_traces": traced_functions(self.model.train_function),
            "rss_mib_end": rss_mib(),
            "peak_rss_mib_end": peak_rss_mib(),
        })
        if epoch + 1 == self.warmup_epochs:
            self.timed_start = len(self.step_end)
            if not self.timed_steps:
                self.model.stop_training = True


@contextlib.contextmanager
def instrument_fit(probe: StepProbe):
    """Within the block, every `keras.Model.fit` call is measured by `probe`."""
    original_fit = keras.Model.fit

    def fit(self, *args, callbacks=None, **kwargs):
        probe.attach(self)
        probe.steps_per_epoch = kwargs.get("steps_per_epoch")
        return original_fit(self, *args, callbacks=[*(callbacks or []), probe], **kwargs)

    keras.Model.fit = fit
    try:
        yield probe
    finally:
        keras.Model.fit = original_fit
