"""One set of integer and real-number checks for configuration values (privacy math, engine settings, APIs).

Each check names the field in its error, so a bad config value is one clear line. Python and
numpy numbers are accepted alike; ``bool`` is never a number here (``True`` is not ``1``
iterations).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = ["check_int", "check_positive", "check_real", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """``value`` is a real number (Python or numpy int or float), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``int(value)``; ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any) -> float:
    """``float(value)``; ``ValueError`` naming ``name`` unless ``value`` is a real number other than NaN (inf allowed)."""
    if not is_number(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def check_positive(name: str, value: Any, *, integer: bool = False, zero: bool = False) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number (an int if ``integer``) > 0 (>= 0 if ``zero``)."""
    ok = (is_int(value) if integer else is_number(value)) and math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {'>= 0' if zero else '> 0'}, got {value!r}")
