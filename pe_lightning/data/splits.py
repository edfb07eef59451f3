"""Deterministic stratified index selection: subsets and held-out splits.

Every helper draws its permutations from a ``torch.Generator`` seeded with ``seed`` (never
a global RNG), class by class in ascending label order, and returns sorted int64 indices,
so a split depends only on the labels and the seed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["keep_stratified_subset", "sklearn_stratified_train_test", "stratified_split", "stratified_subset"]


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


def keep_stratified_subset(
    images: np.ndarray, labels: np.ndarray, n: int | None, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` cut to :func:`stratified_subset` of ``min(n, N)`` rows; unchanged when ``n`` is ``None``."""
    if n is None:
        return images, labels
    keep = stratified_subset(labels, min(n, len(labels)), seed=seed)
    return images[keep], labels[keep]


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


# Copied from scikit-learn 1.9 (BSD-3-Clause): sklearn.utils.extmath._approximate_mode and
# StratifiedShuffleSplit._iter_indices, for a 1-d label array and an integer test size.
# Importing sklearn.model_selection takes about a second of every run's start-up; the copy is
# checked against sklearn itself (tests/test_run_experience.py).
def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def sklearn_stratified_train_test(labels: np.ndarray, test_size: int, *, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices exactly as ``sklearn.model_selection.train_test_split(..., test_size=test_size,
    stratify=labels, random_state=random_state)`` orders the rows (without importing sklearn).

    Args:
        labels: ``(N,)`` class labels; every class needs at least 2 members.
        test_size: the number of test rows (an int), at least the number of classes.
        random_state: the seed of ``numpy.random.RandomState``, as in sklearn.

    Raises:
        ValueError: a class with fewer than 2 members, or too few train or test rows.
    """
    labels = np.asarray(labels)
    n_test, n_train = int(test_size), len(labels) - int(test_size)
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError(f"every class needs at least 2 members, classes {classes[class_counts < 2].tolist()} have fewer")
    if min(n_train, n_test) < len(classes):
        raise ValueError(f"train ({n_train}) and test ({n_test}) sizes must be at least the number of classes ({len(classes)})")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(random_state)
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)
