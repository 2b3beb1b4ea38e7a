"""Architecture configuration: a frozen, validated, JSON-serialisable dataclass.

The architecture of a run lives in `config.json` beside every checkpoint and
export; on load it comes from that file, never from command-line flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

NORM_POSITIONS = ("pre", "post")
POSITION_KINDS = ("sinusoidal", "learned")


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
            _check_positive_int(name, getattr(self, name))
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
        if isinstance(self.dropout, bool) or not isinstance(
            self.dropout, (int, float)
        ) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"`dropout` must be a number in [0, 1); received "
                f"dropout={self.dropout!r}"
            )
        if not isinstance(self.layer_norm_epsilon, float) or not (
            self.layer_norm_epsilon > 0
        ):
            raise ValueError(
                "`layer_norm_epsilon` must be a positive float; received "
                f"layer_norm_epsilon={self.layer_norm_epsilon!r}"
            )
        _check_choice("positions", self.positions, POSITION_KINDS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)

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


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer; received {name}={value!r}"
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}; received {name}={value!r}"
        )
