"""Evaluating a saved PE run: ``python -m pe_lightning test --ckpt_path ...`` (or ``population_path``).

Nothing private is voted on and no privacy is spent: the population is the saved
(already private) output, handed to the metric callbacks that say ``evaluates_saved_runs``.
"""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

from pe_lightning.png_tree import check_class_names
from pe_lightning.population import Population

__all__ = ["SavedRunEvaluation"]


class SavedRunEvaluation:
    """The ``test`` hooks of :class:`~pe_lightning.PrivateEvolution` (a mixin: it uses the module's run state)."""

    def _setup_evaluation(self) -> None:
        dm = self._datamodule()
        dm.setup("test")
        self.class_names = list(dm.class_names)
        if self.population_path:
            self.population = Population.load_npz(self.population_path)
            self.iteration = self.iterations  # a saved final population
        if self.population is not None:
            check_class_names(self.population.labels, self.class_names)

    def test_step(self, batch, batch_idx: int) -> None:  # noqa: D102 - nothing to do per batch
        return None

    def on_test_start(self) -> None:
        """Evaluate the restored population with the metric callbacks (FID, precision/recall, downstream).

        Nothing private is voted on and no privacy is spent: the population is the saved
        (already private) output. Callbacks that change a run (the accountant, grids,
        snapshots) are not called.
        """
        if self.population is None:
            raise RuntimeError(
                "nothing to evaluate: give a PE checkpoint (--ckpt_path <...>/last.ckpt) or a saved population "
                "(--model.init_args.population_path <...>/population.npz)"
            )
        evaluators = [cb for cb in self._hooks() if cb.evaluates_saved_runs]
        if not evaluators:
            rank_zero_warn("python -m pe_lightning test: no metric callback (FIDCallback, PrecisionRecall, DownstreamEvaluation) to evaluate with")
        for cb in evaluators:
            cb.on_population(self.trainer, self, population=self.population, iteration=self.iteration)
        self._flush_metrics(
            {}, step=self.iteration,
            headline=f"[PE] evaluation of the population of iteration {self.iteration} ({len(self.population)} images)",
        )
