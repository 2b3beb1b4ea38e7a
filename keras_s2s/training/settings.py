"""Resolving settings: defaults < JSON config file < `--key value` flags.

One flat namespace: ModelConfig fields (architecture) and TrainConfig
fields (everything else). Unknown keys and wrong types are errors that name
the key, the value and where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from keras_s2s.config import ModelConfig, TrainConfig, split_settings

# Vocabulary sizes come from the trained tokenizers, never from settings.
DERIVED_MODEL_FIELDS = ("source_vocabulary_size", "target_vocabulary_size")


def _settable_fields():
    fields = [f for f in dataclasses.fields(ModelConfig) if f.name not in DERIVED_MODEL_FIELDS]
    return fields + list(dataclasses.fields(TrainConfig))


def _field_type(field):
    hints = typing.get_type_hints(
        ModelConfig if field in dataclasses.fields(ModelConfig) else TrainConfig
    )
    return hints[field.name]


def parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")


def _converter(kind):
    return parse_bool if kind is bool else kind


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One `--name` flag per settable field, documented from the dataclasses."""
    model_group = parser.add_argument_group("model architecture (not allowed with --init-from: it comes from that run)")
    train_group = parser.add_argument_group("data, optimisation and execution")
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    model_help = _model_help()
    for field in _settable_fields():
        kind = _field_type(field)
        group = model_group if field.name in model_names else train_group
        help_text = model_help.get(field.name) or field.metadata.get("help", "")
        # `--steps_per_epoch` as in the config files, `--steps-per-epoch` as
        # in most CLIs: both spell the same setting.
        dashed = [f"--{field.name.replace('_', '-')}"] if "_" in field.name else []
        group.add_argument(
            f"--{field.name}",
            *dashed,
            dest=field.name,
            type=_converter(kind),
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{help_text} (default: {field.default!r})",
        )


def _model_help():
    """Field help parsed from the ModelConfig docstring's Args section."""
    help_by_name, current = {}, None
    for line in (ModelConfig.__doc__ or "").splitlines():
        stripped = line.strip()
        head, _, rest = stripped.partition(":")
        if head.isidentifier() and rest and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = head
            help_by_name[current] = rest.strip()
        elif current and stripped and line.startswith(" " * 12):
            help_by_name[current] += " " + stripped
        elif not stripped:
            current = None
    return help_by_name


def load_config_file(path: str) -> dict:
    """Reads a flat JSON settings file; checks keys and value types."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config: no such file {path!r}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, found {type(values).__name__}")
    values = {k: v for k, v in values.items() if not k.startswith("_")}  # "_comment" keys
    try:
        split_settings(values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    derived = sorted(set(values) & set(DERIVED_MODEL_FIELDS))
    if derived:
        raise ValueError(f"{path}: {derived} come from the trained tokenizers; remove them")
    types = {f.name: _field_type(f) for f in _settable_fields()}
    for key, value in values.items():
        expected = types[key]
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
            ok = True
        if not ok:
            raise ValueError(
                f"{path}: `{key}` must be {expected.__name__}; received {key}={value!r}"
            )
    return values


def resolve_settings(config_path: str | None, flags: dict) -> dict:
    """Defaults < config file < flags; returns the flat dict of explicit settings."""
    values = load_config_file(config_path) if config_path else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def make_configs(values: dict, vocabulary_sizes: tuple[int, int] | None = None):
    """Builds (ModelConfig or None, TrainConfig) from resolved settings."""
    model_values, train_values = split_settings(values)
    train_config = TrainConfig(**train_values)
    if vocabulary_sizes is None:
        return model_values, train_config
    model_config = ModelConfig(
        source_vocabulary_size=vocabulary_sizes[0],
        target_vocabulary_size=vocabulary_sizes[1],
        **model_values,
    )
    return model_config, train_config
