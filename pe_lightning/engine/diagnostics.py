"""Per-iteration diagnostics of the vote, computed from the DP release only (docs/diagnostics.md).

Everything here reads the *noisy* histogram that :func:`pe_lightning.engine.release.release_and_select`
released, the selected parents (post-processing of it) and public configuration (the class
of each synthetic sample, the threshold ``H``, the noise std ``sigma``). No raw vote count,
no private embedding or label enters, so the diagnostics are post-processing of the DP
release: they can be logged and printed without extra privacy cost
(``tests/test_diagnostics.py`` checks that two neighbouring private sets with the same
noise give diagnostics that differ only where their released counts differ).

What they tell (per class ``c`` with ``B_c`` synthetic samples, i.e. histogram bins):

- ``bins above threshold``: bins whose noisy count exceeds ``H``: the survivors that can get children.
- ``expected noise-only survivors``: ``B_c * P(N(0, sigma^2) > H) = B_c * Q(H / sigma)``, how
  many of those a histogram without a single vote would have (all bins empty). When it is
  close to the bins above threshold, selection follows noise, not votes.
- ``unique parents``: distinct selected parents (min and mean over classes): how many
  different images the next population descends from.
- ``top-parent share``: the largest share of a class's selection weight on one bin (max and
  mean over classes); near 1, one image takes the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["VoteDiagnostics", "noise_only_survivors", "vote_diagnostics"]


def noise_only_survivors(*, num_bins: int | np.ndarray, threshold: float, noise_multiplier: float) -> float | np.ndarray:
    """Expected bins of an all-zero histogram whose noisy count exceeds ``threshold``.

    ``num_bins * Q(threshold / noise_multiplier)`` with ``Q`` the standard normal upper
    tail; with ``noise_multiplier = 0`` (no noise) it is 0 (no bin can exceed a threshold
    >= 0 without votes).

    Args:
        num_bins: bins (synthetic samples) per class; an int or an array.
        threshold: ``H``, in votes.
        noise_multiplier: ``sigma``, the noise std per bin, in votes.
    """
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if noise_multiplier == 0:
        tail = 0.0 if threshold >= 0 else 1.0
    else:
        tail = 0.5 * math.erfc(threshold / (noise_multiplier * math.sqrt(2.0)))
    return num_bins * tail


@dataclass(frozen=True)
class VoteDiagnostics:
    """The diagnostics of one release, per class (arrays of length ``num_classes``).

    Attributes:
        bins: synthetic samples (histogram bins) per class.
        above_threshold: bins whose noisy count exceeds the threshold.
        unique_parents: distinct selected parents.
        top_share: largest selection weight / the class's total (0 when all weights are 0).
        noise_only: expected noise-only survivors, ``bins * Q(H / sigma)``.
    """

    bins: np.ndarray
    above_threshold: np.ndarray
    unique_parents: np.ndarray
    top_share: np.ndarray
    noise_only: np.ndarray

    def metrics(self, prefix: str = "diag/") -> dict[str, float]:
        """Scalar summaries for the loggers (sums and means over classes; min/max where the issue is the worst class)."""
        above = self.above_threshold.astype(float)
        return {
            f"{prefix}bins_above_threshold": float(above.sum()),
            f"{prefix}bins_above_threshold_min_class": float(above.min()),
            f"{prefix}unique_parents_min": float(self.unique_parents.min()),
            f"{prefix}unique_parents_mean": float(self.unique_parents.mean()),
            f"{prefix}top_parent_share_max": float(self.top_share.max()),
            f"{prefix}top_parent_share_mean": float(self.top_share.mean()),
            f"{prefix}noise_only_survivors_per_class": float(self.noise_only.mean()),
            f"{prefix}noise_share_of_survivors": float(self.noise_only.sum() / max(above.sum(), 1.0)),
        }


def vote_diagnostics(
    *, noisy_counts: torch.Tensor, labels: np.ndarray | torch.Tensor, threshold: float, noise_multiplier: float,
    parents: np.ndarray | torch.Tensor, num_classes: int | None = None,
) -> VoteDiagnostics:
    """Diagnostics of one iteration's release (post-processing: no privacy cost).

    Args:
        noisy_counts: float ``(N,)``: the released noisy histogram (votes + noise).
        labels: int ``(N,)``: public class of each synthetic sample.
        threshold: ``H`` (votes).
        noise_multiplier: ``sigma`` of the release (noise std per bin, votes).
        parents: int ``(P,)``: the selected parents (indices into the population).
        num_classes: classes (default: ``max(labels) + 1``).

    Returns:
        :class:`VoteDiagnostics`.
    """
    noisy = torch.as_tensor(noisy_counts).detach().cpu().to(torch.float64).numpy()
    labels = torch.as_tensor(labels).detach().cpu().numpy().astype(np.int64)
    parents = torch.as_tensor(parents).detach().cpu().numpy().astype(np.int64)
    if noisy.ndim != 1 or noisy.shape != labels.shape:
        raise ValueError(f"noisy_counts and labels must both be (N,), got {noisy.shape} and {labels.shape}")
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    bins = np.bincount(labels, minlength=classes)
    above = np.bincount(labels[noisy > threshold], minlength=classes)
    unique = np.bincount(labels[np.unique(parents)], minlength=classes)
    weights = np.clip(noisy - threshold, 0.0, None)
    totals = np.bincount(labels, weights=weights, minlength=classes)
    tops = np.zeros(classes)
    np.maximum.at(tops, labels, weights)
    share = np.divide(tops, totals, out=np.zeros(classes), where=totals > 0)
    noise_only = np.asarray(noise_only_survivors(num_bins=bins, threshold=threshold, noise_multiplier=noise_multiplier), dtype=float)
    return VoteDiagnostics(bins=bins, above_threshold=above, unique_parents=unique, top_share=share, noise_only=noise_only)
