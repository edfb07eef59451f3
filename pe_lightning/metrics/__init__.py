"""Metrics of a synthetic set against real images that are pure functions of features."""

from __future__ import annotations

from pe_lightning.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    pixel_frechet_distance,
    statistics_from_sums,
)
from pe_lightning.metrics.manifold import (
    count_in_balls,
    kth_neighbor_distances,
    precision_recall_density_coverage,
)

__all__ = [
    "count_in_balls",
    "feature_statistics",
    "frechet_distance",
    "kth_neighbor_distances",
    "pixel_frechet_distance",
    "precision_recall_density_coverage",
    "statistics_from_sums",
]
