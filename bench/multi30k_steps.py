"""Quick A/B of Multi30k training steps: the committed recipe's model, batches and optimizer.

Not a `bench.run` job (`--only multi30k-train` is the measurement against fairseq): one
process that times `--steps` fit steps after `--skip` warm-up steps and prints one JSON line
(median step, target tokens/s, distinct batch shapes, peak RSS). For interleaved A/B runs of
two checkouts, run it from each with `PYTHONPATH=CHECKOUT` (the script's own folder would
otherwise decide which keras_s2s is imported), or of settings with `--set KEY=JSON`:

    python -m bench.multi30k_steps --data-dir DIR [--steps 40] [--skip 10] \
        [--set 'precision="mixed_bfloat16"' bucket_width=8]

Memory grows with the number of distinct batch shapes (bench/README.md, "multi30k-train"), and
40 steps of an epoch meet only about 19 of its 27. `--cycle-shapes` feeds instead one batch of
each shape the first `--epoch-batches` batches hold (every shape of an epoch), in the order they
came, round after round: the first round shows the growth, the later ones whether it stays flat
(`rss_after_round_mib`), and the timed steps are whole rounds when `--steps` and `--skip` are
multiples of the number of shapes.

`--profile` records the steps after `--skip` with the TensorFlow profiler and adds where their
op time goes (`by_type`: % of busy op time per op type; `heaviest_ops`), as `bench.profile_ops`
reports it for the synthetic workload. A trace slows the steps it records, so a profiled run's
step times are not a measurement of speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import keras_s2s  # noqa: F401  (before TensorFlow: runtime settings)
from bench import profile_ops
from keras_s2s import data
from keras_s2s.config import ModelConfig
from keras_s2s.models import build_transformer
from keras_s2s.training import settings
from keras_s2s.training.strategy import set_precision
from keras_s2s.training.trainer import compile_model, training_dataset

CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "training", "configs",
                      "multi30k_en_de.json")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_batch_per_shape(dataset: tf.data.Dataset, batches: int) -> list:
    """The first batch of each distinct shape among the first `batches`, in order (numpy)."""
    chosen = {}
    for x, y in dataset.take(batches):
        shape = (tuple(x["encoder_tokens"].shape), tuple(x["decoder_tokens"].shape))
        if shape not in chosen:
            chosen[shape] = ({key: value.numpy() for key, value in x.items()}, y.numpy())
    return list(chosen.values())


def cycled(batches: list, element_spec) -> tf.data.Dataset:
    """`batches` round after round, forever, with the pipeline's (None-shaped) element spec."""
    def rounds():
        while True:
            yield from batches

    return tf.data.Dataset.from_generator(rounds, output_signature=element_spec)


class ProfileAfter(keras.callbacks.Callback):
    """Traces the train steps from batch `first` to the end of `fit` into `logdir`."""

    def __init__(self, first: int, logdir: str):
        super().__init__()
        self.first, self.logdir, self.tracing = first, logdir, False

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.first:
            tf.profiler.experimental.start(self.logdir)
            self.tracing = True

    def on_train_end(self, logs=None):
        if self.tracing:
            tf.profiler.experimental.stop()


class StepClock(keras.callbacks.Callback):
    """Wall time of every train step (eager dispatch is synchronous on CPU)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)
        self.rss_mib.append(current_rss_mib())

    def on_train_begin(self, logs=None):
        self.rss_mib = []
        self.rss_at_fit_mib = current_rss_mib()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.multi30k_steps", description=__doc__)
    parser.add_argument("--data-dir", required=True, help="Multi30k folder with train.en, train.de")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=10, help="untimed first steps")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="settings over the committed config, e.g. bucket_width=8")
    parser.add_argument("--cycle-shapes", action="store_true",
                        help="one batch of every shape of an epoch, round after round")
    parser.add_argument("--epoch-batches", type=int, default=160,
                        help="with --cycle-shapes: the batches whose shapes are cycled")
    parser.add_argument("--profile", action="store_true",
                        help="trace the steps after --skip and report op time by op type "
                             "(the step times are then slowed by the trace)")
    parser.add_argument("--top", type=int, default=15, help="with --profile: rows per list")
    parser.add_argument("--tokenizer-dir", default=os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "keras_s2s_multi30k_steps_tokenizers"))
    args = parser.parse_args(argv)
    corpus = (os.path.join(args.data_dir, "train.en"), os.path.join(args.data_dir, "train.de"))

    values = settings.load_config_file(CONFIG)
    values.update(train=",".join(corpus), valid="", test="")
    for item in args.set:
        key, value = item.split("=", 1)
        values[key] = json.loads(value)
    model_values, train_config = settings.make_configs(values)
    if not os.path.exists(os.path.join(args.tokenizer_dir, "shared.model")):
        data.train_tokenizers(data.read_corpus(corpus), args.tokenizer_dir, vocabulary_size=8000,
                              shared=True, model_type="bpe")
    tokenizers = data.load_tokenizers(args.tokenizer_dir)
    model_config = ModelConfig(source_vocabulary_size=tokenizers[0].vocabulary_size,
                               target_vocabulary_size=tokenizers[1].vocabulary_size, **model_values)
    policy = set_precision(train_config.precision, tf.distribute.get_strategy())
    dataset = training_dataset(corpus, tokenizers, model_config, train_config, training=True,
                               repeat=True)
    per_round = None
    if args.cycle_shapes:
        batches = one_batch_per_shape(dataset, args.epoch_batches)
        per_round = len(batches)
        dataset = cycled(batches, dataset.element_spec)
    dataset = dataset.take(args.steps)
    # The same seeded batches again, for their target tokens and shapes (not timed).
    labels = [y.numpy() for _, y in dataset]
    shapes = {tuple(x["decoder_tokens"].shape) for x, _ in dataset}
    model = build_transformer(model_config)
    compile_model(model, train_config, steps_per_epoch=150)
    clock = StepClock()
    callbacks = [clock]
    if args.profile:
        logdir = tempfile.mkdtemp(prefix="keras_s2s_multi30k_profile_")
        callbacks.append(ProfileAfter(args.skip, logdir))
    model.fit(dataset, epochs=1, steps_per_epoch=args.steps, callbacks=callbacks, verbose=0)
    seconds = np.array(clock.seconds[args.skip:])
    tokens = np.array([np.count_nonzero(y) for y in labels[args.skip:]])
    result = {
        "policy": policy, "set": args.set, "median_step_s": float(np.median(seconds)),
        "target_tokens_per_s": float(tokens.sum() / seconds.sum()),
        "batch_shapes": len(shapes), "first_step_s": clock.seconds[0],
        "peak_rss_mib": peak_rss_mib(), "rss_at_fit_mib": clock.rss_at_fit_mib,
        "rss_first_step_mib": clock.rss_mib[0], "rss_end_mib": clock.rss_mib[-1],
    }
    if args.profile:
        result["profiled_steps"] = args.steps - args.skip
        result.update(profile_ops.summarize(profile_ops.op_stats(logdir), args.top))
        shutil.rmtree(logdir, ignore_errors=True)
    if per_round:
        result["shapes_per_round"] = per_round
        result["rss_after_round_mib"] = [
            round(clock.rss_mib[end - 1]) for end in range(per_round, args.steps + 1, per_round)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
