"""What the progress display and the run summary read about a PE run, through the trainer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import lightning.pytorch as pl

    from pe_lightning.callbacks.privacy import PrivacyAccountant

__all__ = ["accountant", "fid_metric", "format_epsilon", "metric_value"]


def accountant(trainer: "pl.Trainer") -> "PrivacyAccountant | None":
    """The run's :class:`~pe_lightning.callbacks.PrivacyAccountant`, if it has one."""
    from pe_lightning.callbacks.privacy import PrivacyAccountant

    return next((cb for cb in trainer.callbacks if isinstance(cb, PrivacyAccountant)), None)


def metric_value(metrics: dict, key: str) -> float | None:
    """``metrics[key]`` as a float (tensors included), ``None`` when absent."""
    value = metrics.get(key)
    return None if value is None else float(value)


def fid_metric(metrics: dict) -> tuple[str, float] | None:
    """The first ``fid/*`` metric (key, value) in ``metrics``, ``None`` when there is none."""
    key = next((k for k in sorted(metrics) if k.startswith("fid/")), None)
    return None if key is None else (key, float(metrics[key]))


def format_epsilon(value: float | None) -> str:
    """``'0.684'``, ``'∞'`` or ``'-'``."""
    if value is None:
        return "-"
    return "∞" if math.isinf(value) else f"{value:.3g}"
