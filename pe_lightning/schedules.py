"""Per-iteration schedules (e.g. ``variation_degrees``) in a form that follows ``T``.

A schedule is given in one of three forms and resolved to one value per iteration
``t = 1 .. T``:

* a number: the same value every iteration;
* a list of ``T`` numbers: used as is (its length must equal ``T``);
* a mapping, interpolated linearly over the iterations, so that changing ``T`` needs no
  other change: ``{start: a, end: b}`` goes from ``a`` at iteration 1 to ``b`` at
  iteration ``T``; ``{points: [p_0, ..., p_m]}`` is the piecewise-linear curve through
  ``m + 1`` equally spaced points from iteration 1 to ``T`` (with ``m + 1 = T`` it is
  exactly the list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

__all__ = ["Schedule", "resolve_schedule"]

#: What a schedule argument accepts (see the module docstring).
Schedule = Union[float, list[float], dict[str, Union[float, list[float]]]]


def _interpolate(points: Sequence[float], iterations: int) -> list[float]:
    if iterations == 1:
        return [float(points[0])]
    positions = np.linspace(0.0, 1.0, num=len(points))
    values = np.interp(np.linspace(0.0, 1.0, num=iterations), positions, np.asarray(points, dtype=np.float64))
    return [float(v) for v in values]


def _from_mapping(name: str, value: Mapping, iterations: int) -> list[float]:
    keys = set(value)
    if keys == {"start", "end"}:
        points = [value["start"], value["end"]]
    elif keys == {"points"}:
        points = value["points"]
        if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or len(points) < 1:
            raise ValueError(f"{name}: 'points' must be a non-empty list of numbers, got {points!r}")
    else:
        raise ValueError(
            f"{name}: a schedule mapping takes either {{start, end}} or {{points}}, got keys {sorted(keys)}"
        )
    try:
        numbers = [float(p) for p in points]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: schedule values must be numbers, got {points!r}") from None
    if len(numbers) == 1:
        return numbers * iterations
    return _interpolate(numbers, iterations)


def resolve_schedule(name: str, value: Schedule, *, iterations: int) -> list[float]:
    """One float per iteration from a number, a list of ``iterations`` numbers, or a mapping.

    Args:
        name: the argument's name, for error messages.
        value: the schedule (see the module docstring).
        iterations: ``T``.

    Returns:
        ``T`` floats, entry ``t - 1`` for iteration ``t``.

    Raises:
        ValueError: a list of the wrong length, an unknown mapping form, or non-numbers.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, a list or a mapping, got {value!r}")
    if isinstance(value, (int, float)):
        return [float(value)] * iterations
    if isinstance(value, Mapping):
        return _from_mapping(name, value, iterations)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a number, a list or a mapping, got {value!r}")
    values = [float(v) for v in value]
    if len(values) != iterations:
        raise ValueError(
            f"{name} must have one entry per iteration (iterations={iterations}), got {len(values)} entries; "
            f"use {{start: a, end: b}} or {{points: [...]}} for a schedule that follows the number of iterations"
        )
    return values
