"""The hook contract between a PE run and its callbacks, owned by the core (docs/design.md §3).

* :class:`RunView`: a frozen, read-only view of the run that callbacks read (iteration,
  ``T``, class names, output root, the noise multiplier used). Callbacks never read or
  write the module's attributes.
* :class:`PopulationHooks`: what a callback implements to hear about new populations and
  progress (``pe_lightning.callbacks.PopulationCallback`` is the Lightning base class that
  implements it).
* :class:`NoiseMultiplierSource`: what states ``sigma`` for the next iteration (the
  ``PrivacyAccountant``). The run asks it right before each release, reports the sigma it
  used in :attr:`RunView.noise_record`, and the source records that; the source never
  writes into the run, so the result does not depend on hook order on resume.

Nothing here imports Lightning: ``trainer`` and ``pl_module`` are passed through untyped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.population import Population

__all__ = ["STAGES", "NoiseMultiplierSource", "PopulationHooks", "RunView", "resolve_noise_multiplier", "run_view"]

#: The stages :meth:`PopulationHooks.on_stage` reports, in the order a run passes them:
#: once at start-up ``private embedding`` and ``random`` (iteration 0), then per iteration
#: ``lookahead``, ``voting``, ``variation`` (fresh variations only) and, after every new
#: population, ``callbacks`` (FID, grids, snapshots, ...).
STAGES = ("private embedding", "random", "lookahead", "voting", "variation", "callbacks")


@dataclass(frozen=True)
class RunView:
    """What callbacks may know about a PE run (all public: nothing here is private).

    Attributes:
        iteration: completed PE iterations (the current population is ``S_iteration``).
        iterations: ``T``, the run's number of iterations.
        class_names: the private data's class names, in label order.
        output_dir: where the run writes its outputs (the output root unless set otherwise).
        noise_record: per completed iteration ``{"iteration", "noise_multiplier",
            "noise_mode", "key_id"}``: the sigma used and the public id of the noise key.
        noise_multiplier: sigma of the latest release, else the one set for the next
            (``None`` when not known yet).
        population_size: images in the current population (``None`` before the first).
        final_population_dir: where the final population was written (after the fit).
        private_dir: the private-side folder (noise keys, private-embedding cache); its
            path is public, its contents are not.
    """

    iteration: int
    iterations: int
    class_names: tuple[str, ...]
    output_dir: Path
    noise_record: tuple[Mapping[str, Any], ...] = ()
    noise_multiplier: float | None = None
    population_size: int | None = None
    final_population_dir: Path | None = None
    private_dir: Path | None = None


@runtime_checkable
class PopulationHooks(Protocol):
    """A callback that hears about every new population and the progress of each stage.

    The run calls :meth:`on_population` on every rank right after a population exists:
    once for the RANDOM population (``iteration=0``, no privacy spent), then after each
    iteration's noise, selection and variation. Metrics go through
    ``pl_module.log_iteration_metrics({...})`` (logged at ``step=iteration``); the run is
    read through ``pl_module.run`` (a :class:`RunView`).
    """

    #: Whether evaluating a saved run (``python -m pe_lightning test``) calls :meth:`on_population`.
    evaluates_saved_runs: bool

    def on_population(self, trainer: Any, pl_module: Any, *, population: "Population", iteration: int) -> None:
        """Called with the population ``S_iteration`` (synthetic data only)."""

    def on_stage(self, trainer: Any, pl_module: Any, *, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``stage`` (one of :data:`STAGES`) are finished on this rank."""


@runtime_checkable
class NoiseMultiplierSource(Protocol):
    """States the noise multiplier of the next iteration (the privacy accountant)."""

    def noise_multiplier_for(self, run: RunView) -> float:
        """``sigma`` for iteration ``run.iteration + 1``, given what the run already spent (``run.noise_record``).

        Raises:
            RuntimeError: (or a subclass) when that iteration would exceed the budget.
        """


def run_view(pl_module: Any) -> RunView | None:
    """``pl_module.run`` when ``pl_module`` is a PE run, else ``None`` (callbacks that also serve other modules)."""
    run = getattr(pl_module, "run", None)
    return run if isinstance(run, RunView) else None


def resolve_noise_multiplier(*, callbacks: Iterable[Any], explicit: float | None, run: RunView) -> float | None:
    """Sigma for iteration ``run.iteration + 1``: one owner states it.

    The run's one :class:`NoiseMultiplierSource` (the privacy accountant) when there is
    one, else the explicitly configured ``explicit`` sigma, else ``None`` (the run must
    refuse to spend). The source is asked at the moment of use, after any checkpoint was
    restored, so the answer does not depend on hook order.

    Raises:
        ValueError: when both a source and an explicit sigma are set, or several sources are.
    """
    sources = [cb for cb in callbacks if isinstance(cb, NoiseMultiplierSource)]
    if len(sources) > 1:
        raise ValueError(f"{len(sources)} callbacks state the noise multiplier ({[type(s).__name__ for s in sources]}): keep one")
    if not sources:
        return explicit
    if explicit is not None:
        raise ValueError(
            f"model.noise_multiplier is set ({explicit}) and the {type(sources[0]).__name__} callback "
            "would calibrate it too: set one of them, not both"
        )
    return float(sources[0].noise_multiplier_for(run))
