"""What the progress display and the run summary show of a PE run: read from its :class:`~pe_lightning.engine.hooks.RunView`.

Both read only ``pl_module.run`` (every logged metric, the epsilon spent, the outputs),
never another callback's attributes, so a metric any callback logs reaches both.
"""

from __future__ import annotations

import math
from typing import Mapping

from pe_lightning.private_metrics import NOT_DP_SUFFIX

__all__ = ["RUN_STATE_PREFIXES", "fid_metric", "format_epsilon", "metric_value", "result_metrics"]

#: Metric namespaces that describe the run itself (shown in their own places), not a result.
RUN_STATE_PREFIXES = ("pe/", "diag/", "time/", "privacy/")


def metric_value(metrics: Mapping, key: str) -> float | None:
    """``metrics[key]`` as a float (tensors included), ``None`` when absent."""
    value = metrics.get(key)
    return None if value is None else float(value)


def fid_metric(metrics: Mapping) -> tuple[str, float] | None:
    """The first ``fid/*`` metric (key, value) in ``metrics``, ``None`` when there is none."""
    key = next((k for k in sorted(metrics) if k.startswith("fid/")), None)
    return None if key is None else (key, float(metrics[key]))


def result_metrics(metrics: Mapping, *, shown: tuple[str, ...] = ()) -> dict[str, float]:
    """The metrics that are results (not under :data:`RUN_STATE_PREFIXES`), sorted by key, less those in ``shown``.

    Metrics against private images (``*_private_not_dp``, logged only on an explicit opt-in,
    :mod:`pe_lightning.private_metrics`) are never among them: the display and the summary
    do not repeat them.

    Args:
        metrics: every metric, by key.
        shown: keys, or prefixes ending in ``/``, the caller already shows in a place of their own.
    """
    skip = RUN_STATE_PREFIXES + tuple(shown)
    return {k: float(metrics[k]) for k in sorted(metrics)
            if not (k in shown or k.startswith(skip) or k.endswith(NOT_DP_SUFFIX))}


def format_epsilon(value: float | None) -> str:
    """``'0.684'``, ``'∞'`` or ``'-'``."""
    if value is None:
        return "-"
    return "∞" if math.isinf(value) else f"{value:.3g}"
