"""FID's real ("reference") statistics: where the images come from, which of them, and a disk cache.

The reference is either a split of the run's data module (``'test'``: held out, never votes;
``'private'``: OUTSIDE the DP guarantee, warned about) or a user-given folder of images the
user declares public (e.g. an export of the public CIFAR-10 training set, the paper's FID
reference). A cap ``max_images`` takes a seeded uniform subset, never a prefix: image folders
are read class by class, so a prefix would be (almost) one class.

Statistics (mean and covariance of the features, float64, computed once per run from sums
reduced over DDP ranks) can be cached as ``.npz``: for a public source under
``<output root>/fid_reference`` (or ``cache_dir``); for the private split always on the private
side (``<private_state_dir>/fid_reference``), never in the output root, and so are those of a held-out
split carved out of the private data (``test_split_from_private``, docs/privacy.md). A cache file is keyed
by the source's content (image bytes; for a folder its file names, sizes and modification
times) and the feature's fingerprint, so a changed source or feature computes afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from pe_lightning.atomic import atomic_write
from pe_lightning.callbacks.real_split import REAL_SPLITS, real_images
from pe_lightning.data.folder import IMAGE_EXTENSIONS
from pe_lightning.data.image_files import read_image
from pe_lightning.embeddings.base import Embedding
from pe_lightning.private_dir import check_private_side, resolve_private_dir
from pe_lightning.private_side import test_split_is_private

__all__ = ["FIDReference", "load_statistics", "read_image_folder", "save_statistics", "seeded_subset"]


def seeded_subset(n: int, k: int | None, *, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` of ``range(n)`` drawn uniformly without replacement (all when ``k`` is None or >= n).

    A public, seeded choice (``numpy.random.default_rng(seed)``): which images are used does
    not depend on their content.
    """
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def read_image_folder(folder: str | os.PathLike, *, channels: int) -> tuple[np.ndarray, list[Path]]:
    """Every image under ``folder`` (recursively, sorted paths, hidden entries skipped), uint8 ``(N, H, W, C)``.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: no images, or images of different sizes (the first mismatching file named).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"FIDCallback reference_dir={str(folder)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"FIDCallback reference_dir={str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = [read_image(p, mode="L" if channels == 1 else "RGB") for p in files]
    for path, image in zip(files, images):
        if image.shape != images[0].shape:
            raise ValueError(f"FIDCallback reference_dir: {str(path)!r} has shape {image.shape}, but {str(files[0])!r} "
                             f"has {images[0].shape}; every reference image must have the same size")
    return np.stack(images), files


def save_statistics(path: Path, *, mu: np.ndarray, cov: np.ndarray, count: int, meta: dict) -> None:
    """Write ``mu`` (D,), ``cov`` (D, D), ``count`` and a JSON ``meta`` as ``.npz`` (temp file, then rename)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, cov=cov, count=np.int64(count), meta=np.array(json.dumps(meta, sort_keys=True)))

    atomic_write(path, write)


def load_statistics(path: Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(mu, cov, count)`` from a file :func:`save_statistics` wrote; ``None`` when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, cov, count = data["mu"], data["cov"], int(data["count"])
    except (OSError, KeyError, ValueError):
        return None
    if mu.ndim != 1 or cov.shape != (len(mu), len(mu)) or count < 2:
        return None
    return mu, cov, count


class FIDReference:
    """The real side of FID: source, subset, statistics, cache.

    Args:
        split: the data module's split, ``'test'`` or ``'private'`` (used when ``folder`` is None).
        folder: a folder of public reference images (any layout; read recursively).
        max_images: use a seeded uniform subset of at most this many images (``None``: all).
        subset_seed: seed of that subset (public).
        cache: keep the statistics on disk and reuse them.
        cache_dir: where a public source's statistics go (default ``<output root>/fid_reference``).
            Ignored for the private split, whose statistics stay on the private side.
    """

    def __init__(
        self,
        *,
        split: str = "test",
        folder: str | None = None,
        max_images: int | None = None,
        subset_seed: int = 0,
        cache: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if split not in REAL_SPLITS:
            raise ValueError(f"FIDCallback real_split must be one of {REAL_SPLITS}, got {split!r}")
        if folder is not None and split != "test":
            raise ValueError("FIDCallback: give reference_dir or real_split='private', not both")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 2):
            raise ValueError(f"FIDCallback max_real must be an int >= 2 or None, got {max_images!r}")
        self.split = split
        self.folder = None if folder is None else str(folder)
        self.max_images = max_images
        self.subset_seed = int(subset_seed)
        self.cache = bool(cache)
        self.cache_dir = None if cache_dir is None else str(cache_dir)

    def is_private(self, datamodule) -> bool:
        """Whether the reference images are private: the private split, or a held-out split carved out of it."""
        return self.folder is None and (self.split == "private" or test_split_is_private(datamodule))

    def _images(self, trainer: pl.Trainer, key: str) -> tuple[np.ndarray, str]:
        """The reference images (subset applied) and a digest of the source."""
        if self.folder is not None:
            images, files = read_image_folder(self.folder, channels=trainer.datamodule.image_shape[2])
            digest = hashlib.sha256()
            for p in files:
                st = p.stat()
                digest.update(f"{p.relative_to(Path(self.folder).expanduser())}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            images = real_images(trainer, split=self.split, key=key)
            digest = hashlib.sha256(str(images.shape).encode())
            digest.update(np.ascontiguousarray(images).tobytes())
        index = seeded_subset(len(images), self.max_images, seed=self.subset_seed)
        digest.update(f"subset {self.max_images} {self.subset_seed}".encode())
        return images[index], digest.hexdigest()[:24]

    def _cache_path(self, trainer: pl.Trainer, pl_module: pl.LightningModule, digest: str, feature: Embedding) -> Path:
        name = f"{digest}-{feature.fingerprint}.npz"
        run = getattr(pl_module, "run", None)
        if self.is_private(trainer.datamodule):
            path = resolve_private_dir(getattr(run, "private_dir", None)) / "fid_reference" / name
            check_private_side(path, output_roots=[trainer.default_root_dir], what="FID reference statistics of the private split")
            return path
        root = self.cache_dir or os.path.join(getattr(run, "output_dir", None) or trainer.default_root_dir, "fid_reference")
        return Path(root).expanduser() / name

    def statistics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, feature: Embedding, *, key: str, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean ``(D,)``, covariance ``(D, D)`` (float64, unbiased) and count of the reference features.

        Each rank embeds its share of the images; the sums are reduced over ranks. With
        ``cache``, rank 0 writes the file and every rank reads the same numbers next time.
        """
        from pe_lightning.metrics.frechet import statistics_from_sums

        images, digest = self._images(trainer, key)
        path = self._cache_path(trainer, pl_module, digest, feature) if self.cache else None
        if path is not None and (cached := load_statistics(path)) is not None:
            return cached
        shard = images[trainer.global_rank :: trainer.world_size]
        total = outer = None
        for start in range(0, len(shard), batch_size):
            x = feature.embed(shard[start : start + batch_size], batch_size=batch_size).double()
            total = x.sum(0) if total is None else total + x.sum(0)
            outer = x.T @ x if outer is None else outer + x.T @ x
        if total is None:  # this rank got no images
            dim = feature.embed(images[:1]).shape[1]
            total, outer = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64)
        device = pl_module.device
        total = trainer.strategy.reduce(total.to(device), reduce_op="sum").cpu().numpy()
        outer = trainer.strategy.reduce(outer.to(device), reduce_op="sum").cpu().numpy()
        mu, cov = statistics_from_sums(total=total, outer=outer, count=len(images))
        if path is not None:
            if trainer.global_rank == 0:
                save_statistics(path, mu=mu, cov=cov, count=len(images),
                                meta={"feature": feature.fingerprint, "source": "folder" if self.folder else self.split,
                                      "max_images": self.max_images, "subset_seed": self.subset_seed})
            trainer.strategy.barrier("fid_reference")
        return mu, cov, len(images)
