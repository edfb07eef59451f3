"""The hooks PE callbacks implement: a new population exists (``on_population``), progress within an iteration (``on_stage``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as pl

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.population import Population

__all__ = ["STAGES", "PopulationCallback"]

#: The stages :meth:`PopulationCallback.on_stage` reports, in the order a run passes them:
#: once at start-up ``private embedding`` and ``random`` (iteration 0), then per iteration
#: ``lookahead``, ``voting``, ``variation`` (fresh variations only) and, after every new
#: population, ``callbacks`` (FID, grids, snapshots, ...).
STAGES = ("private embedding", "random", "lookahead", "voting", "variation", "callbacks")


class PopulationCallback(pl.Callback):
    """A Lightning callback with two extra hooks, :meth:`on_population` and :meth:`on_stage`.

    :class:`~pe_lightning.PrivateEvolution` calls it on every rank right after a new
    population exists: once for the RANDOM population (``iteration=0``, no privacy
    spent) in ``on_fit_start``, then after each iteration's noise, selection and
    variation in ``on_train_epoch_end``. Metrics go through
    ``pl_module.log_iteration_metrics({...})`` so that they reach every logger at
    ``step=iteration`` and the per-iteration summary line.
    """

    #: Whether ``python -m pe_lightning test`` (evaluating a saved run) calls :meth:`on_population`:
    #: metric callbacks say ``True``; those that change a run (accounting, outputs) stay ``False``.
    evaluates_saved_runs: bool = False

    def on_population(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", *, population: "Population", iteration: int
    ) -> None:
        """Called with the population ``S_iteration`` (synthetic data only)."""

    def on_stage(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", *, stage: str, done: int, total: int) -> None:
        """Progress within the current iteration: ``done`` of ``total`` units of ``stage`` are finished.

        Called on every rank with that rank's share (rows for ``private embedding``,
        ``random``, ``lookahead`` and ``variation``, batches for ``voting``, callbacks for
        ``callbacks``): first with ``done=0``, then as work completes. ``stage`` is one of
        :data:`STAGES`. For display only; it must not change the run.
        """
