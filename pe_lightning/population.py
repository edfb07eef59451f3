"""The synthetic population: uint8 images, labels, API conditions and parent indices.

A :class:`Population` is what PE evolves. It is plain numpy (no Python objects per
sample), saves atomically to ``population.npz`` (``images`` uint8 NHWC, ``labels``
int64, ``parents`` int64, ``cond__<key>`` per API condition) and to an ImageFolder-style
PNG tree (``<class>/<index>.png``). Synthetic data only: a population never holds
private images.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pe_lightning.atomic import atomic_directory, atomic_write
from pe_lightning.images import check_images
from pe_lightning.png_tree import check_class_names, save_png_tree, write_png_tree

__all__ = ["Population", "atomic_write", "atomic_directory"]

_COND_PREFIX = "cond__"


@dataclass
class Population:
    """A set of synthetic samples.

    Attributes:
        images: uint8 ``(N, H, W, C)``.
        labels: int64 ``(N,)``, the private class each sample belongs to.
        conditions: per-sample API conditions, arrays with first dimension ``N``.
        parents: int64 ``(N,)``, index of each sample's parent in the previous
            population (``-1`` for samples drawn by the RANDOM API).
    """

    images: np.ndarray
    labels: np.ndarray
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    parents: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_images(self.images, name="Population.images", channels=None)
        n = len(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (n,):
            raise ValueError(f"Population.labels must have shape ({n},), got {self.labels.shape}")
        if n and self.labels.min() < 0:
            bad = np.unique(self.labels[self.labels < 0])[:5].tolist()
            raise ValueError(f"Population.labels must be class indices >= 0, got {bad}")
        if self.parents is None:
            self.parents = np.full(n, -1, dtype=np.int64)
        self.parents = np.asarray(self.parents, dtype=np.int64)
        if self.parents.shape != (n,):
            raise ValueError(f"Population.parents must have shape ({n},), got {self.parents.shape}")
        for key, value in self.conditions.items():
            if not isinstance(value, np.ndarray) or value.shape[:1] != (n,):
                raise ValueError(f"Population.conditions[{key!r}] must have first dimension {n}")

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: np.ndarray) -> "Population":
        """The samples at ``indices`` (a copy); ``parents`` become ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        return Population(
            images=self.images[indices],
            labels=self.labels[indices],
            conditions={k: v[indices] for k, v in self.conditions.items()},
            parents=indices.copy(),
        )

    @staticmethod
    def concatenate(parts: Sequence["Population"]) -> "Population":
        """Concatenate populations with the same condition keys."""
        if not parts:
            raise ValueError("Population.concatenate needs at least one part")
        keys = set(parts[0].conditions)
        for p in parts[1:]:
            if set(p.conditions) != keys:
                raise ValueError(f"cannot concatenate populations with condition keys {sorted(keys)} and {sorted(p.conditions)}")
        return Population(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            conditions={k: np.concatenate([p.conditions[k] for p in parts]) for k in keys},
            parents=np.concatenate([p.parents for p in parts]),
        )

    # ----------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        """Tensors only, so it travels in a Lightning checkpoint (``weights_only`` safe)."""
        return {
            "images": torch.from_numpy(np.ascontiguousarray(self.images)),
            "labels": torch.from_numpy(self.labels),
            "parents": torch.from_numpy(self.parents),
            "conditions": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.conditions.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "Population":
        return cls(
            images=state["images"].numpy(),
            labels=state["labels"].numpy(),
            parents=state["parents"].numpy(),
            conditions={k: v.numpy() for k, v in state["conditions"].items()},
        )

    # ------------------------------------------------------------------------- files
    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write ``population.npz`` atomically (uncompressed; loads as plain arrays)."""
        arrays = {"images": self.images, "labels": self.labels, "parents": self.parents}
        arrays.update({_COND_PREFIX + k: v for k, v in self.conditions.items()})

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "Population":
        """Load a population written by :meth:`save_npz` (``parents`` and conditions optional)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"population file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                missing = {"images", "labels"} - files
                if missing:
                    raise ValueError(f"{path}: missing arrays {sorted(missing)} (expected 'images' uint8 NHWC and 'labels' int64)")
                images = data["images"]
                labels = data["labels"]
                parents = data["parents"] if "parents" in files else None
                conditions = {f[len(_COND_PREFIX):]: data[f] for f in files if f.startswith(_COND_PREFIX)}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:  # corrupt or truncated
            if isinstance(err, ValueError) and str(path) in str(err):
                raise
            raise ValueError(f"{path}: not a readable population .npz file ({err})") from err
        try:
            return cls(images=images, labels=labels, parents=parents, conditions=conditions)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def _check_class_names(self, class_names: Sequence[str] | None) -> None:
        """Raise ``ValueError`` if a label has no entry in ``class_names`` (see :func:`~pe_lightning.png_tree.check_class_names`)."""
        check_class_names(self.labels, class_names)

    def save_image_folder(self, path: str | os.PathLike, *, class_names: Sequence[str] | None = None) -> Path:
        """Write an ImageFolder tree ``<class>/<index>.png`` atomically (index = position).

        See :func:`pe_lightning.png_tree.save_png_tree`; read it back with
        :func:`pe_lightning.png_tree.read_png_tree`.

        Raises:
            ValueError: a label has no entry in ``class_names``.
            OSError: ``path``'s folder is not writable (named); an existing tree at
                ``path`` is kept when writing fails.
        """
        return save_png_tree(path, images=self.images, labels=self.labels, class_names=class_names)

    def save(self, directory: str | os.PathLike, *, class_names: Sequence[str] | None = None, png: bool = True) -> Path:
        """Write ``directory/population.npz`` and, if ``png``, ``directory/images/<class>/<i>.png``.

        The PNGs are written first, into a temporary folder; ``population.npz`` is replaced
        only after they all exist, and ``images/`` right after it. A failure part-way (disk
        full, an unwritable folder, a bad class name) leaves a previous save in
        ``directory`` untouched.

        Raises:
            ValueError: a label has no entry in ``class_names``.
            OSError: ``directory`` cannot be created or written to (the message names it).
        """
        directory = Path(directory)
        if not png:
            self.save_npz(directory / "population.npz")
            return directory
        self._check_class_names(class_names)

        def fill(tmp: Path) -> None:
            write_png_tree(tmp, images=self.images, labels=self.labels, class_names=class_names)
            self.save_npz(directory / "population.npz")

        atomic_directory(directory / "images", fill)
        return directory
