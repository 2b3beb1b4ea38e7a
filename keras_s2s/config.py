"""Architecture configuration: a frozen, validated, JSON-serialisable dataclass.

The architecture of a run lives in `config.json` beside every checkpoint and
export; on load it comes from that file, never from command-line flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from keras_s2s.checks import (
    check_bool,
    check_choice,
    check_non_negative_int,
    check_non_negative_number,
    check_number_in,
    check_positive_int,
    check_positive_number,
)

# The choices of the architecture options, defined here once; the layers that
# take them (residual.py, positional_embedding.py) import them from here.
NORM_POSITIONS = ("pre", "post")
POSITION_KINDS = ("sinusoidal", "learned")
TIE_EMBEDDINGS = ("none", "target", "all")
# Column order of the sinusoidal table: "interleaved" puts sin and cos of one
# frequency side by side (sin, cos, sin, cos, ...), as in "Attention is all
# you need"; "halves" puts every sin first, then every cos (Marian, fairseq).
SINUSOIDAL_LAYOUTS = ("interleaved", "halves")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Hyper-parameters of an encoder-decoder Transformer.

    Args:
        source_vocabulary_size: number of source token ids (id 0 is padding).
        target_vocabulary_size: number of target token ids (id 0 is padding).
        hidden_dim: model width D.
        num_heads: attention heads H; must divide `hidden_dim`.
        intermediate_dim: width of the feed-forward hidden layer.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth.
        dropout: dropout rate on embeddings and every residual branch.
        max_length: longest source or target sequence, in tokens.
        positions: "sinusoidal" (fixed) or "learned" position embeddings.
        norm_position: "pre" (LayerNorm before each sublayer, more stable)
            or "post" (after the residual add, as in the original paper).
        layer_norm_epsilon: epsilon of every LayerNormalization.
        tie_embeddings: "none"; "target" (the output projection is the
            transposed target embedding, no bias); or "all" (one embedding
            matrix for source tokens, target tokens and the output
            projection; needs a shared vocabulary, so equal sizes). Tying
            saves V x D parameters per tied matrix and regularises small
            corpora.
        activation: activation of the feed-forward hidden layer, a Keras
            activation name ("relu", "gelu", "silu" = swish, ...).
        scale_embeddings: multiply token embeddings by sqrt(hidden_dim)
            before adding positions (the paper, Marian); False adds them
            unscaled.
        sinusoidal_layout: column order of the sinusoidal positions:
            "interleaved" (sin, cos, sin, cos, ..., the paper) or "halves"
            (all sines, then all cosines: Marian, fairseq).
        final_logits_bias: add a learned bias per vocabulary entry to the
            logits of a tied output projection (Marian's
            `final_logits_bias`); needs `tie_embeddings` "target" or "all"
            (the untied projection has a bias already).
    """

    source_vocabulary_size: int
    target_vocabulary_size: int
    hidden_dim: int = 256
    num_heads: int = 4
    intermediate_dim: int = 1024
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dropout: float = 0.1
    max_length: int = 128
    positions: str = "sinusoidal"
    norm_position: str = "pre"
    layer_norm_epsilon: float = 1e-6
    tie_embeddings: str = "none"
    activation: str = "relu"
    scale_embeddings: bool = True
    sinusoidal_layout: str = "interleaved"
    final_logits_bias: bool = False

    def __post_init__(self) -> None:
        for name in (
            "source_vocabulary_size",
            "target_vocabulary_size",
            "hidden_dim",
            "num_heads",
            "intermediate_dim",
            "num_encoder_layers",
            "num_decoder_layers",
            "max_length",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("source_vocabulary_size", "target_vocabulary_size"):
            if getattr(self, name) < 2:
                raise ValueError(
                    f"`{name}` must be at least 2 (id 0 is reserved for "
                    f"padding); received {name}={getattr(self, name)!r}"
                )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                "`num_heads` must divide `hidden_dim`; received "
                f"hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        check_number_in("dropout", self.dropout, "[0, 1)")
        if not isinstance(self.layer_norm_epsilon, float) or not (
            self.layer_norm_epsilon > 0
        ):
            raise ValueError(
                "`layer_norm_epsilon` must be a positive float; received "
                f"layer_norm_epsilon={self.layer_norm_epsilon!r}"
            )
        check_choice("positions", self.positions, POSITION_KINDS)
        check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        check_choice("tie_embeddings", self.tie_embeddings, TIE_EMBEDDINGS)
        check_choice("sinusoidal_layout", self.sinusoidal_layout, SINUSOIDAL_LAYOUTS)
        _check_activation(self.activation)
        for name in ("scale_embeddings", "final_logits_bias"):
            check_bool(name, getattr(self, name))
        if self.final_logits_bias and self.tie_embeddings == "none":
            raise ValueError(
                "`final_logits_bias` is for tied output projections: the untied one "
                "has a bias already; received final_logits_bias=True, "
                'tie_embeddings="none". Set tie_embeddings to "target" or "all"'
            )
        if self.tie_embeddings == "all" and (
            self.source_vocabulary_size != self.target_vocabulary_size
        ):
            raise ValueError(
                '`tie_embeddings="all"` needs one vocabulary for both sides '
                "(train with shared_vocabulary); received source_vocabulary_size="
                f"{self.source_vocabulary_size}, target_vocabulary_size="
                f"{self.target_vocabulary_size}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """Builds a config, rejecting keys that are not fields by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown ModelConfig field(s) {unknown}; expected a subset of "
                f"{sorted(known)}"
            )
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelConfig":
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{error.lineno}: not valid JSON ({error.msg})"
                ) from None
        return cls.from_dict(values)


def _check_activation(value: Any) -> None:
    import keras  # here: reading or writing a config needs no Keras otherwise

    try:
        valid = isinstance(value, str) and keras.activations.get(value) is not None
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ValueError(
            "`activation` must name a Keras activation such as 'relu', 'gelu' or "
            f"'silu'; received activation={value!r}"
        )


def check_load_precision(precision: str | None) -> None:
    """`precision` for reloading a trained model: None (as trained) or a LOAD_PRECISIONS policy."""
    if precision is not None and precision not in LOAD_PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {list(LOAD_PRECISIONS)} or None (as trained); "
            f"received precision={precision!r}"
        )


def _field(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


SCHEDULES = ("inverse_sqrt", "cosine")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Policies a trained model can be reloaded under (evaluate/translate/export --precision).
LOAD_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
TOKENIZER_TYPES = ("unigram", "bpe")
EARLY_STOPPING_METRICS = ("val_loss", "val_bleu")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Data, tokenizer and optimisation settings of a training run.

    Every field is also a `--name value` flag of `training/train.py`; the
    `help` metadata is what `--help` prints.
    """

    # Data. A corpus is "builtin", a TSV file (source<TAB>target), or two
    # aligned files "train.en,train.de".
    train: str = _field("builtin", 'training corpus: "builtin", a .tsv file, or "SRC_FILE,TGT_FILE"')
    valid: str = _field("builtin", 'validation corpus, same forms as --train ("" for none)')
    test: str = _field("builtin", 'test corpus for evaluation, same forms as --train ("" for none)')
    builtin_train_size: int = _field(20000, "pairs in the generated built-in training split")
    builtin_seed: int = _field(17, "seed of the built-in corpus generator")
    max_source_words: int = _field(200, "pairs with more whitespace words on a side are skipped (and counted)")
    # Tokenizers.
    vocabulary_size: int = _field(8000, "SentencePiece vocabulary size (per side unless shared)")
    shared_vocabulary: bool = _field(False, "one vocabulary for source and target")
    tokenizer_type: str = _field("unigram", f"SentencePiece model type: {' or '.join(TOKENIZER_TYPES)}")
    # Batching.
    batch_tokens: int = _field(4096, "token budget of one global batch (source or target side, padded)")
    bucket_width: int = _field(0, "padded lengths are multiples of this many tokens; 0 = auto: 1 without XLA (least padding, many shapes), 8 with XLA (few shapes to compile)")
    shuffle_buffer: int = _field(20000, "examples in the shuffle buffer")
    # Optimisation.
    epochs: int = _field(10, "number of epochs")
    steps_per_epoch: int = _field(0, "batches per epoch; 0 = one pass over the training data (counted at start)")
    learning_rate: float = _field(1e-3, "peak learning rate (after warm-up)")
    schedule: str = _field("inverse_sqrt", f"learning-rate schedule after warm-up: {' or '.join(SCHEDULES)}")
    warmup_steps: int = _field(1000, "linear warm-up updates")
    warmup_init_learning_rate: float = _field(0.0, "learning rate the warm-up starts from (fairseq's --warmup-init-lr); 0 = from zero")
    total_steps: int = _field(0, "decay horizon of the cosine schedule, in updates; 0 = epochs * steps_per_epoch / accumulation_steps")
    weight_decay: float = _field(0.01, "AdamW decoupled weight decay (not on biases and norms)")
    clip_norm: float = _field(1.0, "global gradient-norm clipping of each update's aggregated gradient; 0 = off")
    accumulation_steps: int = _field(1, "batches per optimizer update (token-weighted gradient accumulation); the schedule counts updates")
    label_smoothing: float = _field(0.1, "label smoothing of the cross-entropy")
    # Fine-tuning.
    freeze_embeddings: bool = _field(False, "with --init-from: keep the embeddings fixed")
    freeze_encoder: bool = _field(False, "with --init-from: keep the encoder (and source embedding) fixed")
    # Execution.
    strategy: str = _field("auto", f"tf.distribute strategy: {', '.join(STRATEGIES)}")
    tpu: str = _field("", "TPU name or address for TPUStrategy (implies --strategy tpu)")
    jit_compile: bool = _field(False, "compile the train step with XLA (on the 2-core CPU bench it trains no faster than plain TF and compiles once per batch shape; try it on GPU/TPU)")
    precision: str = _field("auto", f"dtype policy: {', '.join(PRECISIONS)} (auto: bf16 on TPU, fp16 on GPU, fp32 on CPU)")
    seed: int = _field(1234, "seed of weights, shuffling and dropout")
    backup_every_steps: int = _field(100, "steps between BackupAndRestore backups (resume after a crash)")
    time_budget_minutes: float = _field(0.0, "stop before an epoch that would end later than this many minutes after training started (0 = no limit)")
    # Monitoring.
    validation_bleu_sentences: int = _field(200, "validation pairs greedy-decoded after every epoch to log val_bleu (0 = off)")
    early_stopping_patience: int = _field(0, "stop after this many epochs without improvement of --early-stopping-metric (0 = off)")
    early_stopping_metric: str = _field("val_loss", f"metric watched by early stopping: {' or '.join(EARLY_STOPPING_METRICS)}")
    # Decoding during evaluation.
    beam_size: int = _field(4, "beam size for evaluation and translation (1 = greedy)")
    length_penalty: float = _field(0.6, "GNMT length-penalty alpha of beam search")
    verbose: int = _field(1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch")

    def __post_init__(self) -> None:
        for name in ("builtin_train_size", "max_source_words", "vocabulary_size", "batch_tokens",
                     "shuffle_buffer", "epochs", "beam_size", "backup_every_steps",
                     "accumulation_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("steps_per_epoch", "warmup_steps", "total_steps", "builtin_seed", "seed", "verbose",
                     "validation_bleu_sentences", "early_stopping_patience", "bucket_width"):
            check_non_negative_int(name, getattr(self, name))
        check_positive_number("learning_rate", self.learning_rate)
        for name in ("weight_decay", "clip_norm", "length_penalty", "time_budget_minutes",
                     "warmup_init_learning_rate"):
            check_non_negative_number(name, getattr(self, name))
        check_number_in("label_smoothing", self.label_smoothing, "[0, 1)")
        if self.warmup_init_learning_rate > self.learning_rate:
            raise ValueError(
                "`warmup_init_learning_rate` must not exceed `learning_rate`; received "
                f"warmup_init_learning_rate={self.warmup_init_learning_rate!r}, "
                f"learning_rate={self.learning_rate!r}"
            )
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("tokenizer_type", self.tokenizer_type, TOKENIZER_TYPES)
        check_choice("early_stopping_metric", self.early_stopping_metric, EARLY_STOPPING_METRICS)
        if self.early_stopping_metric == "val_bleu" and self.early_stopping_patience and not (
            self.validation_bleu_sentences
        ):
            raise ValueError(
                "early stopping on val_bleu needs validation_bleu_sentences > 0; received "
                "validation_bleu_sentences=0"
            )
        if not self.train:
            raise ValueError("`train` must name a corpus; received train=''")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def split_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits one flat settings dict into ModelConfig and TrainConfig keyword arguments.

    Raises:
        ValueError: naming every key that is neither, and the accepted keys.
    """
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - model_keys - train_keys)
    if unknown:
        raise ValueError(
            f"Unknown setting(s) {unknown}; accepted are the ModelConfig fields "
            f"{sorted(model_keys)} and the TrainConfig fields {sorted(train_keys)}"
        )
    model = {k: v for k, v in values.items() if k in model_keys}
    train = {k: v for k, v in values.items() if k in train_keys}
    return model, train
