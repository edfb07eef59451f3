"""Population snapshots: each iteration's population written to disk atomically."""

from __future__ import annotations

from pathlib import Path

from pe_lightning.callbacks.base import PopulationCallback

__all__ = ["PopulationSnapshot"]


class PopulationSnapshot(PopulationCallback):
    """Writes ``<dirpath>/iteration_XXX/population.npz`` (and optionally a PNG tree).

    Args:
        dirpath: output folder (default: ``<model output dir>/iterations``).
        every_n_iterations: snapshot at iterations divisible by this, and at the last one.
        png: also write ``images/<class>/<index>.png``.
    """

    def __init__(self, *, dirpath: str | None = None, every_n_iterations: int = 1, png: bool = False) -> None:
        super().__init__()
        if every_n_iterations < 1:
            raise ValueError(f"PopulationSnapshot every_n_iterations must be >= 1, got {every_n_iterations}")
        self.dirpath = dirpath
        self.every_n_iterations = every_n_iterations
        self.png = png
        self.written: list[Path] = []

    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        if iteration % self.every_n_iterations and iteration != pl_module.run.iterations:
            return
        if not trainer.is_global_zero:
            return
        root = Path(self.dirpath) if self.dirpath else pl_module.run.output_dir / "iterations"
        out = population.save(root / f"iteration_{iteration:03d}", class_names=list(pl_module.run.class_names), png=self.png)
        self.written.append(out)
        pl_module.log_output("snapshots", root)
