"""A tiny `model.fit` used by the distribution tests, in-process or as a worker process.

As a script: `python -m tests.training.distributed_job OUT.npz` trains under the
strategy named by TF_CONFIG (MultiWorkerMirroredStrategy with several
workers) and saves the final weights and losses to OUT.npz, and the weights
of the clipped runs (`clipped_runs`) as clip_*.npz beside it.
"""

import json
import os
import sys

import keras
import numpy as np

from keras_s2s import ModelConfig, build_transformer
from keras_s2s.config import TrainConfig
from keras_s2s.training.update import AggregatedUpdate

CONFIG = ModelConfig(
    source_vocabulary_size=30,
    target_vocabulary_size=30,
    hidden_dim=16,
    num_heads=2,
    intermediate_dim=32,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dropout=0.0,
    max_length=12,
)
TRAIN = TrainConfig(learning_rate=3e-3, warmup_steps=1, label_smoothing=0.1, jit_compile=False)
GLOBAL_BATCH = 8
STEPS = 4
# Well below this model's gradient norm (about 2-4 in these steps): every
# update is clipped.
CLIP_NORM = 0.05


class ClippedSGD(AggregatedUpdate, keras.optimizers.SGD):
    """Plain SGD with the package's update path: its weights compare tightly
    across strategies (Adam turns the round-off of exactly-zero gradients,
    such as attention key biases, into steps of +-lr)."""


def clipped_sgd(accumulation_steps=1):
    return ClippedSGD(learning_rate=1.0, global_clipnorm=CLIP_NORM,
                      accumulation_steps=accumulation_steps)


def batches():
    """Fixed batches whose rows differ in padding, so replicas hold unequal token counts."""
    rng = np.random.default_rng(7)
    n = GLOBAL_BATCH * STEPS
    encoder = np.zeros((n, 10), "int32")
    decoder = np.zeros((n, 9), "int32")
    labels = np.zeros((n, 9), "int32")
    for row in range(n):
        source_length = rng.integers(2, 11)
        target_length = 2 + (row % GLOBAL_BATCH)  # 2..9: the halves differ
        encoder[row, :source_length] = rng.integers(4, 30, size=source_length)
        body = rng.integers(4, 30, size=target_length - 1)
        decoder[row, :target_length] = np.concatenate([[2], body])
        labels[row, :target_length] = np.concatenate([body, [3]])
    return {"encoder_tokens": encoder, "decoder_tokens": decoder}, labels


def dataset(batch_size=GLOBAL_BATCH):
    import tensorflow as tf

    features, labels = batches()
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def build(strategy, train_config=TRAIN, optimizer=None):
    """The seeded model, compiled by `compile_model` in `strategy`'s scope."""
    from keras_s2s.training import compile_model

    keras.utils.set_random_seed(99)
    with strategy.scope():
        model = build_transformer(CONFIG)
        compile_model(model, train_config, jit_compile=False,
                      optimizer=optimizer() if optimizer else None)
    return model


def train(strategy, train_config=TRAIN, optimizer=None, batch_size=GLOBAL_BATCH, steps=STEPS):
    """Trains `steps` batches of `batch_size` from seeded weights; returns (losses, weights).

    Args:
        optimizer: a function making the optimizer (in the scope); by
            default `compile_model` makes it from `train_config`.
    """
    model = build(strategy, train_config, optimizer)
    # One batch per epoch so the history holds every batch's loss.
    history = model.fit(dataset(batch_size).repeat(), epochs=steps, steps_per_epoch=1, verbose=0)
    return np.array(history.history["loss"]), model.get_weights()


# The clipped runs compared across strategies (tests/training/test_update.py):
# name -> train() keyword arguments.
CLIPPED_RUNS = {
    "sgd_1_step": {"optimizer": clipped_sgd, "steps": 1},
    "sgd_4_steps": {"optimizer": clipped_sgd, "steps": STEPS},
    "adamw_4_steps": {"train_config": TrainConfig(
        learning_rate=3e-3, warmup_steps=1, label_smoothing=0.1, jit_compile=False,
        clip_norm=CLIP_NORM)},
}


def main(out_path):
    from keras_s2s.training import make_strategy
    from keras_s2s.training import strategy as strategy_module

    if os.environ.get("KERAS_S2S_WITHOUT_MULTI_WORKER_FIX"):
        # For the canary test: show what stock Keras does.
        strategy_module.apply_multi_worker_fix = lambda: False

    strategy = make_strategy("auto")
    losses, weights = train(strategy)
    # Only worker 0 votes to stop: every worker must hear it (TimeBudget).
    from keras_s2s.training.callbacks import any_worker

    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    stop = any_worker(strategy, task.get("index", 0) == 0)
    np.savez(out_path, losses=losses, stop=stop, **{f"w{i}": w for i, w in enumerate(weights)})
    if os.environ.get("KERAS_S2S_CLIPPED_RUNS"):
        for name, settings in CLIPPED_RUNS.items():
            _, weights = train(strategy, **settings)
            np.savez(os.path.join(os.path.dirname(out_path), f"clip_{name}_{os.path.basename(out_path)}"),
                     **{f"w{i}": w for i, w in enumerate(weights)})
    print(f"worker done: {type(strategy).__name__} replicas={strategy.num_replicas_in_sync}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1])
