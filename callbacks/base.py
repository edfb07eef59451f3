"""The hook PE callbacks implement: called whenever a new population exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as pl

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.population import Population

__all__ = ["PopulationCallback"]


class PopulationCallback(pl.Callback):
    """A Lightning callback with one extra hook, :meth:`on_population`.

    :class:`~pe_lightning.PrivateEvolution` calls it on every rank right after a new
    population exists: once for the RANDOM population (``iteration=0``, no privacy
    spent) in ``on_fit_start``, then after each iteration's noise, selection and
    variation in ``on_train_epoch_end``. Metrics go through
    ``pl_module.log_iteration_metrics({...})`` so that they reach every logger at
    ``step=iteration`` and the per-iteration summary line.
    """

    def on_population(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", *, population: "Population", iteration: int
    ) -> None:
        """Called with the population ``S_iteration`` (synthetic data only)."""
