"""PNG grids of synthetic samples, to disk and to the logger (synthetic images only)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.grid import class_grid, save_png

__all__ = ["SampleGrid"]


class SampleGrid(PopulationCallback):
    """Writes ``grid_iteration_XXX.png`` (one row per class) and logs it as ``samples/grid``.

    Only synthetic images are ever drawn; private images never reach a grid (docs/design.md
    §3, invariant 5).

    Args:
        every_n_iterations: grid at iterations divisible by this, and at the last one.
        samples_per_class: columns.
        dirpath: output folder (default: ``<model output dir>/grids``).
        upscale: nearest-neighbour upscale factor of the PNG.
    """

    def __init__(self, *, every_n_iterations: int = 1, samples_per_class: int = 10, dirpath: str | None = None, upscale: int = 2) -> None:
        super().__init__()
        if every_n_iterations < 1:
            raise ValueError(f"SampleGrid every_n_iterations must be >= 1, got {every_n_iterations}")
        if samples_per_class < 1:
            raise ValueError(f"SampleGrid samples_per_class must be >= 1, got {samples_per_class}")
        if upscale < 1:
            raise ValueError(f"SampleGrid upscale must be >= 1, got {upscale}")
        self.every_n_iterations = every_n_iterations
        self.samples_per_class = samples_per_class
        self.dirpath = dirpath
        self.upscale = upscale
        self.written: list[Path] = []

    def on_population(self, trainer: pl.Trainer, pl_module, *, population, iteration: int) -> None:
        if iteration % self.every_n_iterations and iteration != pl_module.run.iterations:
            return
        if not trainer.is_global_zero:
            return
        grid = class_grid(
            population.images, population.labels, samples_per_class=self.samples_per_class, num_classes=len(pl_module.run.class_names)
        )
        directory = Path(self.dirpath) if self.dirpath else pl_module.run.output_dir / "grids"
        path = save_png(grid, directory / f"grid_iteration_{iteration:03d}.png", upscale=self.upscale)
        self.written.append(path)
        pl_module.log_output("grids", directory)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key="samples/grid", images=[str(path)], step=iteration, caption=[f"iteration {iteration}"])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                logger.experiment.add_image("samples/grid", grid, global_step=iteration, dataformats="HWC")
