"""Validation helpers of the config dataclasses (pure Python; errors name ``Owner.field``).

The one validation style of a config class: its ``__post_init__`` checks each field where the
object is built, with these helpers for numbers, bools and choices, and raises ``ValueError``
naming ``Owner.field`` itself for anything else (a file, a mapping, a rule across fields).
"""

from __future__ import annotations

import math
import numbers


def is_int(value: object) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(owner: str, name: str, value: object, minimum: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if not is_int(value):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")


def check_real(owner: str, name: str, value: object, low: float = -math.inf,
               high: float = math.inf, *, open_low: bool = False,
               open_high: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in ``[low, high]`` (the bound
    excluded with ``open_low`` / ``open_high``)."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if open_low and value <= low:
        raise ValueError(f"{owner}.{name} must be > {low:g}, got {value}")
    if open_high and value >= high:
        raise ValueError(f"{owner}.{name} must be in [{low:g}, {high:g}), got {value}")
    if not low <= value <= high:
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{owner}.{name} must be {bounds}, got {value}")


def check_bool(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a bool (or ``None`` when ``optional``)."""
    if not isinstance(value, bool) and not (optional and value is None):
        allowed = "true, false or null" if optional else "a bool (true/false)"
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value!r}")


def check_choice(owner: str, name: str, value: object, choices: tuple) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")
