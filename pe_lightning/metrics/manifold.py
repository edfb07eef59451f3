"""k-NN manifold metrics of a generated set against a real one, in any feature space.

* **Precision / recall** (Kynkäänniemi, Karras, Laine, Lehtinen, Aila, *Improved Precision
  and Recall Metric for Assessing Generative Models*, NeurIPS 2019): the real manifold is
  the union of the balls ``B(r_i, NND_k(r_i))`` around the real features, each with the
  Euclidean distance to its ``k``-th nearest other real feature as radius; precision is
  the fraction of fake features inside it, recall the fraction of real features inside
  the fake manifold (built the same way from the fakes).
* **Density / coverage** (Naeem, Oh, Uh, Choi, Yoo, *Reliable Fidelity and Diversity
  Metrics for Generative Models*, ICML 2020): density is the mean number of real balls
  that contain a fake feature, divided by ``k``; coverage is the fraction of real balls
  that contain at least one fake feature.

Balls are closed (a point at exactly the radius is inside), as in the papers; distances and
ball tests are computed in float64, so integer test cases are exact. Nearest neighbours come from :func:`pe_lightning.neighbors.nearest_neighbors` (faiss or torch);
the ball-membership counts are blocked matrix products whose ``(rows, N)`` blocks stay under
``max_chunk_bytes``, so no ``M x N`` distance matrix is ever built.
"""

from __future__ import annotations

import torch

from pe_lightning.neighbors import DEFAULT_MAX_CHUNK_BYTES, nearest_neighbors, rows_per_chunk

__all__ = ["count_in_balls", "kth_neighbor_distances", "precision_recall_density_coverage"]


def _check_features(x: torch.Tensor, *, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape (N, D), got {getattr(x, 'shape', type(x).__name__)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x.double()


def _distances_to(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor, *, rows: int = 4096) -> torch.Tensor:
    """Euclidean ``||a_i - b[index_i]||`` for each row ``i``, float64 ``(N,)``, a block of rows at a time."""
    index = index.to(a.device)
    out = torch.empty(len(a), dtype=torch.float64, device=a.device)
    for start in range(0, len(a), rows):
        out[start: start + rows] = torch.linalg.vector_norm(a[start: start + rows] - b[index[start: start + rows]], dim=1)
    return out


def kth_neighbor_distances(features: torch.Tensor, *, k: int, backend: str = "auto") -> torch.Tensor:
    """Euclidean distance from each feature to its ``k``-th nearest *other* feature.

    Args:
        features: float ``(N, D)`` with ``N > k``.
        k: neighbour rank, ``>= 1``.
        backend: search backend of :func:`~pe_lightning.neighbors.nearest_neighbors`.

    Returns:
        float64 ``(N,)`` radii (feature-space units). A duplicate of a point counts as a
        neighbour at distance 0, as in the reference implementations.
    """
    features = _check_features(features, name="features")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if len(features) <= k:
        raise ValueError(f"k-th neighbour distances need more than k={k} features, got {len(features)}")
    # The point itself is its own nearest neighbour (distance 0), so the (k+1)-th nearest
    # of the set including it is the k-th nearest other point, whichever of equal points comes first.
    idx = nearest_neighbors(features, features, k=k + 1, backend=backend)
    return _distances_to(features, features, idx[:, k])


def count_in_balls(
    points: torch.Tensor,
    centres: torch.Tensor,
    radii: torch.Tensor,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """How many of the closed balls ``B(centres[i], radii[i])`` contain each point.

    Args:
        points: float ``(M, D)``.
        centres: float ``(N, D)``.
        radii: float ``(N,)``, Euclidean, ``>= 0``.
        max_chunk_bytes: bound on each ``(rows, N)`` float64 block of squared distances.

    Returns:
        int64 ``(M,)`` counts in ``[0, N]``.
    """
    points = _check_features(points, name="points")
    centres = _check_features(centres, name="centres").to(points.device)
    radii = radii.to(points.device, torch.float64)
    if points.shape[1] != centres.shape[1]:
        raise ValueError(f"points (M, D) and centres (N, D) must share D, got {tuple(points.shape)} and {tuple(centres.shape)}")
    if radii.shape != (len(centres),) or bool((radii < 0).any()):
        raise ValueError(f"radii must be ({len(centres)},) and >= 0, got {tuple(radii.shape)}")
    rows = rows_per_chunk(len(centres), 4096, max_chunk_bytes // 2)  # float64: 8 bytes per entry
    # ||p - c||^2 <= r^2  <=>  ||p||^2 - 2 p.c <= r^2 - ||c||^2
    bound = (radii.square() - (centres * centres).sum(1))[None, :]
    out = torch.empty(len(points), dtype=torch.int64, device=points.device)
    for start in range(0, len(points), rows):
        p = points[start: start + rows]
        lhs = torch.addmm((p * p).sum(1, keepdim=True), p, centres.T, alpha=-2.0)
        out[start: start + rows] = (lhs <= bound).sum(1)
        del lhs
    return out


def precision_recall_density_coverage(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    k: int = 5,
    backend: str = "auto",
    real_radii: torch.Tensor | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> dict[str, float]:
    """k-NN precision, recall, density and coverage of ``fake`` against ``real``.

    Args:
        real: float ``(N, D)`` real features, ``N > k``.
        fake: float ``(M, D)`` generated features, ``M > k``.
        k: the neighbour rank that sets each ball's radius (5 in Naeem et al.; 3 in
            Kynkäänniemi et al.).
        backend: search backend of :func:`~pe_lightning.neighbors.nearest_neighbors`.
        real_radii: :func:`kth_neighbor_distances` of ``real`` with this ``k``, when
            already computed (a callback caches them).
        max_chunk_bytes: see :func:`count_in_balls`.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``: fractions in ``[0, 1]``, except
        density, a mean count / ``k`` in ``[0, N / k]`` (about 1 when fake matches real).
    """
    real = _check_features(real, name="real features")
    fake = _check_features(fake, name="fake features").to(real.device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real (N, D) and fake (M, D) features must share D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if real_radii is None:
        real_radii = kth_neighbor_distances(real, k=k, backend=backend)
    elif real_radii.shape != (len(real),):
        raise ValueError(f"real_radii must have shape ({len(real)},), got {tuple(real_radii.shape)}")
    fake_radii = kth_neighbor_distances(fake, k=k, backend=backend)
    in_real = count_in_balls(fake, real, real_radii, max_chunk_bytes=max_chunk_bytes)  # (M,)
    in_fake = count_in_balls(real, fake, fake_radii, max_chunk_bytes=max_chunk_bytes)  # (N,)
    nearest_distance = _distances_to(real, fake, nearest_neighbors(real, fake, k=1, backend=backend)[:, 0])
    return {
        "precision": float((in_real > 0).double().mean()),
        "recall": float((in_fake > 0).double().mean()),
        "density": float(in_real.double().mean() / k),
        "coverage": float((nearest_distance <= real_radii.to(real.device)).double().mean()),
    }
