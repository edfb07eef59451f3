"""How many synthetic samples each class gets at each iteration (public configuration).

The sizes are public: a constant per class, one per class, or a schedule over
iterations ``0 .. T`` (iteration 0 is the RANDOM population). The one opt-in that reads
private data, ``counts_from_private_labels``, splits a total in proportion to the
*private* label counts; it leaks the label distribution, is NOT covered by the DP
guarantee, and is warned about.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from pe_lightning.schedules import resolve_schedule

__all__ = ["check_configured_counts", "class_sizes", "resolve_size_schedule"]


def check_configured_counts(num_samples_per_class: int | Sequence[int] | None, num_samples_schedule) -> list[int]:
    """The configured per-class counts (``[n]`` for one value for all; default ``[200]``).

    Raises:
        ValueError: when both arguments are set, or a count is not an int >= 1.
    """
    if num_samples_per_class is not None and num_samples_schedule is not None:
        raise ValueError("set num_samples_per_class or num_samples_schedule, not both")
    per_class = 200 if num_samples_per_class is None else num_samples_per_class
    counts = [per_class] if isinstance(per_class, int) else list(per_class)
    if not counts or any((not isinstance(c, int)) or c < 1 for c in counts):
        raise ValueError(f"num_samples_per_class must be an int >= 1 or a list of ints >= 1, got {num_samples_per_class!r}")
    return counts


def resolve_size_schedule(schedule, iterations: int) -> list[int] | None:
    """``num_samples_schedule`` as ``T + 1`` ints (a list of ``T + 1`` or a start/end mapping), or ``None``."""
    if schedule is None:
        return None
    if isinstance(schedule, (list, tuple)) and len(schedule) != iterations + 1:
        raise ValueError(
            f"num_samples_schedule must have one entry per iteration 0 .. T (T + 1 = {iterations + 1} entries; "
            f"iteration 0 is the RANDOM population), got {len(schedule)}"
        )
    values = resolve_schedule("num_samples_schedule", schedule, iterations=iterations + 1)
    sizes = [int(round(v)) for v in values]
    if any(n < 1 for n in sizes):
        raise ValueError(f"num_samples_schedule entries must be >= 1, got {sizes}")
    return sizes


def class_sizes(
    *,
    configured: Sequence[int],
    schedule: Sequence[int] | None,
    iterations: int,
    class_names: Sequence[str],
    private_label_counts: np.ndarray | None,
    num_nearest_neighbors: int,
    fold: int,
) -> list[list[int]]:
    """Synthetic samples per class at iterations ``0 .. T``.

    Args:
        configured: :func:`check_configured_counts` (one value, or one per class).
        schedule: :func:`resolve_size_schedule` (replaces ``configured``), or ``None``.
        iterations: ``T``.
        class_names: the data's classes.
        private_label_counts: ``(C,)`` private label counts, ONLY for the
            ``counts_from_private_labels`` opt-in (not covered by the DP guarantee); ``None``
            otherwise.
        num_nearest_neighbors: ``k'``; every class needs at least that many samples.
        fold: samples each selected parent makes (``variations_per_parent + keep_selected``);
            voted iterations' sizes must be multiples of it.

    Raises:
        ValueError: naming the class and iteration of a size that does not fit.
    """
    num_classes = len(class_names)
    counts = list(configured)
    if len(counts) == 1:
        counts = counts * num_classes
    if len(counts) != num_classes:
        raise ValueError(
            f"num_samples_per_class has {len(counts)} entries but the data has {num_classes} classes {list(class_names)}"
        )
    if private_label_counts is not None:
        if schedule is not None:
            raise ValueError("num_samples_schedule and counts_from_private_labels cannot be combined")
        warnings.warn(
            "counts_from_private_labels=True: synthetic class sizes follow the PRIVATE label counts. "
            "This leaks the private label distribution and is NOT covered by the DP guarantee.",
            UserWarning, stacklevel=2,
        )
        total = sum(counts)
        exact = private_label_counts / private_label_counts.sum() * total
        floor = np.floor(exact).astype(int)
        for c in np.argsort(-(exact - floor), kind="stable")[: total - floor.sum()]:
            floor[c] += 1
        counts = [max(int(c), 1) for c in floor]
    if schedule is not None:
        sizes = [[int(n)] * num_classes for n in schedule]
    else:
        sizes = [[int(c) for c in counts] for _ in range(iterations + 1)]
    for t, row in enumerate(sizes):
        for name, n in zip(class_names, row):
            if n < num_nearest_neighbors:
                raise ValueError(
                    f"class {name!r} gets {n} synthetic samples at iteration {t}, fewer than "
                    f"num_nearest_neighbors={num_nearest_neighbors}"
                )
            if t > 0 and n % fold:
                raise ValueError(
                    f"class {name!r} has {n} synthetic samples at iteration {t}, not a multiple of "
                    f"variations_per_parent + keep_selected = {fold}: each selected parent makes {fold} samples"
                )
    return sizes
