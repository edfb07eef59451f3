"""Privacy accounting callback: calibrates sigma, logs epsilon per iteration, refuses to overspend."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.engine.hooks import RunView
from pe_lightning.privacy import PrivacyLedger, remaining_noise_multiplier
from pe_lightning.privacy import noise_multiplier as calibrate_noise_multiplier

__all__ = ["PrivacyAccountant", "PrivacyBudgetExceededError"]


class PrivacyBudgetExceededError(RuntimeError):
    """Running another iteration would spend more than the target epsilon."""


class PrivacyAccountant(PopulationCallback):
    """Calibrates the noise multiplier for ``(epsilon, delta)`` over the model's ``T`` iterations.

    It is the run's noise-multiplier source (:class:`~pe_lightning.engine.hooks.NoiseMultiplierSource`):
    right before each release the run asks :meth:`noise_multiplier_for`, which states the
    smallest sigma whose epsilon after ``T`` full-participation Gaussian mechanisms (L2
    sensitivity 1, add/remove-one neighbours, exact GDP accounting) does not exceed
    ``epsilon``. It never writes into the module. After every iteration it records the
    sigma the run reports it used (``pl_module.run.noise_record``) in a :class:`~pe_lightning.privacy.PrivacyLedger`
    and logs ``privacy/epsilon`` (cumulative), ``privacy/epsilon_budget``, ``privacy/delta``
    and ``privacy/noise_multiplier``. Before an iteration that would exceed the
    budget it raises :class:`PrivacyBudgetExceededError`. The ledger is checkpoint state:
    a run resumed with the same budget continues with the same sigma (a finished run
    spends nothing more); resumed with a new ``epsilon``, the remaining iterations are
    calibrated so that the total over all iterations, spent and remaining, meets it.

    The ledger also records, per iteration, the noise mode the run used (``secret``
    or ``seeded``) and the public id of its noise key (:mod:`pe_lightning.noise`), taken
    from the run's noise record. A checkpoint written without this callback is
    accounted from that record on resume, so no iteration's spend goes unrecorded; a
    checkpoint whose ledger disagrees with the module's record is refused.

    Args:
        epsilon: target epsilon (> 0; ``inf`` means no noise, which is NOT private).
        delta: target delta in (0, 1).
    """

    def __init__(self, *, epsilon: float, delta: float = 1e-5) -> None:
        super().__init__()
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"PrivacyAccountant epsilon must be > 0 (or inf for not private), got {epsilon!r}")
        if not (isinstance(delta, (int, float)) and 0 < delta < 1):
            raise ValueError(f"PrivacyAccountant delta must be in (0, 1), got {delta!r}")
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.noise_multiplier: float | None = None
        self.ledger = PrivacyLedger(delta=self.delta)
        self.noise_sources: list[dict[str, Any]] = []  # per recorded iteration: noise mode and public key id

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.noise_multiplier = calibrate_noise_multiplier(epsilon=self.epsilon, iterations=pl_module.run.iterations, delta=self.delta)

    def noise_multiplier_for(self, run: RunView) -> float:
        """Sigma for iteration ``run.iteration + 1`` (the run asks right before each release).

        Accounts first every iteration the run already spent (``run.noise_record``; a
        checkpoint written without this callback). An interrupted run resumed with the same
        budget keeps its sigma (the remaining iterations fit exactly). With a new budget the
        remaining iterations get the smallest sigma for which the total over all ``T``
        iterations (spent + remaining) stays within it.

        Raises:
            PrivacyBudgetExceededError: when that iteration would exceed the budget.
        """
        if self.noise_multiplier is None:
            self.noise_multiplier = calibrate_noise_multiplier(epsilon=self.epsilon, iterations=run.iterations, delta=self.delta)
        self._account_restored_iterations(run.noise_record)
        self.noise_multiplier = remaining_noise_multiplier(
            epsilon=self.epsilon, delta=self.delta, spent_mu=self.ledger.mu, spent_iterations=len(self.ledger),
            iterations=run.iterations, calibrated=self.noise_multiplier,
        )
        if run.iteration < run.iterations:  # a finished run spends nothing more
            self._check_budget()
        return self.noise_multiplier

    def _account_restored_iterations(self, record) -> None:
        """Make the ledger cover every iteration the run already spent (resume).

        Iterations recorded by the run but not by this ledger (a checkpoint written
        without this callback) are recorded now, with the sigma the run used. A ledger
        that disagrees with the run's record is refused rather than trusted.
        """
        record = list(record)
        if len(self.ledger) > len(record):
            raise ValueError(
                f"the checkpoint's PrivacyAccountant ledger has {len(self.ledger)} iterations but the module ran "
                f"{len(record)}: the checkpoint is inconsistent; refusing to resume"
            )
        for entry, sigma in zip(record, (e["noise_multiplier"] for e in self.ledger.entries)):
            if abs(float(entry["noise_multiplier"]) - float(sigma)) > 1e-12 * max(1.0, float(sigma)):
                raise ValueError(
                    f"iteration {entry['iteration']}: the ledger records sigma={sigma} but the module used "
                    f"{entry['noise_multiplier']}; refusing to resume from an inconsistent checkpoint"
                )
        for entry in record[len(self.ledger):]:
            self.ledger.record(iteration=int(entry["iteration"]), noise_multiplier=float(entry["noise_multiplier"]))
        self.noise_sources = [{"iteration": r["iteration"], "noise_mode": r["noise_mode"], "key_id": r["key_id"]} for r in record]

    def _check_budget(self) -> None:
        after = self.ledger.epsilon_if(noise_multiplier=self.noise_multiplier)
        if after > self.epsilon * (1 + 1e-9):
            raise PrivacyBudgetExceededError(
                f"iteration {len(self.ledger) + 1} would raise epsilon from {self.ledger.epsilon:.4g} to {after:.4g}, "
                f"past the budget epsilon={self.epsilon:g} (delta={self.delta:g}); {len(self.ledger)} iterations already "
                "spent it. To continue, set a new, larger budget (PrivacyAccountant epsilon); the ledger keeps every "
                "iteration's noise, so the reported epsilon is the honest total"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_budget()

    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        run = pl_module.run
        if iteration > 0:  # record the sigma the run reports it used for this iteration's histogram
            used = run.noise_record[-1]
            self.ledger.record(iteration=iteration, noise_multiplier=float(used["noise_multiplier"]))
            self.noise_sources.append({"iteration": iteration, "noise_mode": used["noise_mode"], "key_id": used["key_id"]})
        eps = self.ledger.epsilon
        pl_module.log_iteration_metrics(
            {
                "privacy/epsilon": eps if math.isfinite(eps) else float("inf"),
                "privacy/epsilon_budget": self.epsilon,
                "privacy/delta": self.delta,
                "privacy/noise_multiplier": float(run.noise_multiplier),
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "ledger": self.ledger.state_dict(),
            "noise_sources": [dict(n) for n in self.noise_sources],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if float(state_dict["delta"]) != self.delta:
            raise ValueError(f"checkpoint was accounted at delta={state_dict['delta']}, this callback has delta={self.delta}")
        self.ledger.load_state_dict(state_dict["ledger"])
        self.noise_sources = [dict(n) for n in state_dict.get("noise_sources", [])]

    @property
    def noise_modes(self) -> list[str]:
        """The distinct noise modes of the recorded iterations (``secret``, ``seeded``)."""
        return sorted({n["noise_mode"] for n in self.noise_sources})
