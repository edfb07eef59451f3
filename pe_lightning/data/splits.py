"""Deterministic stratified index selection: subsets and held-out splits.

Every helper draws its permutations from a ``torch.Generator`` seeded with ``seed`` (never
a global RNG), class by class in ascending label order, and returns sorted int64 indices,
so a split depends only on the labels and the seed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stratified_split", "stratified_subset"]


def stratified_subset(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Deterministic stratified subsample of ``n`` indices.

    Each class gets ``floor(n * n_c / N)`` samples; the remaining slots go to the classes
    with the largest fractional parts (ties: lower class index first). Within a class the
    samples are drawn by a seeded permutation.

    Args:
        labels: int ``(N,)`` class labels.
        n: number of indices to keep, ``1 <= n <= N``.
        seed: seed of the generator.

    Returns:
        int64 ``(n,)`` indices into ``labels``, sorted ascending (original order kept).

    Raises:
        ValueError: ``n`` outside ``[1, N]``.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be in [1, {total}], got {n}")
    if n == total:
        return np.arange(total, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total
    alloc = np.floor(exact).astype(np.int64)
    remainder = n - int(alloc.sum())
    if remainder:
        order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - alloc[i]), i))
        for i in order[:remainder]:
            alloc[i] += 1
    gen = torch.Generator().manual_seed(int(seed))
    keep = []
    for cls, k in zip(classes, alloc):
        members = np.flatnonzero(labels == cls)
        perm = torch.randperm(len(members), generator=gen).numpy()
        keep.append(members[perm[:k]])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int, min_per_class: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split into kept and held-out indices.

    Each class with ``n_c`` samples holds out
    ``min(max(min_per_class, floor(fraction * n_c + 1/2)), n_c - 1)`` of them (the
    fraction rounded half up, at least ``min_per_class``, and always leaving one sample
    kept), chosen by a seeded permutation; a class that holds out nothing draws none.

    Args:
        labels: int ``(N,)`` class labels.
        fraction: fraction in ``[0, 1)`` held out per class.
        seed: seed of the generator.
        min_per_class: least number held out per class (when the class has more samples).

    Returns:
        ``(kept, held_out)``, int64, each sorted ascending, disjoint, covering ``range(N)``.

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)`` or ``min_per_class < 0``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    labels = np.asarray(labels)
    gen = torch.Generator().manual_seed(int(seed))
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = min(max(min_per_class, int(np.floor(fraction * len(members) + 0.5))), len(members) - 1)
        if k > 0:
            perm = torch.randperm(len(members), generator=gen).numpy()
            held.append(members[perm[:k]])
    held_idx = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, dtype=np.int64)
    kept = np.ones(len(labels), dtype=bool)
    kept[held_idx] = False
    return np.flatnonzero(kept).astype(np.int64), held_idx
