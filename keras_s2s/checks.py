"""Argument checks written once: each raises ValueError naming the argument and echoing its value.

    check_positive_int("beam_size", 0)
    ValueError: `beam_size` must be a positive integer; received beam_size=0

Integers are `numbers.Integral` (NumPy's too) and numbers `numbers.Real`;
booleans are refused where numbers are expected (`True` is an `int` in
Python, and `beam_size=True` is always a mistake). A check that needs more
than one argument (`num_heads` must divide `hidden_dim`) stays beside its
use: these are for the single-argument checks that were written over and over.
"""

from __future__ import annotations

import numbers
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fail(name: str, expected: str, value: Any, hint: str = "") -> None:
    raise ValueError(f"`{name}` must be {expected}{hint}; received {name}={value!r}")


def check_positive_int(name: str, value: Any, hint: str = "") -> None:
    """An int >= 1. `hint` follows the expectation, e.g. " (how many checkpoints to average)"."""
    if not _is_int(value) or value < 1:
        _fail(name, "a positive integer", value, hint)


def check_non_negative_int(name: str, value: Any) -> None:
    """An int >= 0."""
    if not _is_int(value) or value < 0:
        _fail(name, "a non-negative integer", value)


def check_real(name: str, value: Any) -> None:
    """Any real number (NaN and infinities included), not a bool."""
    if not _is_number(value):
        _fail(name, "a real number", value)


def check_positive_number(name: str, value: Any) -> None:
    """An int or float > 0 (NaN fails)."""
    if not _is_number(value) or not value > 0:
        _fail(name, "a positive number", value)


def check_non_negative_number(name: str, value: Any) -> None:
    """An int or float >= 0 (NaN fails)."""
    if not _is_number(value) or not value >= 0:
        _fail(name, "a non-negative number", value)


def check_number_in(name: str, value: Any, interval: str) -> None:
    """An int or float in `interval`, written as in the message: "[0, 1)", "(0, 1]", "[0, 1]".

    Probabilities and rates: dropout is in "[0, 1)", a coverage in "(0, 1]".
    """
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    inside = _is_number(value) and (
        (low <= value if interval[0] == "[" else low < value)
        and (value <= high if interval[-1] == "]" else value < high)
    )
    if not inside:
        _fail(name, f"a number in {interval}", value)


def check_bool(name: str, value: Any) -> None:
    """True or False, not a truthy stand-in such as 1 or "yes"."""
    if not isinstance(value, bool):
        _fail(name, "True or False", value)


def check_choice(name: str, value: Any, choices) -> None:
    """One of `choices` (listed in the message)."""
    if value not in choices:
        _fail(name, f"one of {list(choices)}", value)
