"""CIFAR-10 through ``torchvision.datasets.CIFAR10``.

The private set is the 50,000-image train split (optionally a deterministic stratified
subset), the test set the 10,000-image test split. Nothing is downloaded unless
``download=True``; the download happens in :meth:`prepare_data` (rank zero under DDP).
"""

from __future__ import annotations

import os
import pickle
from typing import Sequence

import numpy as np
from torchvision.datasets import CIFAR10

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.splits import keep_stratified_subset

__all__ = ["CIFAR10DataModule"]


class CIFAR10DataModule(PrivateImageDataModule):
    """CIFAR-10: uint8 ``(N, 32, 32, 3)`` images, 10 classes named as in the data set.

    Args:
        root: folder that holds (or will hold) ``cifar-10-batches-py/``.
        download: fetch the archive (~163 MB) into ``root`` if it is missing. Needs
            internet; with ``False`` a missing data set is a clear error.
        num_private: keep a deterministic stratified subset of this many train images as
            the private set; ``None`` keeps all 50,000.
        num_test: keep a deterministic stratified subset of this many test images;
            ``None`` keeps all 10,000.
        subset_seed: seed of the subsets.
        batch_size: private indices per ``train_dataloader`` batch.
        verify_md5: check every file against CIFAR-10's md5 sums (torchvision's check).
            ``False`` accepts any files in the CIFAR-10 python format (the same pickled
            ``data``/``labels`` batches and ``batches.meta``), e.g. a small stand-in for tests.
    """

    def __init__(
        self,
        *,
        root: str = "data/cifar10",
        download: bool = False,
        num_private: int | None = None,
        num_test: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 4096,
        verify_md5: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise ValueError(f"root must be a non-empty path, got {root!r}")
        if num_private is not None and not 1 <= num_private <= 50_000:
            raise ValueError(f"num_private must be None or in [1, 50000], got {num_private}")
        if num_test is not None and not 1 <= num_test <= 10_000:
            raise ValueError(f"num_test must be None or in [1, 10000], got {num_test}")
        self.root = str(root)
        self.download = download
        self.num_private = num_private
        self.num_test = num_test
        self.subset_seed = subset_seed
        if not isinstance(verify_md5, bool):
            raise ValueError(f"verify_md5 must be a bool, got {verify_md5!r}")
        self.verify_md5 = verify_md5

    def _missing_message(self) -> str:
        folder = os.path.join(os.path.abspath(self.root), CIFAR10.base_folder)
        return (
            f"CIFAR-10 not found (or incomplete/corrupted) under root={self.root!r}: expected the folder "
            f"{folder} with data_batch_1..5, test_batch and batches.meta. Either set `download: true` "
            f"(needs internet), or download {CIFAR10.url} on a connected machine and extract it into "
            f"{os.path.abspath(self.root)} so that {CIFAR10.base_folder}/ lies there."
        )

    def _is_present(self) -> bool:
        """Cheap check that every file exists (torchvision checks the md5 sums on load)."""
        folder = os.path.join(self.root, CIFAR10.base_folder)
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
        return all(os.path.isfile(os.path.join(folder, name)) for name in names)

    def prepare_data(self) -> None:
        """Download the archive into ``root`` when ``download=True`` and it is missing."""
        if not self.download or self._is_present():
            return
        try:
            CIFAR10(self.root, train=True, download=True)
        except (OSError, RuntimeError) as err:  # URLError, socket/HTTP/disk errors, md5 mismatch
            raise RuntimeError(f"downloading CIFAR-10 failed ({err}). {self._missing_message()}") from err

    def _split(self, train: bool) -> CIFAR10:
        if not self._is_present():
            if self.download:
                self.prepare_data()
            else:
                raise FileNotFoundError(self._missing_message())
        try:
            return (CIFAR10 if self.verify_md5 else _UnverifiedCIFAR10)(self.root, train=train, download=False)
        except RuntimeError as err:
            raise FileNotFoundError(f"{self._missing_message()} ({err})") from err

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        train, test = self._split(True), self._split(False)
        p_img, p_lab = np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64)
        t_img, t_lab = np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64)
        p_img, p_lab = keep_stratified_subset(p_img, p_lab, self.num_private, seed=self.subset_seed)
        t_img, t_lab = keep_stratified_subset(t_img, t_lab, self.num_test, seed=self.subset_seed)
        return p_img, p_lab, t_img, t_lab, list(train.classes)



class _UnverifiedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 reader without the md5 checks (``verify_md5=False``): files need only exist."""

    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
