"""Fréchet distance between the synthetic population and a held-out real split."""

from __future__ import annotations

import math
from copy import deepcopy

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.callbacks.fid_reference import FIDReference
from pe_lightning.embeddings.base import Embedding
from pe_lightning.metrics.frechet import frechet_distance, statistics_from_sums
from pe_lightning.private_metrics import check_private_opt_ins, publish_metrics

__all__ = ["FIDCallback", "EmbeddingFeature"]


class EmbeddingFeature(nn.Module):
    """Adapts an :class:`~pe_lightning.embeddings.Embedding` to torchmetrics' feature-extractor interface.

    Input: uint8 ``(N, H, W, C)`` tensors; output: float ``(N, D)``.
    """

    def __init__(self, embedding: Embedding, *, num_features: int, batch_size: int = 1024) -> None:
        super().__init__()
        self.embedding = embedding
        self.num_features = num_features
        self.batch_size = batch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedding.embed(images.cpu(), batch_size=self.batch_size).to(images.device)


class _FrechetFromSums(Metric):
    """Feature sums of real and fake images (summed over DDP ranks), distance from :func:`frechet_distance`.

    The states, ``update`` and ``reset(keep real)`` of torchmetrics' ``FrechetInceptionDistance``
    (``reset_real_features=False``) with a custom feature network, the same float64 arithmetic,
    without importing ``torchmetrics.image``, which imports every image and functional metric and
    with them torchvision, transformers and scipy.signal (start-up, issue 25).

    Args:
        feature: the feature network; uint8 ``(N, H, W, C)`` in, ``(N, feature.num_features)`` out.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, feature: EmbeddingFeature) -> None:
        super().__init__()
        self.feature = feature
        dim = int(feature.num_features)
        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(dim).double(), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_cov_sum", torch.zeros((dim, dim)).double(), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_num_samples", torch.tensor(0).long(), dist_reduce_fx="sum")

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        """Add the features of ``imgs`` (uint8 ``(N, H, W, C)``) to the real or the fake sums."""
        features = self.feature(imgs)
        self.orig_dtype = features.dtype
        features = features.double()
        if features.dim() == 1:
            features = features.unsqueeze(0)
        side = "real" if real else "fake"
        getattr(self, f"{side}_features_sum").add_(features.sum(dim=0))
        getattr(self, f"{side}_features_cov_sum").add_(features.t().mm(features))
        getattr(self, f"{side}_features_num_samples").add_(imgs.shape[0])

    def reset(self) -> None:
        """Reset the fake states; the real ones are kept (set once by :meth:`set_real_statistics`)."""
        kept = {name: deepcopy(getattr(self, name)) for name in
                ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")}
        super().reset()
        for name, value in kept.items():
            setattr(self, name, value)

    def set_real_statistics(self, *, mu: np.ndarray, cov: np.ndarray, count: int, owner: bool) -> None:
        """Real states from ``(mu, cov, count)``: the sums on the ``owner`` rank, zeros on the others (summed on sync)."""
        mu_t = torch.as_tensor(mu, dtype=torch.float64, device=self.real_features_sum.device)
        cov_t = torch.as_tensor(cov, dtype=torch.float64, device=self.real_features_sum.device)
        scale = 1.0 if owner else 0.0
        self.real_features_sum = (mu_t * count * scale).to(self.real_features_sum.dtype)
        self.real_features_cov_sum = ((cov_t * (count - 1) + count * torch.outer(mu_t, mu_t)) * scale).to(
            self.real_features_cov_sum.dtype)
        self.real_features_num_samples = torch.tensor(count if owner else 0, dtype=torch.long,
                                                      device=self.real_features_sum.device)

    def compute(self) -> torch.Tensor:
        """The Fréchet distance of the synced real and fake statistics (a 0-d tensor)."""
        if self.real_features_num_samples < 2 or self.fake_features_num_samples < 2:
            raise RuntimeError("More than one sample is required for both the real and fake distributed to compute FID")

        def stats(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            return statistics_from_sums(
                total=getattr(self, f"{prefix}_features_sum").detach().cpu().double().numpy(),
                outer=getattr(self, f"{prefix}_features_cov_sum").detach().cpu().double().numpy(),
                count=int(getattr(self, f"{prefix}_features_num_samples")),
            )

        return torch.tensor(frechet_distance(*stats("real"), *stats("fake")), dtype=self.orig_dtype)


class FIDCallback(PopulationCallback):
    """Logs ``fid/<name>``, the Fréchet distance of the population's features to real images.

    Features come from any :class:`~pe_lightning.embeddings.Embedding`:
    ``InceptionEmbedding`` gives the standard FID (torch-fidelity's preprocessing; needs its
    weights), ``CleanInceptionEmbedding`` the PE paper's (clean-fid's PIL bicubic resize, after
    a resize to the private ``resolution``; docs/reproduction.md), ``PixelEmbedding`` a
    weight-free Fréchet distance in pixel space (docs/benchmark.md). The real statistics
    are computed once per run (:class:`~pe_lightning.callbacks.fid_reference.FIDReference`,
    sums reduced over DDP ranks) and, with ``cache_reference``, kept on disk and reused;
    the population's metric states are sums, so under DDP each rank adds its share.

    Privacy (docs/privacy.md): with ``real_split='test'`` and a held-out split given
    separately (``test_dir``, ...), the reference images never vote and the value is logged;
    ``reference_dir`` is a folder the user declares public. Against private images
    (``real_split='private'``, or a held-out split carved out of the private data) the value
    is OUTSIDE the DP guarantee: it is written only to the private-side report
    (:func:`~pe_lightning.private_metrics.publish_metrics`), and shown or logged as
    ``fid/<name>_private_not_dp`` only with the opt-ins below; its cached reference
    statistics stay on the private side.

    Args:
        feature: embedding used as the feature network.
        every_n_iterations: compute at iterations divisible by this (0 = the random population included).
        real_split: ``'test'`` or ``'private'``.
        name: metric key suffix.
        max_real: cap on real images used: a seeded uniform subset of this many (never a
            prefix: folders are read class by class); ``None`` = all.
        batch_size: images per feature forward pass.
        reference_dir: a folder of public reference images (read recursively) instead of
            a data-module split, e.g. the CIFAR-10 training images as PNG files.
        subset_seed: seed of the ``max_real`` subset (public).
        cache_reference: keep the reference statistics on disk (public source:
            ``<output root>/fid_reference`` or ``reference_cache_dir``; private images: the
            private side) and reuse them when the source and the feature are unchanged.
        reference_cache_dir: folder for a public source's cached statistics.
        report_private_metrics: print a value computed against private images on the
            console (outside the DP guarantee; warned).
        log_private_metrics: also send it to the loggers and the run summary (needs
            ``report_private_metrics``; outside the DP guarantee; warned).
    """

    evaluates_saved_runs = True  # python -m pe_lightning test evaluates a saved population with it

    def __init__(
        self,
        *,
        feature: Embedding,
        every_n_iterations: int = 1,
        real_split: str = "test",
        name: str = "inception",
        max_real: int | None = None,
        batch_size: int = 1024,
        reference_dir: str | None = None,
        subset_seed: int = 0,
        cache_reference: bool = False,
        reference_cache_dir: str | None = None,
        report_private_metrics: bool = False,
        log_private_metrics: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(feature, Embedding):
            raise TypeError(f"FIDCallback feature must be an Embedding, got {type(feature).__name__}")
        if every_n_iterations < 1:
            raise ValueError(f"FIDCallback every_n_iterations must be >= 1, got {every_n_iterations}")
        self.reference = FIDReference(split=real_split, folder=reference_dir, max_images=max_real, subset_seed=subset_seed,
                                      cache=cache_reference, cache_dir=reference_cache_dir)
        check_private_opt_ins("FIDCallback", report_private_metrics=report_private_metrics, log_private_metrics=log_private_metrics)
        self.report_private_metrics = report_private_metrics
        self.log_private_metrics = log_private_metrics
        self.feature = feature
        self.every_n_iterations = every_n_iterations
        self.real_split = real_split
        self.key = f"fid/{name}" + ("_private_not_dp" if real_split == "private" else "")
        self.max_real = max_real
        self.batch_size = batch_size
        self.metric: _FrechetFromSums | None = None
        self.last_value: float | None = None

    def _update(self, images: np.ndarray, *, real: bool, trainer: pl.Trainer, device: torch.device) -> None:
        shard = images[trainer.global_rank :: trainer.world_size]  # each rank adds its share of the sums
        for start in range(0, len(shard), self.batch_size):
            self.metric.update(torch.from_numpy(shard[start : start + self.batch_size]).to(device), real=real)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.metric is not None:
            return
        self.feature.setup(device=pl_module.device)
        mu, cov, count = self.reference.statistics(trainer, pl_module, self.feature, key=f"FIDCallback {self.key}",
                                                   batch_size=self.batch_size)
        module = EmbeddingFeature(self.feature, num_features=len(mu), batch_size=self.batch_size)
        self.metric = _FrechetFromSums(feature=module).to(pl_module.device)
        self.metric.set_real_statistics(mu=mu, cov=cov, count=count, owner=trainer.global_rank == 0)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_fit_start(trainer, pl_module)  # evaluating a saved run: the same reference statistics

    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        last = iteration == pl_module.run.iterations
        if iteration % self.every_n_iterations and not last:
            return
        self.metric.reset()  # keeps the cached real statistics
        self._update(population.images, real=False, trainer=trainer, device=pl_module.device)
        value = float(self.metric.compute())
        self.last_value = value if math.isfinite(value) else float("nan")
        publish_metrics(self, trainer, pl_module, {self.key: self.last_value})
