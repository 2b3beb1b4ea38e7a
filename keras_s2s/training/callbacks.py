"""Callbacks the trainer adds to `model.fit`."""

from __future__ import annotations

import time

import keras
import sacrebleu
import tensorflow as tf

from keras_s2s.decoding import Greedy
from keras_s2s.translator import Translator


class ValidationBleu(keras.callbacks.Callback):
    """Greedy-decodes a validation sample after each epoch and logs `val_bleu`.

    The score is cased sacreBLEU (13a) on the sample, written into the epoch's
    logs, so the progress bar, TensorBoard, the history in metrics.json,
    EarlyStopping and `training.average --best N --metric val_bleu` all see
    it. Put it before the callbacks that read the logs.

    Args:
        source_tokenizer, target_tokenizer: the run's tokenizers.
        pairs: (source, reference) sentence pairs; a few hundred are enough
            to follow the trend.
        batch_size: sentences decoded together.
    """

    def __init__(self, source_tokenizer, target_tokenizer, pairs, batch_size=64):
        super().__init__()
        if not pairs:
            raise ValueError("ValidationBleu needs at least one (source, reference) pair")
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.sources = [source for source, _ in pairs]
        self.references = [reference for _, reference in pairs]
        self.batch_size = batch_size
        self.translator = None

    def on_train_begin(self, logs=None):
        # Plain tf.function, not XLA: the sample's batches have many shapes
        # and an XLA compile per shape would cost more than the decoding.
        self.translator = Translator(
            self.model,
            self.source_tokenizer,
            self.target_tokenizer,
            strategy=Greedy(),
            jit_compile=False,
        )

    def on_epoch_end(self, epoch, logs=None):
        hypotheses = self.translator.translate(self.sources, batch_size=self.batch_size)
        bleu = sacrebleu.metrics.BLEU().corpus_score(hypotheses, [self.references]).score
        if logs is not None:
            logs["val_bleu"] = bleu


def any_worker(strategy, flag: bool) -> bool:
    """True on every worker when `flag` is True on any of them.

    Under MultiWorkerMirroredStrategy each worker runs its own callbacks, and
    a worker that stops training while another goes on leaves the other
    waiting forever in its next all-reduce. A stopping decision made from
    local state (a clock) is therefore all-reduced first (a SUM of 0/1
    votes: tf.distribute has no MAX reduction). With one worker this is
    `flag` itself.

    Args:
        strategy: the model's strategy (`model.distribute_strategy`), or None.
        flag: this worker's decision.
    """
    extended = getattr(strategy, "extended", None)
    if extended is None or not getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return bool(flag)
    value = tf.constant(1.0 if flag else 0.0)

    @tf.function
    def votes():
        per_replica = strategy.run(lambda: tf.identity(value))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return bool(votes() > 0.0)


class TimeBudget(keras.callbacks.Callback):
    """Ends training before an epoch that would not finish within `minutes`.

    Measured from the start of `fit` (a resumed run starts a new budget); the
    next epoch is expected to take as long as the slowest one so far. Stopping between epochs keeps every
    epoch checkpoint whole, so checkpoint averaging still works. Under
    MultiWorkerMirroredStrategy the workers agree (`any_worker`): when one
    worker's clock says stop, they all stop after the same epoch.
    """

    def __init__(self, minutes):
        super().__init__()
        if not minutes > 0:
            raise ValueError(f"TimeBudget needs minutes > 0; received minutes={minutes!r}")
        self.seconds = 60.0 * minutes
        self.stopped_after_epoch = None

    def on_train_begin(self, logs=None):
        self.started = self.epoch_started = time.perf_counter()
        self.slowest_epoch = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.slowest_epoch = max(self.slowest_epoch, now - self.epoch_started)
        over_budget = now - self.started + self.slowest_epoch > self.seconds
        if any_worker(getattr(self.model, "distribute_strategy", None), over_budget):
            self.model.stop_training = True
            self.stopped_after_epoch = epoch + 1
