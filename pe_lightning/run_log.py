"""What a run logged: metrics queued for the iteration, the latest value of every metric sent, files written.

The Lightning module keeps one :class:`RunLog`; its contents are public (they are what the
loggers and the console receive) and feed the run's :class:`~pe_lightning.engine.hooks.RunView`.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, MutableMapping

import torch

__all__ = ["RunLog"]


class RunLog:
    """Queued and sent metrics and the outputs callbacks wrote (all public)."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}
        self._sent: dict[str, float] = {}
        self._outputs: dict[str, Path] = {}

    def queue(self, metrics: Mapping[str, float]) -> None:
        """Queue ``metrics`` for the next :meth:`flush` (the current iteration)."""
        self._pending.update({k: float(v) for k, v in metrics.items()})

    def output(self, name: str, path: Path | str) -> None:
        """Record that a callback wrote ``path`` (the latest under ``name`` wins)."""
        self._outputs[name] = Path(path)

    @property
    def metrics(self) -> Mapping[str, float]:
        """The latest value of every metric sent so far (read-only)."""
        return MappingProxyType(dict(self._sent))

    @property
    def outputs(self) -> Mapping[str, Path]:
        """Every output recorded, by name (read-only)."""
        return MappingProxyType(dict(self._outputs))

    def flush(
        self,
        metrics: Mapping[str, float],
        *,
        step: int,
        headline: str,
        loggers: Iterable[Any],
        callback_metrics: MutableMapping[str, Any],
        info: Callable[[str], None],
    ) -> None:
        """Send ``metrics`` plus the queued ones to every logger at ``step``, to ``callback_metrics``, and as one console line."""
        metrics = {**metrics, **self._pending}
        self._pending = {}
        self._sent.update(metrics)
        for logger in loggers:
            logger.log_metrics(metrics, step=step)
        callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        parts = [f"{k}={v:.4g}" for k, v in metrics.items() if k != "pe/iteration"]
        info(f"{headline} | " + " | ".join(parts))

    def state_dict(self) -> dict[str, float]:
        """The metrics sent so far (checkpoint state: a resumed run's view keeps them)."""
        return dict(self._sent)

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self._sent = {k: float(v) for k, v in state.items()}
