"""PE without a Trainer: the engine's stages called in a plain loop (one process or a process group).

The Lightning module calls the same stages from its hooks; ``benchmarks/plain_loop.py``
uses this loop to measure what Lightning adds around them. Callbacks hear about each new
population through the core's hook contract (:class:`~pe_lightning.engine.hooks.PopulationHooks`),
with a :class:`LoopRun` in the place of the LightningModule.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Sequence

import torch

from pe_lightning.engine.core import PEEngine
from pe_lightning.engine.hooks import FixedNoiseMultiplier, HookCaller, NoiseMultiplierSource, RunView
from pe_lightning.engine.sharding import chunk_slices
from pe_lightning.noise import NoiseKey
from pe_lightning.population import Population

__all__ = ["LoopRun", "run_loop"]


class LoopRun:
    """What :func:`run_loop` passes to hooks as ``pl_module``: the run's view and its metrics.

    Args:
        engine: the engine the loop drives.
        output_dir: the :attr:`RunView.output_dir` hooks see (default: the current folder).

    Attributes:
        metrics: per completed iteration, every metric logged for it (the engine's ``pe/*``,
            the stage times ``time/<stage>_s`` and what hooks logged).
    """

    def __init__(self, engine: PEEngine, *, output_dir: Path | str = ".") -> None:
        self.engine = engine
        self.output_dir = Path(output_dir)
        self.metrics: dict[int, dict[str, float]] = {}
        self.outputs: dict[str, Path] = {}

    @property
    def run(self) -> RunView:
        """The read-only view of the run (:meth:`PEEngine.view`)."""
        latest = {k: v for t in sorted(self.metrics) for k, v in self.metrics[t].items()}
        return self.engine.view(output_dir=self.output_dir, metrics=MappingProxyType(latest),
                                outputs=MappingProxyType(dict(self.outputs)))

    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Record ``metrics`` for the current iteration."""
        self.metrics.setdefault(self.engine.iteration, {}).update({k: float(v) for k, v in metrics.items()})

    def log_output(self, name: str, path: Path | str) -> None:
        """Record that a callback wrote ``path`` (the latest under ``name`` wins)."""
        self.outputs[name] = Path(path)


def run_loop(
    engine: PEEngine,
    *,
    noise_multiplier: float | NoiseMultiplierSource,
    key: NoiseKey,
    vote_batch_size: int = 4096,
    until: int | None = None,
    hooks: Sequence[Any] = (),
    run: LoopRun | None = None,
) -> Population:
    """Run iterations ``engine.iteration + 1 .. until`` (default ``T``) and return the last population.

    The engine must be prepared (:meth:`PEEngine.prepare`). Private indices vote in
    batches of ``vote_batch_size``, in order, on this process (each private sample exactly once).

    Args:
        engine: the prepared engine.
        noise_multiplier: the run's one source of sigma, asked right before each release
            with the run's view (a :class:`~pe_lightning.engine.hooks.NoiseMultiplierSource`,
            or a number for :class:`~pe_lightning.engine.hooks.FixedNoiseMultiplier`); privacy
            is accounted by whoever chose it (:mod:`pe_lightning.privacy`). The sigma used is
            in the engine's noise record.
        key: the noise key (secret by default: :meth:`NoiseKey.generate`).
        vote_batch_size: private samples per vote call.
        until: last iteration to run.
        hooks: callbacks; those implementing :class:`~pe_lightning.engine.hooks.PopulationHooks`
            hear ``on_population`` after each iteration (with ``trainer=None`` and ``run``
            as ``pl_module``; the iteration's metrics are already in ``run.metrics``).
        run: the :class:`LoopRun` hooks see (default: a new one).
    """
    if engine.population is None:
        raise RuntimeError("run_loop needs a population: call engine.prepare(...) first")
    source = noise_multiplier if isinstance(noise_multiplier, NoiseMultiplierSource) else FixedNoiseMultiplier(noise_multiplier)
    run = run if run is not None else LoopRun(engine)
    caller = HookCaller(hooks, trainer=None, module=run)
    if caller.hooks:  # the hooks hear the stages' progress too
        engine.report = caller.on_stage
    n_private = engine.num_private
    last = engine.settings.iterations if until is None else until
    while engine.iteration < last:
        engine.begin_iteration()
        for sl in chunk_slices(n_private, vote_batch_size):
            engine.vote(torch.arange(sl.start, sl.stop))
        metrics = engine.evolve(noise_multiplier=source.noise_multiplier_for(run.run), key=key)
        metrics.update({f"time/{k}_s": v for k, v in engine.take_timings().items()})
        run.log_iteration_metrics(metrics)
        caller.on_population(engine.population, iteration=engine.iteration)
    return engine.population
