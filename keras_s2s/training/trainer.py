"""`train(...)`: parallel text to a trained run directory with `model.fit`.

The run directory's files (config, tokenizers, checkpoints, backup, logs,
model, metrics, history) are listed, with what writes them, in
`keras_s2s.run_dir`.
"""

from __future__ import annotations

import logging
import os
import time

import keras
import tensorflow as tf

from keras_s2s import data
from keras_s2s.config import ModelConfig, TrainConfig
from keras_s2s.data.pipeline import count_batches
from keras_s2s.losses import MaskedCrossEntropy, masked_accuracy
from keras_s2s.models import TransformerParts, build_transformer, load_run_model
from keras_s2s.run_dir import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RunDir,
)
from keras_s2s.training.callbacks import TimeBudget, ValidationBleu
from keras_s2s.training.schedules import WarmupCosine, WarmupInverseSqrt
from keras_s2s.training.strategy import make_strategy, set_precision
from keras_s2s.training.update import AdamW

log = logging.getLogger(__name__)


def resolve_corpus(spec: str, split: str, run_dir: str, train_config: TrainConfig):
    """A corpus setting as `read_corpus` takes it.

    "builtin" is the generated `split` file in the run's data folder (written
    once), "a.en,a.de" two line-aligned files, anything else a TSV file.
    """
    if spec == "builtin":
        run = RunDir(run_dir)
        path = run.builtin_corpus(split)
        if not os.path.exists(path):
            data.write_builtin_corpus(
                run.data_dir, seed=train_config.builtin_seed, train=train_config.builtin_train_size
            )
        return path
    if "," in spec:
        source, target = spec.split(",", 1)
        return (source, target)
    return spec


def make_optimizer(train_config: TrainConfig, steps_per_epoch: int | None):
    """AdamW with warm-up, global-norm clipping and accumulation (update.py).

    `warmup_steps` and `total_steps` count updates; `steps_per_epoch` counts
    batches, so an epoch makes `steps_per_epoch / accumulation_steps` updates.
    """
    warmup = {
        "warmup_steps": train_config.warmup_steps,
        "warmup_init_learning_rate": train_config.warmup_init_learning_rate,
    }
    if train_config.schedule == "cosine":
        total = train_config.total_steps or (
            train_config.epochs * (steps_per_epoch or 0) // train_config.accumulation_steps
        )
        if not total:
            raise ValueError(
                "The cosine schedule needs a horizon: set `total_steps` or "
                "`steps_per_epoch`; received total_steps=0, steps_per_epoch=0"
            )
        schedule = WarmupCosine(train_config.learning_rate, total_steps=total, **warmup)
    else:
        schedule = WarmupInverseSqrt(train_config.learning_rate, **warmup)
    optimizer = AdamW(
        learning_rate=schedule,
        weight_decay=train_config.weight_decay,
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-9,
        global_clipnorm=train_config.clip_norm or None,
        accumulation_steps=train_config.accumulation_steps,
    )
    # Decay the matrices only: biases, norm scales and offsets are left alone.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_model(model, train_config: TrainConfig, steps_per_epoch=None, jit_compile=None,
                  optimizer=None):
    """Compiles with the masked loss, token accuracy and `make_optimizer`'s optimizer.

    `optimizer` replaces the latter; it should mix in update.AggregatedUpdate
    (clipping after the all-reduce; token-weighted accumulation).
    """
    optimizer = optimizer or make_optimizer(train_config, steps_per_epoch)
    loss = MaskedCrossEntropy(label_smoothing=train_config.label_smoothing)
    # Accumulation weights each batch by the token count the loss divides by.
    loss.batch_tokens = getattr(optimizer, "batch_tokens", None)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[masked_accuracy()],
        jit_compile=train_config.jit_compile if jit_compile is None else jit_compile,
    )
    return model


def freeze(model, *, embeddings=False, encoder=False):
    """Fine-tuning: make the embeddings and/or the encoder non-trainable."""
    parts = TransformerParts.from_model(model)
    frozen = []
    if embeddings:
        frozen += [parts.source_embedding, parts.target_embedding]
    if encoder:
        frozen += [parts.source_embedding, *parts.encoder_layers]
        frozen += [parts.encoder_norm] if parts.encoder_norm is not None else []
    # With tie_embeddings="all" the source and target embedding are one layer.
    frozen = list({id(layer): layer for layer in frozen}.values())
    for layer in frozen:
        layer.trainable = False
    return [layer.name for layer in frozen]


def train_bucket_boundaries(train_config: TrainConfig, max_length: int, jit_compile: bool) -> list[int]:
    """Padded lengths of the training batches (`--bucket_width`, 0 = auto).

    Without XLA a new batch shape costs no compilation, so every length gets
    its own bucket (93% real tokens on Multi30k against 76% with width 8);
    XLA compiles once per shape, so it gets a few coarse buckets. (Many
    shapes once cost memory too, about 170 MiB a shape on Multi30k, until the
    tied output projection stopped building a (B, D, V) gradient: trap 15 in
    docs/traps.md.)
    """
    return data.default_bucket_boundaries(max_length, train_bucket_width(train_config, jit_compile))


def train_bucket_width(train_config: TrainConfig, jit_compile: bool) -> int:
    """The bucket width `train_bucket_boundaries` uses: `--bucket_width`, or 1 / 8 (XLA) for 0."""
    return train_config.bucket_width or (8 if jit_compile else 1)


def training_dataset(
    corpus, tokenizers, model_config: ModelConfig, train_config: TrainConfig, *,
    training: bool, repeat: bool, jit_compile: bool = False, replicas: int = 1,
):
    """The batches `train` feeds to `fit` (training=True) or validates on.

    Tokenized once per run and bucketed into `train_bucket_boundaries`, one
    padded length per bucket for both sides, and (with repeat) only full
    batches: a small, fixed set of batch shapes, each traced (and with XLA
    compiled) once, instead of one per (source, target, batch) triple
    (KNOWN_TRAPS 9 and 13).
    """
    read_options = (
        {"max_words": train_config.max_source_words} if data.corpus.is_corpus_spec(corpus) else {}
    )
    return data.make_dataset(
        data.pairs_dataset(corpus, **read_options),
        *tokenizers,
        max_length=model_config.max_length,
        batch_tokens=train_config.batch_tokens,
        bucket_boundaries=train_bucket_boundaries(train_config, model_config.max_length, jit_compile),
        pad_sides_together=True,
        batch_size_multiple=max(8, replicas),
        shuffle=training,
        shuffle_buffer=train_config.shuffle_buffer,
        seed=train_config.seed,
        repeat=repeat,
        cache=True,
    )


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


def _worker_dir(run: RunDir, strategy) -> RunDir:
    """Where this process writes checkpoints: non-chief workers get a scratch folder."""
    if _is_chief(strategy):
        return run
    resolver = strategy.cluster_resolver
    return run.worker(resolver.task_type, resolver.task_id)


def prepare_tokenizers(run_dir: str, train_path: str, train_config: TrainConfig, init_from=None):
    """Loads the run's tokenizers, copies them from `init_from`, or trains new ones."""
    if init_from:
        RunDir(init_from).copy_tokenizers(run_dir)
    if RunDir(run_dir).has_tokenizers():
        return data.load_tokenizers(run_dir)
    log.info("training tokenizers on %s", train_path)
    return data.train_tokenizers(
        data.read_corpus(train_path, max_words=train_config.max_source_words),
        run_dir,
        vocabulary_size=train_config.vocabulary_size,
        shared=train_config.shared_vocabulary,
        model_type=train_config.tokenizer_type,
    )


def load_init_model(init_from: str, model_config: ModelConfig):
    """The trained model of `init_from`, checked against its config."""
    if not RunDir(init_from).has(MODEL_FILE):
        raise ValueError(f"--init-from {init_from!r}: no {MODEL_FILE} in that run directory")
    return load_run_model(init_from)


def train(
    run_dir: str,
    train_config: TrainConfig,
    model_settings: dict | None = None,
    init_from: str | None = None,
    strategy=None,
):
    """Trains a model into `run_dir` and returns `(model, history_dict)`.

    Restarting the same call after an interruption resumes from the last
    backup in `run_dir` (weights, optimizer state and epoch).

    Args:
        run_dir: the run directory (created if missing).
        train_config: data, optimisation and execution settings.
        model_settings: ModelConfig fields other than the vocabulary sizes.
            Must be empty with `init_from`: the architecture then comes from
            that run's config.json.
        init_from: a trained run directory to fine-tune from.
        strategy: a tf.distribute strategy; by default made from
            `train_config.strategy` (create it first in multi-worker jobs).
    """
    model_settings = dict(model_settings or {})
    if init_from and model_settings:
        raise ValueError(
            f"--init-from {init_from!r} takes the architecture from that run's "
            f"{CONFIG_FILE}; remove the architecture flags {sorted(model_settings)}"
        )
    strategy = strategy or make_strategy(train_config.strategy, train_config.tpu)
    policy = set_precision(train_config.precision, strategy)
    keras.utils.set_random_seed(train_config.seed)
    run = RunDir(run_dir)
    os.makedirs(run.path, exist_ok=True)
    out = _worker_dir(run, strategy)
    os.makedirs(out.path, exist_ok=True)

    train_path = resolve_corpus(train_config.train, "train", run_dir, train_config)
    valid_path = (
        resolve_corpus(train_config.valid, "valid", run_dir, train_config)
        if train_config.valid
        else None
    )
    source_tokenizer, target_tokenizer = prepare_tokenizers(
        run_dir, train_path, train_config, init_from
    )
    vocabulary_sizes = (source_tokenizer.vocabulary_size, target_tokenizer.vocabulary_size)

    if init_from:
        model_config = RunDir(init_from).read_model_config()
    elif run.has(CONFIG_FILE):
        model_config = run.read_model_config()  # a resumed run keeps its architecture
    else:
        model_config = ModelConfig(
            source_vocabulary_size=vocabulary_sizes[0],
            target_vocabulary_size=vocabulary_sizes[1],
            **model_settings,
        )
    if vocabulary_sizes != (
        model_config.source_vocabulary_size,
        model_config.target_vocabulary_size,
    ):
        raise ValueError(
            "Vocabulary mismatch: the tokenizers have (source, target) sizes "
            f"{vocabulary_sizes} but {init_from or run.file(CONFIG_FILE)} "
            "describes a model with "
            f"({model_config.source_vocabulary_size}, {model_config.target_vocabulary_size}); "
            "fine-tuning must keep the run's own tokenizers"
        )
    if _is_chief(strategy):
        run.write_model_config(model_config)
        run.write_train_config(train_config)
    log.info("model: %s", model_config.to_json())

    # XLA inside a multi-replica step on CPU/GPU would have to compile the
    # cross-replica all-reduce; keep XLA to single-replica and TPU runs.
    jit = train_config.jit_compile and (
        strategy.num_replicas_in_sync == 1
        or isinstance(strategy, tf.distribute.TPUStrategy)
    )

    def dataset(path, training, repeat):
        return training_dataset(
            path, (source_tokenizer, target_tokenizer), model_config, train_config,
            training=training, repeat=repeat, jit_compile=jit,
            replicas=strategy.num_replicas_in_sync,
        )

    steps_per_epoch = train_config.steps_per_epoch or count_batches(dataset(train_path, True, False))
    train_dataset = dataset(train_path, training=True, repeat=True)
    valid_dataset = validation_steps = None
    if valid_path:
        # Repeated too, for the same bounded shapes; `validation_steps` batches
        # cover the validation set (a few pairs of the last batch come twice).
        validation_steps = count_batches(dataset(valid_path, False, False))
        valid_dataset = dataset(valid_path, training=False, repeat=True)
    log.info("%d steps per epoch, %s validation steps", steps_per_epoch, validation_steps)

    with strategy.scope():
        model = build_transformer(model_config)
        if init_from:
            model.set_weights(load_init_model(init_from, model_config).get_weights())
            frozen = freeze(
                model,
                embeddings=train_config.freeze_embeddings,
                encoder=train_config.freeze_encoder,
            )
            log.info("fine-tuning from %s; frozen: %s", init_from, frozen or "nothing")
        compile_model(model, train_config, steps_per_epoch, jit_compile=jit)

    callbacks = []
    if valid_path and train_config.validation_bleu_sentences:
        # First: the callbacks below read the val_bleu it adds to the logs.
        # Every worker decodes, so early stopping on val_bleu stops them all.
        sample = []
        for pair in data.read_corpus(valid_path, max_words=train_config.max_source_words):
            if len(sample) == train_config.validation_bleu_sentences:
                break
            sample.append(pair)
        callbacks.append(ValidationBleu(source_tokenizer, target_tokenizer, sample))
    if train_config.time_budget_minutes:
        callbacks.append(TimeBudget(train_config.time_budget_minutes))
    if train_config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=train_config.early_stopping_metric,
                mode="max" if train_config.early_stopping_metric == "val_bleu" else "min",
                patience=train_config.early_stopping_patience,
            )
        )
    callbacks += [
        # double_checkpoint keeps the previous backup: a kill during a
        # backup write leaves a corrupt file, and the restart falls back.
        keras.callbacks.BackupAndRestore(
            out.backup_dir,
            save_freq=train_config.backup_every_steps,
            double_checkpoint=True,
        ),
        keras.callbacks.ModelCheckpoint(
            out.checkpoint_pattern,
            save_weights_only=True,
        ),
        keras.callbacks.TerminateOnNaN(),
    ]
    if _is_chief(strategy):
        callbacks += [
            keras.callbacks.TensorBoard(run.logs_dir),
            keras.callbacks.CSVLogger(run.file(HISTORY_FILE), append=True),
        ]
    os.makedirs(out.checkpoints_dir, exist_ok=True)

    started = time.perf_counter()
    history = model.fit(
        train_dataset,
        epochs=train_config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=valid_dataset,
        validation_steps=validation_steps,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, within length buckets
        verbose=train_config.verbose,
    )
    seconds = time.perf_counter() - started
    history_values = {k: [float(v) for v in values] for k, values in history.history.items()}
    if _is_chief(strategy):
        model.save(run.file(MODEL_FILE))
        run.write_json(
            METRICS_FILE,
            {
                "history": history_values,
                "train_seconds": seconds,
                "strategy": type(strategy).__name__,
                "replicas": strategy.num_replicas_in_sync,
                "precision": policy,
                "parameters": model.count_params(),
            },
        )
    return model, history_values
