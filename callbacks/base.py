"""The Lightning base class of PE callbacks; the hook contract itself is the core's (:mod:`pe_lightning.engine.hooks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as pl

from pe_lightning.engine.hooks import STAGES, NoiseMultiplierSource, PopulationHooks, RunView, run_view

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.population import Population

__all__ = ["STAGES", "NoiseMultiplierSource", "PopulationCallback", "PopulationHooks", "RunView", "run_view"]


class PopulationCallback(pl.Callback):
    """A Lightning callback implementing :class:`~pe_lightning.engine.hooks.PopulationHooks`.

    :class:`~pe_lightning.PrivateEvolution` calls :meth:`on_population` on every rank right
    after a new population exists: once for the RANDOM population (``iteration=0``, no
    privacy spent) in ``on_fit_start``, then after each iteration's noise, selection and
    variation in ``on_train_epoch_end``. Read the run through ``pl_module.run`` (a
    :class:`~pe_lightning.engine.hooks.RunView`: iteration, ``T``, class names, output
    root, sigma used), never through other module attributes. Metrics go through
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

        Called on every rank with that rank's share (rows for ``random``, ``lookahead`` and
        ``variation``, callbacks for ``callbacks``): first with ``done=0``, then as work
        completes. Private-side work (``private embedding``, ``voting``:
        :data:`pe_lightning.private_side.PRIVATE_STAGES`) is reported as ``done=0, total=0``:
        running, size not shown. ``stage`` is one of :data:`STAGES`. For display only; it
        must not change the run.
        """
