"""PE without a Trainer: the engine's stages called in a plain loop (one process or a process group).

The Lightning module calls the same stages from its hooks; ``benchmarks/plain_loop.py``
uses this loop to measure what Lightning adds around them.
"""

from __future__ import annotations

from typing import Callable

import torch

from pe_lightning.engine.core import PEEngine
from pe_lightning.engine.sharding import chunk_slices
from pe_lightning.noise import NoiseKey
from pe_lightning.population import Population

__all__ = ["run_loop"]


def run_loop(
    engine: PEEngine,
    *,
    noise_multiplier: float | Callable[[int], float],
    key: NoiseKey,
    vote_batch_size: int = 4096,
    until: int | None = None,
    on_iteration: Callable[[int, Population, dict[str, float]], None] | None = None,
) -> Population:
    """Run iterations ``engine.iteration + 1 .. until`` (default ``T``) and return the last population.

    The engine must be attached and hold the private side and a population (e.g.
    :meth:`PEEngine.random_population`). Private indices vote in batches of
    ``vote_batch_size``, in order, on this process (each private sample exactly once).

    Args:
        engine: the attached engine.
        noise_multiplier: sigma per iteration (a number, or ``t -> sigma``); privacy is
            accounted by whoever chose it (:mod:`pe_lightning.privacy`).
        key: the noise key (secret by default: :meth:`NoiseKey.generate`).
        vote_batch_size: private samples per vote call.
        until: last iteration to run.
        on_iteration: called after each iteration with ``(t, population, metrics)``; the
            metrics include the stage times ``time/<stage>_s``.
    """
    if engine.population is None:
        raise RuntimeError("run_loop needs a population: call engine.random_population() first")
    sigma_of = noise_multiplier if callable(noise_multiplier) else (lambda t: float(noise_multiplier))
    n_private = engine.num_private
    last = engine.settings.iterations if until is None else until
    while engine.iteration < last:
        t = engine.iteration + 1
        engine.begin_iteration()
        for sl in chunk_slices(n_private, vote_batch_size):
            engine.vote(torch.arange(sl.start, sl.stop))
        metrics = engine.evolve(noise_multiplier=sigma_of(t), key=key)
        metrics.update({f"time/{k}_s": v for k, v in engine.take_timings().items()})
        if on_iteration is not None:
            on_iteration(t, engine.population, metrics)
    return engine.population
