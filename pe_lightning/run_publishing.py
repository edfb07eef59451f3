"""The run as its callbacks see it, and what it publishes to them: a mixin of :class:`~pe_lightning.PrivateEvolution`.

Callbacks read the run only through :attr:`RunPublishing.run` (a frozen
:class:`~pe_lightning.engine.hooks.RunView`) and give back through
``log_iteration_metrics`` and ``log_output``; the core's hook contract
(:class:`~pe_lightning.engine.hooks.HookCaller`) calls them. Sigma has one source, asked
here right before each release (:meth:`RunPublishing.stated_noise_multiplier`), and one
record, the engine's noise record.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

from pe_lightning.engine.hooks import HookCaller, PopulationHooks, RunView, resolve_noise_multiplier
from pe_lightning.private_side import public_progress

__all__ = ["RunPublishing"]


class RunPublishing:
    """What callbacks see of the run and what they receive (a mixin: it uses the module's engine and run state)."""

    @property
    def noise_multiplier(self) -> float | None:
        """Sigma of the latest release (the engine's noise record), else the one stated for the next (``None`` before).

        Read-only: sigma comes from the run's one noise-multiplier source
        (:meth:`stated_noise_multiplier`) and is recorded by the engine when used.
        """
        return float(self.noise_record[-1]["noise_multiplier"]) if self.noise_record else self._next_sigma

    @property
    def class_names(self) -> list[str]:
        """The private data's class names in label order (from ``setup`` on; the engine's once prepared)."""
        return self.engine.class_names or (list(self._classes[0]) if self._classes else [])

    @class_names.setter
    def class_names(self, names: list[str]) -> None:  # evaluating a saved run names its classes
        self.engine.class_names = list(names)

    @property
    def variation_degrees(self) -> list[float]:
        """The variation degree of iterations ``1 .. T``."""
        return list(self.engine.settings.variation_degrees)

    @property
    def num_per_class(self) -> list[int]:
        """Synthetic samples per class of the RANDOM population."""
        return list(self.sizes_per_iteration[0]) if self.sizes_per_iteration else []

    @property
    def run(self) -> RunView:
        """The read-only view of the run that callbacks read (:class:`~pe_lightning.engine.hooks.RunView`)."""
        return self.engine.view(
            output_dir=self.resolved_output_dir, noise_multiplier=self.noise_multiplier,
            final_population_dir=self.final_population_dir, private_dir=self.resolved_private_dir,
            metrics=self._log.metrics, outputs=self._log.outputs,
        )

    def _hook_caller(self) -> HookCaller:
        return HookCaller(self.trainer.callbacks, trainer=self.trainer, module=self)

    def _hooks(self) -> list[PopulationHooks]:
        return self._hook_caller().hooks

    def stated_noise_multiplier(self) -> float | None:
        """Sigma for the next iteration, from the run's one source (:func:`~pe_lightning.engine.hooks.resolve_noise_multiplier`).

        The source is the ``PrivacyAccountant`` callback, or the explicit ``noise_multiplier``
        (:class:`~pe_lightning.engine.hooks.FixedNoiseMultiplier`); ``None`` without either.
        """
        callbacks = self._trainer.callbacks if self._trainer is not None else []
        sigma = resolve_noise_multiplier(callbacks=callbacks, explicit=self._noise_multiplier, run=self.run if callbacks else None)
        self._next_sigma = sigma
        return sigma

    def _report_stage(self, stage: str, done: int, total: int) -> None:
        """Tell every population callback how far ``stage`` of this iteration is (``on_stage``)."""
        done, total = public_progress(stage, done, total)  # private-side work: no counts (docs/privacy.md)
        self._hook_caller().on_stage(stage, done, total)

    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Queue metrics for the current iteration (logged at ``step=iteration``)."""
        self._log.queue(metrics)

    def log_output(self, name: str, path: Path | str) -> None:
        """Record that a callback wrote ``path`` (the run's :attr:`~pe_lightning.engine.hooks.RunView.outputs`)."""
        self._log.output(name, path)

    def _publish_population(self, *, iteration: int) -> None:
        with self.engine.timed("callbacks"):
            self._hook_caller().on_population(self.population, iteration=iteration)
        metrics = {"pe/iteration": float(iteration), "time/iteration_s": time.perf_counter() - self._iteration_start}
        metrics.update({f"time/{k}_s": v for k, v in self.engine.take_timings().items()})
        metrics.update(self.engine.api.take_metrics())  # api/* of APIs behind HTTP; none for in-process ones
        self._flush_metrics(metrics, step=iteration, headline=f"[PE] iteration {iteration}/{self.iterations}")

    def _flush_metrics(self, metrics: dict[str, float], *, step: int, headline: str) -> None:
        """Send ``metrics`` plus the queued ones to every logger at ``step``, the trainer, and one console line."""
        self._log.flush(metrics, step=step, headline=headline, loggers=self.trainer.loggers,
                        callback_metrics=self.trainer.callback_metrics, info=rank_zero_info)
