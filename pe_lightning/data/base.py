"""Private image data modules.

A :class:`PrivateImageDataModule` holds the *private* training images (which vote) and a
held-out real *test* split (never seen by PE; used only for evaluation). After
:meth:`setup` it exposes them as uint8 NHWC arrays. Its ``train_dataloader`` yields
batches of private sample *indices*: the PE module embeds each private image once per
run and looks the cached embeddings up by index.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pe_lightning.images import check_images

__all__ = ["PrivateImageDataModule", "check_images", "check_labels"]


def check_labels(labels: np.ndarray, *, num_classes: int, n: int, name: str) -> np.ndarray:
    """Validate int labels in ``[0, num_classes)`` of length ``n`` and return them as int64."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"{name} has labels outside the class list [0, {num_classes}) (one label per class name): "
            f"e.g. {np.unique(bad)[:5].tolist()}"
        )
    return labels.astype(np.int64)


class IndexDataset(Dataset):
    """The indices ``0 .. n - 1``; a batch is fetched as one int64 tensor (no per-item collate)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range [0, {self.n})")
        return index

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.int64)


def _index_batch(batch) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else torch.as_tensor(batch, dtype=torch.int64)


class PrivateImageDataModule(pl.LightningDataModule):
    """Base class: subclasses implement :meth:`load` and return the two splits.

    Attributes (after :meth:`setup`):
        private_images: uint8 ``(N_priv, H, W, C)``, the private training set.
        private_labels: int64 ``(N_priv,)``.
        test_images: uint8 ``(N_test, H, W, C)``, held-out real images (not private votes).
        test_labels: int64 ``(N_test,)``.
        class_names: list of class names, index = label.
        private_clients: int64 ``(N_priv,)`` client (user) id of each private image, or
            ``None`` when the data has none. Client-level DP
            (``PrivateEvolution(privacy_unit="client")``) needs it.
    """

    def __init__(self, *, batch_size: int = 4096) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.private_images: np.ndarray | None = None
        self.private_labels: np.ndarray | None = None
        self.test_images: np.ndarray | None = None
        self.test_labels: np.ndarray | None = None
        self.class_names: list[str] = []
        self.private_clients: np.ndarray | None = None

    @abstractmethod
    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        """Return ``(private_images, private_labels, test_images, test_labels, class_names)``.

        A data set with client (user) ids may return a sixth element: int ``(N_priv,)``
        client ids of the private images.
        """

    def setup(self, stage: str | None = None) -> None:
        if self.private_images is not None:
            return
        loaded = self.load()
        p_img, p_lab, t_img, t_lab, names = loaded[:5]
        clients = loaded[5] if len(loaded) > 5 else None
        names = [str(n) for n in names]
        if not names:
            raise ValueError(f"{type(self).__name__}: class_names is empty")
        where = type(self).__name__
        self.private_images = check_images(p_img, name=f"{where} private images")
        self.private_labels = check_labels(p_lab, num_classes=len(names), n=len(p_img), name=f"{where} private labels")
        self.test_images = check_images(t_img, name=f"{where} test images")
        self.test_labels = check_labels(t_lab, num_classes=len(names), n=len(t_img), name=f"{where} test labels")
        if len(self.private_images) == 0:
            raise ValueError(f"{type(self).__name__}: the private split is empty")
        if clients is not None:
            clients = np.asarray(clients)
            if clients.shape != (len(self.private_images),) or not np.issubdtype(clients.dtype, np.integer):
                raise ValueError(
                    f"{where} private clients must be integer ids, one per private image ({len(self.private_images)}), "
                    f"got dtype {clients.dtype} and shape {clients.shape}"
                )
            self.private_clients = clients.astype(np.int64)
        self.class_names = names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the private images (after :meth:`setup`)."""
        if self.private_images is None:
            raise RuntimeError("call setup() first")
        return tuple(self.private_images.shape[1:])  # type: ignore[return-value]

    @property
    def test_split_from_private(self) -> bool:
        """Whether the held-out split was carved out of the private data (docs/privacy.md).

        Then every metric against it is private-derived and stays on the private side
        (:func:`pe_lightning.private_side.data_class`). ``False`` here: a held-out split
        that comes from elsewhere (a public test set, a folder the user gave as such).
        """
        return False

    @property
    def fingerprint(self) -> str:
        """Digest of the private split (images + labels), for embedding caches.

        Derived from private data: never printed, logged or written; the cache names its
        files by an HMAC of it under a key kept on the private side (:mod:`pe_lightning.embedding_cache`).
        """
        if self.private_images is None:
            raise RuntimeError("call setup() first")
        h = hashlib.sha256()
        h.update(str(self.private_images.shape).encode())
        h.update(self.private_images.tobytes())
        h.update(self.private_labels.tobytes())
        return h.hexdigest()[:16]

    def test_dataloader(self) -> DataLoader:
        """Batches of held-out test indices: ``python -m pe_lightning test`` evaluates a saved run.

        The PE module evaluates the whole population at the start of the test loop (its
        metric callbacks read the test images themselves); the batches only drive the loop.
        """
        if self.test_images is None:
            raise RuntimeError("call setup() first")
        return DataLoader(IndexDataset(max(len(self.test_images), 1)), batch_size=self.batch_size, shuffle=False, collate_fn=_index_batch)

    def train_dataloader(self) -> DataLoader:
        """Batches of private sample indices (int64), in order.

        Under DDP Lightning wraps this in a ``DistributedSampler`` which may pad ranks with
        duplicate indices; the PE module stores one vote *per private index*, so duplicates
        overwrite rather than add (docs/design.md §3, invariant 1).
        """
        if self.private_images is None:
            raise RuntimeError("call setup() first")
        return DataLoader(IndexDataset(len(self.private_images)), batch_size=self.batch_size, shuffle=False, collate_fn=_index_batch)
