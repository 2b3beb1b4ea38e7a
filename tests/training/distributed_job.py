"""A tiny `model.fit` used by the distribution tests, in-process or as a worker process.

As a script: `python -m tests.training.distributed_job OUT.npz` trains under the
strategy named by TF_CONFIG (MultiWorkerMirroredStrategy with several
workers) and saves the final weights and losses to OUT.npz.
"""

import json
import os
import sys

import numpy as np

from keras_s2s import ModelConfig, build_transformer
from keras_s2s.config import TrainConfig

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


def dataset():
    import tensorflow as tf

    features, labels = batches()
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(GLOBAL_BATCH)


def train(strategy):
    """Trains STEPS steps from seeded weights; returns (losses, weights)."""
    import keras

    from keras_s2s.training import compile_model

    keras.utils.set_random_seed(99)
    with strategy.scope():
        model = build_transformer(CONFIG)
        compile_model(model, TRAIN, jit_compile=False)
    # One step per epoch so the history holds every step's loss.
    history = model.fit(dataset().repeat(), epochs=STEPS, steps_per_epoch=1, verbose=0)
    return np.array(history.history["loss"]), model.get_weights()


def main(out_path):
    from keras_s2s.training import strategy as strategy_module
    from keras_s2s.training import make_strategy

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
    print(f"worker done: {type(strategy).__name__} replicas={strategy.num_replicas_in_sync}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main(sys.argv[1])
