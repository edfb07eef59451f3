"""Data for the downstream classifier: synthetic train/validation, real test.

Checkpoint and hyperparameter selection must never look at private or test data: choosing
a checkpoint or a hyperparameter by its accuracy on the private set spends privacy the DP
guarantee does not account for, and choosing it by test accuracy overstates utility (the
test set then is part of training). :class:`SyntheticDataModule` therefore holds out its
validation split from the *synthetic* data; the real data module contributes its held-out
*test* split, and only to ``test_dataloader``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.splits import stratified_split
from pe_lightning.png_tree import read_png_tree
from pe_lightning.population import Population

__all__ = ["SyntheticDataModule", "load_image_tree", "stratified_split"]

_IN_MEMORY = "<in-memory Population>"


def load_image_tree(root: str | os.PathLike, *, class_names: Sequence[str]) -> Population:
    """Load a PNG tree ``<root>/<class>/<index>.png`` as a :class:`Population`.

    The reading (folder-to-label mapping, order, errors) is :func:`pe_lightning.png_tree.read_png_tree`.

    Args:
        root: the tree's root folder.
        class_names: class names, index = label.

    Returns:
        The population (uint8 ``(N, H, W, C)`` images, int64 labels).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: unknown class folders, no images, an unreadable file, or images of
            different shapes (the file is named).
    """
    images, labels = read_png_tree(root, class_names=class_names)
    return Population(images=images, labels=labels)


class SyntheticDataModule(pl.LightningDataModule):
    """Train on a synthetic population, validate on a held-out synthetic split, test on real data.

    **Validation uses only synthetic data.** Choosing checkpoints or hyperparameters by
    accuracy on private or test data violates DP and overstates utility: accuracy on the
    private data is a release the DP guarantee does not cover, and selecting on the test
    data makes the reported test accuracy optimistic. So the validation split (``val_fraction`` of the population, stratified by class,
    deterministic from ``split_seed``) is held out from the *synthetic* data; the real
    data module contributes only its held-out *test* split, to ``test_dataloader``. Its
    private training split is never used.

    Batches are ``(images, labels)``: uint8 ``(B, H, W, C)`` and int64 ``(B,)``.

    Attributes (after :meth:`setup`):
        train_images, train_labels: the synthetic training split.
        val_images, val_labels: the synthetic validation split.
        test_images, test_labels: the real data module's test split.
        class_names: the real data module's class names (index = label).

    Args:
        population: path to a ``population.npz`` (:meth:`Population.save_npz`), to a
            PNG tree ``<class>/<index>.png`` (class folder names are mapped to labels
            by ``real.class_names``), or to a folder that contains ``population.npz``
            (e.g. a PE run's ``final/`` folder).
        real: the private data module of the PE run (same class and configuration);
            only its test split is used.
        val_fraction: fraction of the synthetic data held out for validation, in
            ``[0, 1)``. ``0`` disables validation (then nothing can be monitored: the
            last model is the one to test, as in docs/benchmark.md).
        split_seed: seed of the validation split.
        batch_size: images per batch (train, validation and test).
        num_workers: DataLoader worker processes.
        shuffle_seed: seed of a dedicated ``torch.Generator`` that shuffles the training
            batches; ``None`` shuffles with the global torch RNG (set by
            ``seed_everything``).
        resize_to_real: resize synthetic images of another square size to the real test
            split's (PIL bicubic, rounded to uint8: the paper's code does this to its 64 px
            CIFAR-10 samples, :func:`pe_lightning.metrics.clean_resize.resize_uint8`).
            ``False``: a size mismatch is an error.
    """

    def __init__(
        self,
        *,
        population: str,
        real: PrivateImageDataModule,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        shuffle_seed: int | None = None,
        resize_to_real: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(population, (str, os.PathLike)) or not str(population):
            raise ValueError(f"SyntheticDataModule population must be a non-empty path, got {population!r}")
        if not isinstance(real, PrivateImageDataModule):
            raise TypeError(
                f"SyntheticDataModule real must be a PrivateImageDataModule (the PE run's data module), got {type(real).__name__}"
            )
        if not (isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and 0 <= val_fraction < 1):
            raise ValueError(f"SyntheticDataModule val_fraction must be in [0, 1), got {val_fraction!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"SyntheticDataModule batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(f"SyntheticDataModule num_workers must be an integer >= 0, got {num_workers!r}")
        self.population_path = str(population)
        self.real = real
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_seed = shuffle_seed
        self.resize_to_real = bool(resize_to_real)
        self._given: Population | None = None
        self.source = self.population_path
        self.train_images: np.ndarray | None = None
        self.train_labels: np.ndarray | None = None
        self.val_images: np.ndarray | None = None
        self.val_labels: np.ndarray | None = None
        self.test_images: np.ndarray | None = None
        self.test_labels: np.ndarray | None = None
        self.class_names: list[str] = []

    @classmethod
    def from_population(cls, population: Population, *, real: PrivateImageDataModule, **kwargs) -> "SyntheticDataModule":
        """A data module over an in-memory :class:`Population` (no file needed).

        Args:
            population: the synthetic samples.
            real: as in the constructor.
            **kwargs: the other constructor arguments (``val_fraction``, ``batch_size``, ...).
        """
        if not isinstance(population, Population):
            raise TypeError(f"from_population needs a Population, got {type(population).__name__}")
        dm = cls(population=_IN_MEMORY, real=real, **kwargs)
        dm._given = population
        dm.source = _IN_MEMORY
        return dm

    # ------------------------------------------------------------------ loading
    def _load_population(self) -> Population:
        if self._given is not None:
            return self._given
        path = Path(self.population_path)
        if path.is_file():
            return Population.load_npz(path)
        if path.is_dir():
            if (path / "population.npz").is_file():
                self.source = str(path / "population.npz")
                return Population.load_npz(path / "population.npz")
            return load_image_tree(path, class_names=self.real.class_names)
        raise FileNotFoundError(
            f"population not found: {path} (expected a population.npz file or a <class>/<index>.png folder; "
            "a PE run writes <output_dir>/final/population.npz)"
        )

    def _check(self, pop: Population) -> None:
        real_shape = tuple(self.real.test_images.shape[1:])
        shape = tuple(pop.images.shape[1:])
        if shape[-1] != real_shape[-1]:
            raise ValueError(
                f"{self.source}: synthetic images have {shape[-1]} channel(s) {shape} (H, W, C), but the real test split of "
                f"{type(self.real).__name__} has {real_shape[-1]} {real_shape}"
            )
        if shape != real_shape:
            raise ValueError(
                f"{self.source}: synthetic images are {shape} (H, W, C), but the real test split of "
                f"{type(self.real).__name__} is {real_shape}"
            )
        n_classes = len(self.real.class_names)
        bad = (pop.labels < 0) | (pop.labels >= n_classes)
        if bad.any():
            raise ValueError(
                f"{self.source}: labels {np.unique(pop.labels[bad])[:10].tolist()} are outside the {n_classes} classes "
                f"[0, {n_classes}) of {type(self.real).__name__} ({self.real.class_names})"
            )
        if len(pop) == 0:
            raise ValueError(f"{self.source}: the population is empty")
        missing = sorted(set(range(n_classes)) - set(np.unique(pop.labels).tolist()))
        if missing:
            raise ValueError(
                f"{self.source}: no synthetic samples for classes {[self.real.class_names[c] for c in missing]} of "
                f"{type(self.real).__name__} ({self.real.class_names}); the classifier could not learn them and "
                "its test accuracy would not measure the population. Generate samples for every class "
                "(PrivateEvolution num_samples_per_class >= 1 for each)"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is not None:
            return
        self.real.setup(stage)
        if self.real.test_images is None or len(self.real.test_images) == 0:
            raise ValueError(f"{type(self.real).__name__} has no test split to evaluate on")
        pop = self._load_population()
        real_hw = tuple(self.real.test_images.shape[1:3])
        if self.resize_to_real and tuple(pop.images.shape[1:3]) != real_hw and real_hw[0] == real_hw[1]:
            from pe_lightning.metrics.clean_resize import resize_uint8

            resized = resize_uint8(pop.images, size=real_hw[0]).numpy()
            if pop.images.shape[-1] == 1:
                resized = resized[..., :1]
            pop = Population(images=np.ascontiguousarray(resized), labels=pop.labels)
        self._check(pop)
        train_idx, val_idx = stratified_split(pop.labels, self.val_fraction, seed=self.split_seed)
        if self.val_fraction > 0 and len(val_idx) == 0:
            raise ValueError(
                f"{self.source}: val_fraction={self.val_fraction} of {len(pop)} synthetic images leaves no validation "
                "image (each class keeps at least one training image); raise val_fraction or set it to 0"
            )
        self.class_names = list(self.real.class_names)
        self.train_images, self.train_labels = pop.images[train_idx], pop.labels[train_idx]
        self.val_images, self.val_labels = pop.images[val_idx], pop.labels[val_idx]
        # Only the held-out real test split; the private training split is never touched.
        self.test_images, self.test_labels = self.real.test_images, self.real.test_labels

    @property
    def num_classes(self) -> int:
        """Number of classes (after :meth:`setup`)."""
        if not self.class_names:
            raise RuntimeError("call setup() first")
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the images (after :meth:`setup`)."""
        if self.train_images is None:
            raise RuntimeError("call setup() first")
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    # ------------------------------------------------------------- dataloaders
    def _loader(self, images: np.ndarray, labels: np.ndarray, *, shuffle: bool) -> DataLoader:
        ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))
        generator = None
        if shuffle and self.shuffle_seed is not None:
            generator = torch.Generator().manual_seed(int(self.shuffle_seed))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the synthetic training split."""
        if self.train_images is None:
            raise RuntimeError("call setup() first")
        return self._loader(self.train_images, self.train_labels, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        """Batches of the synthetic validation split (``[]`` when ``val_fraction == 0``)."""
        if self.val_images is None:
            raise RuntimeError("call setup() first")
        if len(self.val_images) == 0:
            return []
        return self._loader(self.val_images, self.val_labels, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the real held-out test split."""
        if self.test_images is None:
            raise RuntimeError("call setup() first")
        return self._loader(self.test_images, self.test_labels, shuffle=False)
