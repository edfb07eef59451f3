"""On-disk cache of private embeddings, keyed by the data and the embedding.

Embedding the private set is the same work in every run on the same data with the same
embedding network (e.g. 50,000 CIFAR10 images through Inception). The cache key is the
digest of :attr:`PrivateImageDataModule.fingerprint` (the private images and labels) and
:attr:`Embedding.fingerprint` (the embedding's class and configuration), so a change of
either is a miss, never a stale hit.

The cached file is derived from private data: keep it where the private data may live.
It is not released by PE (only the noisy histogram is), so it does not affect the privacy
guarantee of the synthetic data.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from pe_lightning.population import atomic_write

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """``.npy`` files of float32 ``(N, D)`` private embeddings in ``directory``.

    Args:
        directory: the cache folder (created on first write).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key(*, data_fingerprint: str, embedding_fingerprint: str) -> str:
        """The cache key of a (private data, embedding) pair."""
        return hashlib.sha256(f"{data_fingerprint}/{embedding_fingerprint}".encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.directory / f"private-{key}.npy"

    def load(self, key: str, *, num_rows: int) -> np.ndarray | None:
        """The cached ``(num_rows, D)`` array, or ``None`` on a miss or an unreadable / wrongly shaped file."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != num_rows or not np.isfinite(array).all():
            return None
        return array

    def save(self, key: str, array: np.ndarray) -> Path:
        """Write ``array`` atomically (a crash never leaves a half-written cache entry)."""
        array = np.ascontiguousarray(array, dtype=np.float32)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)

        return atomic_write(self.path(key), write)
