"""Metrics of a synthetic set against real images that are pure functions of features."""

from __future__ import annotations

from pe_lightning.metrics.manifold import (
    count_in_balls,
    kth_neighbor_distances,
    precision_recall_density_coverage,
)

__all__ = ["count_in_balls", "kth_neighbor_distances", "precision_recall_density_coverage"]
