"""The hook contract between a PE run and its callbacks, owned by the core (docs/design.md §3).

* :class:`RunView`: a frozen, read-only view of the run that callbacks read (iteration,
  ``T``, class names, output root, the noise multiplier used, every metric logged, the
  epsilon spent, the outputs written). Callbacks never read or write the module's
  attributes, nor each other's.
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

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from pe_lightning.population import Population

__all__ = [
    "STAGES",
    "FixedNoiseMultiplier",
    "HookCaller",
    "NoiseMultiplierSource",
    "NotPrivateWarning",
    "PopulationHooks",
    "RunView",
    "noise_multiplier_source",
    "require_noise_multiplier",
    "resolve_noise_multiplier",
    "run_view",
]

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
        metrics: the latest value of every metric logged so far (``pl_module.log_iteration_metrics``
            and the run's own ``pe/*``, ``time/*``), by key.
        outputs: files and folders callbacks wrote (``pl_module.log_output``), by name.
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
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    outputs: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def epsilon(self) -> float | None:
        """The epsilon spent so far (``privacy/epsilon`` as the privacy accountant logged it), ``None`` without one."""
        value = self.metrics.get("privacy/epsilon")
        return None if value is None else float(value)


@runtime_checkable
class PopulationHooks(Protocol):
    """A callback that hears about every new population and the progress of each stage.

    The run calls :meth:`on_population` on every rank right after a population exists:
    once for the RANDOM population (``iteration=0``, no privacy spent), then after each
    iteration's noise, selection and variation. Metrics go through
    ``pl_module.log_iteration_metrics({...})`` (logged at ``step=iteration``), files written
    through ``pl_module.log_output(name, path)``; the run is read through ``pl_module.run``
    (a :class:`RunView`, where every logged metric and output appears).
    """

    #: Whether evaluating a saved run (``python -m pe_lightning test``) calls :meth:`on_population`.
    evaluates_saved_runs: bool

    def on_population(self, trainer: Any, pl_module: Any, *, population: "Population", iteration: int) -> None:
        """Called with the population ``S_iteration`` (synthetic data only)."""

    def on_stage(self, trainer: Any, pl_module: Any, *, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``stage`` (one of :data:`STAGES`) are finished on this rank."""


class HookCaller:
    """Calls the :class:`PopulationHooks` among ``callbacks`` as the contract says (the module and ``run_loop`` use it).

    Args:
        callbacks: any objects; those implementing :class:`PopulationHooks` are called, in order.
        trainer: passed through as each hook's ``trainer`` (``None`` without a Trainer).
        module: passed through as ``pl_module``: an object with ``run`` (a :class:`RunView`)
            and ``log_iteration_metrics(metrics)``.
    """

    def __init__(self, callbacks: Sequence[Any] = (), *, trainer: Any = None, module: Any = None) -> None:
        self.hooks: list[PopulationHooks] = [cb for cb in callbacks if isinstance(cb, PopulationHooks)]
        self.trainer, self.module = trainer, module

    def on_stage(self, stage: str, done: int, total: int) -> None:
        """Every hook's :meth:`PopulationHooks.on_stage`."""
        for hook in self.hooks:
            hook.on_stage(self.trainer, self.module, stage=stage, done=done, total=total)

    def on_population(self, population: "Population", *, iteration: int) -> None:
        """Every hook's :meth:`PopulationHooks.on_population`, reporting the ``callbacks`` stage before each."""
        for done, hook in enumerate(self.hooks):
            self.on_stage("callbacks", done, len(self.hooks))
            hook.on_population(self.trainer, self.module, population=population, iteration=iteration)


@runtime_checkable
class NoiseMultiplierSource(Protocol):
    """States the noise multiplier of the next iteration (the privacy accountant)."""

    def noise_multiplier_for(self, run: RunView) -> float:
        """``sigma`` for iteration ``run.iteration + 1``, given what the run already spent (``run.noise_record``).

        Raises:
            RuntimeError: (or a subclass) when that iteration would exceed the budget.
        """


class FixedNoiseMultiplier:
    """A :class:`NoiseMultiplierSource` that states one configured sigma for every iteration.

    It does no accounting: whoever configured ``sigma`` answers for the privacy
    (:mod:`pe_lightning.privacy`). ``0`` means *not private*.

    Args:
        sigma: the noise multiplier, finite and ``>= 0``.
    """

    def __init__(self, sigma: float) -> None:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"noise_multiplier must be None, 0 (not private) or > 0, got {sigma}")
        self.sigma = float(sigma)

    def noise_multiplier_for(self, run: RunView) -> float:
        """The configured sigma, whatever the iteration."""
        return self.sigma


def noise_multiplier_source(*, callbacks: Iterable[Any], explicit: float | None) -> NoiseMultiplierSource | None:
    """The run's one source of sigma: its :class:`NoiseMultiplierSource` callback, else ``explicit``, else ``None``.

    Raises:
        ValueError: when both a source and an explicit sigma are set, or several sources are.
    """
    sources = [cb for cb in callbacks if isinstance(cb, NoiseMultiplierSource)]
    if len(sources) > 1:
        raise ValueError(f"{len(sources)} callbacks state the noise multiplier ({[type(s).__name__ for s in sources]}): keep one")
    if not sources:
        return FixedNoiseMultiplier(explicit) if explicit is not None else None
    if explicit is not None:
        raise ValueError(
            f"model.noise_multiplier is set ({explicit}) and the {type(sources[0]).__name__} callback "
            "would calibrate it too: set one of them, not both"
        )
    return sources[0]


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
    source = noise_multiplier_source(callbacks=callbacks, explicit=explicit)
    return None if source is None else float(source.noise_multiplier_for(run))


class NotPrivateWarning(UserWarning):
    """The run uses ``noise_multiplier=0``: its output has no privacy guarantee."""


def require_noise_multiplier(sigma: float | None, *, info: Callable[[str], None] = print) -> float:
    """Refuse to start without a stated sigma (docs/design.md §3, invariant 4); warn loudly at 0 (not private).

    Raises:
        RuntimeError: when no source states sigma (no accountant, no explicit value).
    """
    if sigma is None:
        raise RuntimeError(
            "PrivateEvolution.noise_multiplier is not set. Add the PrivacyAccountant callback "
            "(pe_lightning.callbacks.PrivacyAccountant with epsilon and delta), which calibrates it, or set "
            "model.noise_multiplier explicitly (0 means NOT private)."
        )
    if sigma == 0:
        msg = "noise_multiplier=0: this run is NOT differentially private; its synthetic data may reveal private images."
        warnings.warn(msg, NotPrivateWarning, stacklevel=3)
        info("!" * 80 + "\n" + msg + "\n" + "!" * 80)
    return sigma
