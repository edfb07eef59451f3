"""k-NN precision, recall, density and coverage of the population against a held-out real split."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from typing_extensions import override

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.callbacks.real_split import REAL_SPLITS, real_images
from pe_lightning.embeddings.base import Embedding
from pe_lightning.metrics.manifold import kth_neighbor_distances, precision_recall_density_coverage
from pe_lightning.neighbors import resolve_backend
from pe_lightning.private_metrics import check_private_opt_ins, publish_metrics

__all__ = ["PrecisionRecall"]

_METRICS = ("precision", "recall", "density", "coverage")


def _spread(images: np.ndarray, limit: int | None) -> np.ndarray:
    """At most ``limit`` rows, evenly spaced over the array (a class-sorted split keeps every class)."""
    if limit is None or len(images) <= limit:
        return images
    return images[np.linspace(0, len(images) - 1, limit).round().astype(np.int64)]


class PrecisionRecall(PopulationCallback):
    """Logs ``pr/precision``, ``pr/recall``, ``pr/density`` and ``pr/coverage`` of the population.

    Precision and recall are Kynkäänniemi et al. (2019)'s k-NN manifold estimates, density and
    coverage Naeem et al. (2020)'s (:mod:`pe_lightning.metrics.manifold`), in the feature space of
    any :class:`~pe_lightning.embeddings.Embedding`. The real features and their k-NN radii are
    computed once per fit; nearest neighbours use the project's search backends and nothing
    builds an ``N x N`` matrix. Rank 0 computes, the values are broadcast, every rank logs them.

    Privacy (docs/privacy.md): with ``real_split='test'`` and a held-out split given
    separately, the reference images never vote and the values are logged. Against private
    images (``real_split='private'``, or a held-out split carved out of the private data)
    they are OUTSIDE the DP guarantee: written only to the private-side report
    (:func:`~pe_lightning.private_metrics.publish_metrics`), shown or logged (keys ending
    in ``_private_not_dp``) only with the opt-ins below.

    Args:
        feature: embedding whose features the metrics are computed in.
        k: neighbour rank that sets each ball's radius (5, Naeem et al.'s choice).
        every_n_iterations: compute at iterations divisible by this (and the last one);
            iteration 0 (the RANDOM population) is included.
        real_split: ``'test'`` or ``'private'``.
        max_real: use at most this many real images, evenly spaced over the split
            (``None``: all).
        max_synthetic: use at most this many synthetic images, evenly spaced over the
            population (which is grouped by class), ``None``: all.
        deduplicate: drop exact duplicate synthetic images first. A population that selected
            a parent more than ``k`` times holds copies whose k-NN radius is 0, which shrinks
            the fake manifold (recall) to those points; ``False`` keeps the papers' definition.
        search_backend: ``'auto'``, ``'faiss'`` or ``'torch'``.
        batch_size: images per embedding forward pass.
        report_private_metrics: print values computed against private images on the
            console (outside the DP guarantee; warned).
        log_private_metrics: also send them to the loggers and the run summary (needs
            ``report_private_metrics``; outside the DP guarantee; warned).
    """

    evaluates_saved_runs = True  # python -m pe_lightning test evaluates a saved population with it

    def __init__(
        self,
        *,
        feature: Embedding,
        k: int = 5,
        every_n_iterations: int = 1,
        real_split: str = "test",
        max_real: int | None = None,
        max_synthetic: int | None = None,
        deduplicate: bool = False,
        search_backend: str = "auto",
        batch_size: int = 1024,
        report_private_metrics: bool = False,
        log_private_metrics: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(feature, Embedding):
            raise TypeError(f"PrecisionRecall feature must be an Embedding, got {type(feature).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"PrecisionRecall k must be an int >= 1, got {k!r}")
        if every_n_iterations < 1:
            raise ValueError(f"PrecisionRecall every_n_iterations must be >= 1, got {every_n_iterations}")
        if real_split not in REAL_SPLITS:
            raise ValueError(f"PrecisionRecall real_split must be one of {REAL_SPLITS}, got {real_split!r}")
        for name, value in (("max_real", max_real), ("max_synthetic", max_synthetic)):
            if value is not None and value <= k:
                raise ValueError(f"PrecisionRecall {name} must be None or > k={k}, got {value}")
        if batch_size < 1:
            raise ValueError(f"PrecisionRecall batch_size must be >= 1, got {batch_size}")
        resolve_backend(search_backend)
        check_private_opt_ins("PrecisionRecall", report_private_metrics=report_private_metrics,
                              log_private_metrics=log_private_metrics)
        self.report_private_metrics = report_private_metrics
        self.log_private_metrics = log_private_metrics
        self.feature = feature
        self.k = k
        self.every_n_iterations = every_n_iterations
        self.real_split = real_split
        self.max_real = max_real
        self.max_synthetic = max_synthetic
        self.deduplicate = bool(deduplicate)
        self.search_backend = search_backend
        self.batch_size = batch_size
        suffix = "_private_not_dp" if real_split == "private" else ""
        self.keys = {name: f"pr/{name}{suffix}" for name in _METRICS}
        self.last_values: dict[str, float] | None = None
        self._real_features: torch.Tensor | None = None
        self._real_radii: torch.Tensor | None = None

    def _should_skip(self, pl_module: pl.LightningModule, iteration: int) -> bool:
        return bool(iteration % self.every_n_iterations) and iteration != pl_module.run.iterations

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._real_features is not None or not trainer.is_global_zero:
            return
        real = _spread(real_images(trainer, split=self.real_split, key=f"PrecisionRecall {self.keys['precision']}",
                                   min_images=self.k + 1), self.max_real)
        self.feature.setup(device=pl_module.device)
        self._real_features = self.feature.embed(real, batch_size=self.batch_size).to(pl_module.device)
        self._real_radii = kth_neighbor_distances(self._real_features, k=self.k, backend=self.search_backend)

    def _compute(self, images: np.ndarray, device: torch.device) -> dict[str, float]:
        if self.deduplicate:
            _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
            images = images[np.sort(first)]
        images = _spread(images, self.max_synthetic)
        if len(images) <= self.k:
            raise ValueError(f"PrecisionRecall needs more than k={self.k} synthetic images, got {len(images)}")
        fake = self.feature.embed(images, batch_size=self.batch_size).to(device)
        return precision_recall_density_coverage(
            self._real_features, fake, k=self.k, backend=self.search_backend, real_radii=self._real_radii
        )

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_fit_start(trainer, pl_module)  # evaluating a saved run: the same reference features

    @override
    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        if self._should_skip(pl_module, iteration):
            return
        values = self._compute(population.images, pl_module.device) if trainer.is_global_zero else None
        values = trainer.strategy.broadcast(values, src=0)
        self.last_values = dict(values)
        publish_metrics(self, trainer, pl_module, {self.keys[name]: values[name] for name in _METRICS})
