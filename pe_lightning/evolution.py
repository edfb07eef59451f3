"""The Private Evolution LightningModule: one epoch = one PE iteration (DESIGN.md section 2).

Per iteration ``t`` (epoch ``t - 1``):

* ``on_train_epoch_start``: lookahead. Each synthetic sample's embedding is the mean
  embedding of ``lookahead_degree`` variations of it (or of itself when 0).
* ``training_step``: each batch of private sample indices votes for the nearest
  synthetic sample of its class; the vote is stored per private index.
* ``on_train_epoch_end``: votes are gathered across ranks, the histogram (L2
  sensitivity 1) gets Gaussian noise with std ``noise_multiplier`` from a generator
  seeded by ``(seed, t)`` (identical on every rank), is thresholded, parents are
  drawn ∝ the noisy counts within each class, and their variations are the new
  population. Only the histogram touches private data; the rest is post-processing.

The population is checkpoint state; each completed iteration also counts as one
optimizer-free *step*, so ``ModelCheckpoint`` saves and ``max_steps`` stops as usual.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.embeddings.base import Embedding
from pe_lightning.population import Population
from pe_lightning.seeding import make_generator
from pe_lightning.voting import (
    add_gaussian_noise,
    apply_threshold,
    assign_votes,
    resolve_backend,
    select_parents,
    vote_histogram,
)

__all__ = ["PrivateEvolution", "NotPrivateWarning"]

# Nothing is trained by gradient: Lightning's "no optimizer" notice is expected, not a problem.
warnings.filterwarnings("ignore", message=r".*configure_optimizers.* returned `None`", category=UserWarning)


class NotPrivateWarning(UserWarning):
    """The run uses ``noise_multiplier=0``: its output has no privacy guarantee."""


def _schedule(name: str, value: float | Sequence[float], iterations: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * iterations
    values = [float(v) for v in value]
    if len(values) != iterations:
        raise ValueError(f"{name} must have one entry per iteration (iterations={iterations}), got {len(values)} entries")
    return values


class PrivateEvolution(pl.LightningModule):
    """Private Evolution as a LightningModule.

    Args:
        api: the foundation-model API (RANDOM and VARIATION).
        embedding: embedding used for voting (private and synthetic).
        iterations: ``T``, the number of PE iterations (= ``trainer.max_epochs``).
        num_samples_per_class: synthetic samples per class, an int (uniform) or one per
            class. Public configuration: it must not come from private data.
        variation_degrees: the variation degree of each iteration (a list of length
            ``T``) or one value for all; ranges are checked by ``api.validate_degree``.
        lookahead_degree: ``k``, variations averaged per synthetic embedding (0: none).
        threshold: ``H``, subtracted from the noisy counts (then clipped at 0).
        num_nearest_neighbors: votes per private sample, each weighing ``1/sqrt(k')``
            (L2 sensitivity stays 1).
        noise_multiplier: ``sigma``, the noise std per histogram bin. ``None`` means
            "set by calibration" (the ``PrivacyAccountant`` callback); the run refuses
            to start while it is ``None``. ``0`` means *not private* and is warned about.
        search_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        counts_from_private_labels: opt-in: split the total synthetic count across
            classes ∝ the *private* label counts. This leaks the label distribution
            outside the DP guarantee and is warned about.
        seed: seeds every random stream (via :func:`pe_lightning.seeding.make_generator`).
        api_batch_size: images per API call.
        embedding_batch_size: images per embedding forward pass.
        output_dir: where the final population is written (default:
            ``<trainer.default_root_dir>/pe_output``).
        save_png: also write the final population as a PNG tree.
    """

    def __init__(
        self,
        *,
        api: ImageAPI,
        embedding: Embedding,
        iterations: int,
        num_samples_per_class: int | list[int] = 200,
        variation_degrees: float | list[float] = 0.5,
        lookahead_degree: int = 8,
        threshold: float = 0.0,
        num_nearest_neighbors: int = 1,
        noise_multiplier: float | None = None,
        search_backend: str = "auto",
        counts_from_private_labels: bool = False,
        seed: int = 0,
        api_batch_size: int = 4096,
        embedding_batch_size: int = 2048,
        output_dir: str | None = None,
        save_png: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(api, ImageAPI):
            raise TypeError(f"api must be an ImageAPI, got {type(api).__name__}")
        if not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be an Embedding, got {type(embedding).__name__}")
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.variation_degrees = _schedule("variation_degrees", variation_degrees, iterations)
        for t, d in enumerate(self.variation_degrees, start=1):
            try:
                api.validate_degree(d)
            except ValueError as err:
                raise ValueError(f"variation_degrees[{t - 1}] (iteration {t}): {err}") from err
        counts = [num_samples_per_class] if isinstance(num_samples_per_class, int) else list(num_samples_per_class)
        if not counts or any((not isinstance(c, int)) or c < 1 for c in counts):
            raise ValueError(f"num_samples_per_class must be an int >= 1 or a list of ints >= 1, got {num_samples_per_class!r}")
        if lookahead_degree < 0:
            raise ValueError(f"lookahead_degree must be >= 0, got {lookahead_degree}")
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
        if num_nearest_neighbors < 1:
            raise ValueError(f"num_nearest_neighbors must be >= 1, got {num_nearest_neighbors}")
        if noise_multiplier is not None and not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be None, 0 (not private) or > 0, got {noise_multiplier}")
        if min(api_batch_size, embedding_batch_size) < 1:
            raise ValueError("api_batch_size and embedding_batch_size must be >= 1")
        resolve_backend(search_backend)

        self.save_hyperparameters(ignore=["api", "embedding"])
        self.automatic_optimization = False
        self.api = api
        self.embedding = embedding
        self.iterations = iterations
        self._configured_counts = counts
        self.lookahead_degree = lookahead_degree
        self.threshold = float(threshold)
        self.num_nearest_neighbors = num_nearest_neighbors
        self.noise_multiplier = noise_multiplier
        self.search_backend = search_backend
        self.counts_from_private_labels = counts_from_private_labels
        self.seed = seed
        self.api_batch_size = api_batch_size
        self.embedding_batch_size = embedding_batch_size
        self.output_dir = output_dir
        self.save_png = save_png

        self.population: Population | None = None
        self.iteration = 0  # number of completed PE iterations
        self.class_names: list[str] = []
        self.num_per_class: list[int] = []
        self.final_population_dir: Path | None = None
        self._private_embeddings: torch.Tensor | None = None
        self._private_labels: torch.Tensor | None = None
        self._synthetic_embeddings: torch.Tensor | None = None
        self._synthetic_labels: torch.Tensor | None = None
        self._assignments: torch.Tensor | None = None
        self._pending_metrics: dict[str, float] = {}
        self._iteration_start = 0.0
        self._timings: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------------ set-up
    def configure_optimizers(self):  # noqa: D102 - nothing is trained by gradient
        return None

    def _datamodule(self) -> PrivateImageDataModule:
        dm = getattr(self.trainer, "datamodule", None)
        if not isinstance(dm, PrivateImageDataModule):
            raise TypeError(
                "PrivateEvolution needs a PrivateImageDataModule passed as trainer.fit(model, datamodule=...); "
                f"got {type(dm).__name__}"
            )
        return dm

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        trainer = self.trainer
        if trainer.max_epochs != self.iterations:
            raise ValueError(
                f"trainer.max_epochs ({trainer.max_epochs}) must equal model iterations ({self.iterations}): "
                "one epoch is one PE iteration"
            )
        dm = self._datamodule()
        dm.setup("fit")
        self.class_names = list(dm.class_names)
        num_classes = len(self.class_names)
        present = np.bincount(dm.private_labels, minlength=num_classes)
        empty = [self.class_names[c] for c in range(num_classes) if present[c] == 0]
        if empty:
            raise ValueError(
                f"classes {empty} have no private samples; remove them from the data module's classes "
                "(PE cannot evolve a class nobody votes for)"
            )
        counts = self._configured_counts
        if len(counts) == 1:
            counts = counts * num_classes
        if len(counts) != num_classes:
            raise ValueError(
                f"num_samples_per_class has {len(counts)} entries but the data has {num_classes} classes {self.class_names}"
            )
        if self.counts_from_private_labels:
            rank_zero_warn(
                "counts_from_private_labels=True: synthetic class sizes follow the PRIVATE label counts. "
                "This leaks the private label distribution and is NOT covered by the DP guarantee.",
                category=UserWarning,
            )
            total = sum(counts)
            exact = present / present.sum() * total
            counts = np.floor(exact).astype(int)
            for c in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
                counts[c] += 1
            counts = [max(int(c), 1) for c in counts]
        self.num_per_class = [int(c) for c in counts]
        for name, n in zip(self.class_names, self.num_per_class):
            if n < self.num_nearest_neighbors:
                raise ValueError(
                    f"class {name!r} gets {n} synthetic samples, fewer than num_nearest_neighbors={self.num_nearest_neighbors}"
                )

    def on_fit_start(self) -> None:
        if self.noise_multiplier is None:
            raise RuntimeError(
                "PrivateEvolution.noise_multiplier is not set. Add the PrivacyAccountant callback "
                "(pe_lightning.callbacks.PrivacyAccountant with epsilon and delta), which calibrates it, or set "
                "model.noise_multiplier explicitly (0 means NOT private)."
            )
        if self.noise_multiplier == 0:
            msg = "noise_multiplier=0: this run is NOT differentially private; its synthetic data may reveal private images."
            warnings.warn(msg, NotPrivateWarning, stacklevel=2)
            rank_zero_info("!" * 80 + "\n" + msg + "\n" + "!" * 80)
        self._iteration_start = time.perf_counter()
        dm = self._datamodule()
        self.api.setup(device=self.device, class_names=self.class_names)
        self.embedding.setup(device=self.device)
        # Each private image is embedded once per run.
        self._private_embeddings = self._embed(dm.private_images).to(self.device)
        if not torch.isfinite(self._private_embeddings).all():
            raise ValueError("the embedding produced NaN/inf for some private images")
        self._private_labels = torch.from_numpy(dm.private_labels).to(self.device)
        if self.population is None:
            labels = np.repeat(np.arange(len(self.num_per_class), dtype=np.int64), self.num_per_class)
            self.population = self._random(labels)
            self.iteration = 0
            self._publish_population(iteration=0)
        else:  # resumed from a checkpoint: the set-up time belongs to no iteration
            self._timings.clear()

    # -------------------------------------------------------------- API helpers
    @contextmanager
    def _timed(self, name: str):
        """Adds the wall time of the block to this iteration's ``time/<name>_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._timings[name] += time.perf_counter() - start

    def _embed(self, images: np.ndarray) -> torch.Tensor:
        with self._timed("embedding"):
            return self.embedding.embed(images, batch_size=self.embedding_batch_size).float()

    def _chunks(self, n: int):
        for i, start in enumerate(range(0, n, self.api_batch_size)):
            yield i, slice(start, min(start + self.api_batch_size, n))

    def _random(self, labels: np.ndarray) -> Population:
        with self._timed("api"):
            outs = [
                self.api.random(labels=labels[sl], generator=make_generator(self.seed, 0, "random", i))
                for i, sl in self._chunks(len(labels))
            ]
        out = _concat_outputs(outs)
        return Population(images=out.images, labels=labels, conditions=out.conditions)

    def _variation(self, population: Population, *, iteration: int, stream: str, repeat: int = 0) -> APIOutput:
        degree = self.variation_degrees[iteration - 1]
        outs = []
        with self._timed("api"):
            for i, sl in self._chunks(len(population)):
                outs.append(
                    self.api.variation(
                        images=population.images[sl],
                        conditions={k: v[sl] for k, v in population.conditions.items()},
                        labels=population.labels[sl],
                        degree=degree,
                        generator=make_generator(self.seed, iteration, stream, repeat, i),
                    )
                )
        return _concat_outputs(outs)

    # ---------------------------------------------------------------- the loop
    def on_train_epoch_start(self) -> None:
        if self.iteration != self.current_epoch:
            raise RuntimeError(f"PE iteration counter ({self.iteration}) and epoch ({self.current_epoch}) disagree")
        self._iteration_start = time.perf_counter()
        t = self.iteration + 1
        pop = self.population
        if self.lookahead_degree == 0:
            emb = self._embed(pop.images)
        else:
            emb = None
            for r in range(self.lookahead_degree):
                e = self._embed(self._variation(pop, iteration=t, stream="lookahead", repeat=r).images)
                emb = e if emb is None else emb + e
            emb = emb / self.lookahead_degree
        if not torch.isfinite(emb).all():
            raise ValueError("the embedding produced NaN/inf for some synthetic images")
        self._synthetic_embeddings = emb.to(self.device)
        self._synthetic_labels = torch.from_numpy(pop.labels).to(self.device)
        n_private = len(self._private_embeddings)
        self._assignments = torch.full((n_private, self.num_nearest_neighbors), -1, dtype=torch.int64, device=self.device)

    def training_step(self, batch, batch_idx: int) -> None:
        (indices,) = batch if isinstance(batch, (list, tuple)) else (batch,)
        indices = indices.to(self.device)
        # One row per private index: a sample seen twice overwrites its own vote, never adds.
        with self._timed("voting"):
            self._assignments[indices] = assign_votes(
                private_embeddings=self._private_embeddings[indices],
                private_labels=self._private_labels[indices],
                synthetic_embeddings=self._synthetic_embeddings,
                synthetic_labels=self._synthetic_labels,
                k=self.num_nearest_neighbors,
                backend=self.search_backend,
            )
        return None

    def gather_assignments(self) -> torch.Tensor:
        """Votes of all private samples, combined across ranks (max of -1 and the index)."""
        assignments = self._assignments
        if self.trainer.world_size > 1:
            gathered = self.all_gather(assignments)
            assignments = gathered.max(dim=0).values
        missing = int((assignments < 0).any(dim=1).sum())
        if missing:
            raise RuntimeError(f"{missing} private samples did not vote in iteration {self.iteration + 1}")
        return assignments

    def on_train_epoch_end(self) -> None:
        t = self.iteration + 1
        pop = self.population
        assignments = self.gather_assignments()
        histogram = vote_histogram(assignments.cpu(), num_synthetic=len(pop))
        # Noise is drawn once, after the cross-rank combination, from a generator seeded by
        # (seed, t): every rank draws the same numbers.
        noisy = add_gaussian_noise(histogram, noise_multiplier=float(self.noise_multiplier), generator=make_generator(self.seed, t, "noise"))
        del histogram  # only noisy quantities leave this function
        weights = apply_threshold(noisy, threshold=self.threshold)
        labels = torch.from_numpy(pop.labels)
        parents = select_parents(
            weights=weights,
            labels=labels,
            num_per_class=self.num_per_class,
            generator=make_generator(self.seed, t, "selection"),
            class_names=self.class_names,
        ).numpy()
        selected = pop.take(parents)
        out = self._variation(selected, iteration=t, stream="variation")
        self.population = Population(images=out.images, labels=selected.labels, conditions=out.conditions, parents=parents)
        self.iteration = t
        self._synthetic_embeddings = None
        self._assignments = None
        self._count_iteration_as_step()
        self.log_iteration_metrics(
            {
                "pe/selected_unique": float(len(np.unique(parents))),
                "pe/noisy_count_max": float(noisy.max()),
                "pe/nonzero_after_threshold": float((weights > 0).sum()),
                "pe/variation_degree": self.variation_degrees[t - 1],
            }
        )
        self._publish_population(iteration=t)

    def _count_iteration_as_step(self) -> None:
        # No optimizer ever steps here, so Lightning's global_step would stay 0 and
        # ModelCheckpoint would never save. Count each completed PE iteration as one step.
        loop = self.trainer.fit_loop.epoch_loop.manual_optimization
        loop.optim_step_progress.increment_ready()
        loop.optim_step_progress.increment_completed()

    # ------------------------------------------------------------- publishing
    def log_iteration_metrics(self, metrics: dict[str, float]) -> None:
        """Queue metrics for the current iteration (logged at ``step=iteration``)."""
        self._pending_metrics.update({k: float(v) for k, v in metrics.items()})

    def _publish_population(self, *, iteration: int) -> None:
        for cb in self.trainer.callbacks:
            if isinstance(cb, PopulationCallback):
                cb.on_population(self.trainer, self, population=self.population, iteration=iteration)
        metrics = {"pe/iteration": float(iteration), "time/iteration_s": time.perf_counter() - self._iteration_start}
        metrics.update({f"time/{k}_s": v for k, v in self._timings.items()})
        self._timings.clear()
        metrics.update(self._pending_metrics)
        self._pending_metrics = {}
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=iteration)
        self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        parts = [f"{k}={v:.4g}" for k, v in metrics.items() if k != "pe/iteration"]
        rank_zero_info(f"[PE] iteration {iteration}/{self.iterations} | " + " | ".join(parts))

    @property
    def resolved_output_dir(self) -> Path:
        """``output_dir``, or ``<trainer.default_root_dir>/pe_output`` when unset."""
        if self.output_dir:
            return Path(self.output_dir)
        return Path(self.trainer.default_root_dir) / "pe_output"

    def on_train_end(self) -> None:
        self.final_population_dir = self.resolved_output_dir / "final"
        if self.trainer.is_global_zero:
            self.population.save(self.final_population_dir, class_names=self.class_names, png=self.save_png)
            rank_zero_info(
                f"[PE] final population ({len(self.population)} synthetic images, iteration {self.iteration}) written to "
                f"{self.final_population_dir / 'population.npz'}"
                + (f" and {self.final_population_dir / 'images'}/<class>/<index>.png" if self.save_png else "")
            )

    # ------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["private_evolution"] = {
            "population": self.population.state_dict() if self.population is not None else None,
            "iteration": self.iteration,
            "noise_multiplier": self.noise_multiplier,
            "num_per_class": list(self.num_per_class),
            "class_names": list(self.class_names),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("private_evolution")
        if state is None:
            raise ValueError("checkpoint has no 'private_evolution' state: it was not written by PrivateEvolution")
        self.population = Population.from_state_dict(state["population"]) if state["population"] is not None else None
        self.iteration = int(state["iteration"])
        # A noise multiplier set for this run (by the PrivacyAccountant's calibration, which
        # runs before restoring) wins; the accountant's ledger records what is actually used.
        if self.noise_multiplier is None and state["noise_multiplier"] is not None:
            self.noise_multiplier = float(state["noise_multiplier"])


def _concat_outputs(outs: list[APIOutput]) -> APIOutput:
    if len(outs) == 1:
        return outs[0]
    keys = outs[0].conditions.keys()
    return APIOutput(
        images=np.concatenate([o.images for o in outs]),
        conditions={k: np.concatenate([o.conditions[k] for o in outs]) for k in keys},
    )
