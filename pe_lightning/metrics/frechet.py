"""The Fréchet distance between two Gaussians fitted to features, the one implementation.

``|mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2)``, the FID formula. ``Tr sqrt(S1 S2)``
is the sum of the square roots of the eigenvalues of ``S1 S2`` (real parts), as in
torchmetrics; it needs no matrix square root, so singular covariances (fewer samples than
feature dimensions, common for pixel features) raise no warnings.

:class:`~pe_lightning.callbacks.FIDCallback` (statistics from feature sums, summed over
DDP ranks) and the pixel-space distance of docs/benchmark.md (:func:`pixel_frechet_distance`)
both end in :func:`frechet_distance`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "pixel_frechet_distance", "statistics_from_sums"]


def _check_statistics(mu: np.ndarray, cov: np.ndarray, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.ndim != 1 or cov.shape != (len(mu), len(mu)):
        raise ValueError(
            f"frechet_distance {name}: expected a mean of shape (D,) and a covariance of shape (D, D), "
            f"got {mu.shape} and {cov.shape}"
        )
    return mu, cov


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``, computed in float64.

    Args:
        mu1: mean ``(D,)`` of the first set's features.
        cov1: covariance ``(D, D)`` of the first set's features.
        mu2: mean ``(D,)`` of the second set's features.
        cov2: covariance ``(D, D)`` of the second set's features.

    Returns:
        The squared distance, in squared feature units (>= 0 up to rounding).

    Raises:
        ValueError: a shape is wrong or the two sets have different feature dimensions.
    """
    mu1, cov1 = _check_statistics(mu1, cov1, name="set 1")
    mu2, cov2 = _check_statistics(mu2, cov2, name="set 2")
    if len(mu1) != len(mu2):
        raise ValueError(f"frechet_distance: the sets have different feature dimensions, {len(mu1)} and {len(mu2)}")
    trace_sqrt = np.sqrt(np.linalg.eigvals(cov1 @ cov2).astype(np.complex128)).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of features, in float64.

    Args:
        features: ``(N, D)`` with ``N >= 2``.

    Returns:
        ``(mu, cov)``: ``(D,)`` and ``(D, D)``.

    Raises:
        ValueError: ``features`` is not 2-D or has fewer than 2 rows.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"feature_statistics: expected features of shape (N, D) with N >= 2, got {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def statistics_from_sums(*, total: np.ndarray, outer: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance from running sums (how sharded / streamed features are kept).

    Args:
        total: ``(D,)``, the sum of the feature vectors.
        outer: ``(D, D)``, the sum of their outer products ``x x^T``.
        count: how many feature vectors were summed, ``>= 2``.

    Returns:
        ``(mu, cov)``: ``(D,)`` and ``(D, D)``, float64.

    Raises:
        ValueError: ``count < 2`` or the shapes do not match.
    """
    total = np.asarray(total, dtype=np.float64)
    outer = np.asarray(outer, dtype=np.float64)
    if count < 2:
        raise ValueError(f"statistics_from_sums: count must be >= 2 feature vectors, got {count}")
    if total.ndim != 1 or outer.shape != (len(total), len(total)):
        raise ValueError(f"statistics_from_sums: expected total (D,) and outer (D, D), got {total.shape} and {outer.shape}")
    mu = total / count
    return mu, (outer - count * np.outer(mu, mu)) / (count - 1)


def pixel_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """docs/benchmark.md's pixel-space Fréchet distance: pixels scaled to ``[0, 1]`` as features.

    Args:
        a: images ``(N, H, W, C)`` (uint8, or any numeric array in ``[0, 255]``), ``N >= 2``.
        b: images ``(M, H, W, C)`` of the same per-image shape, ``M >= 2``.

    Returns:
        :func:`frechet_distance` of the flattened, ``/ 255``-scaled pixels.

    Raises:
        ValueError: fewer than 2 images in a set, or the per-image shapes differ.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"pixel_frechet_distance: a and b must be image batches of the same image shape, got {a.shape} and {b.shape}")
    x = a.reshape(len(a), -1).astype(np.float64) / 255.0
    y = b.reshape(len(b), -1).astype(np.float64) / 255.0
    return frechet_distance(*feature_statistics(x), *feature_statistics(y))
