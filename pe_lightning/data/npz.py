"""Private images from ``.npz`` files: ``images``, ``labels`` and optionally ``clients``.

The format is the one :meth:`pe_lightning.Population.save` writes, so a synthetic set can
be fed back in, and the usual way to hand PE a data set that lives in arrays::

    np.savez("private.npz", images=uint8 (N, H, W, C), labels=int (N,), clients=int (N,),
             class_names=np.array(["cat", "dog"]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.splits import stratified_split

__all__ = ["NpzDataModule"]


def _read(path: str, *, field: str) -> dict[str, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{field}={path!r} is not a file")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{field}={path!r} is not a readable .npz file: {err}") from err
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(f"{field}={path!r} has no {missing} array(s); expected 'images' (N, H, W, C) uint8 and 'labels' (N,)")
    return arrays


class NpzDataModule(PrivateImageDataModule):
    """Private (and test) images from ``.npz`` files.

    Args:
        private_path: ``.npz`` with ``images`` uint8 ``(N, H, W, C)``, ``labels`` int
            ``(N,)``, optionally ``clients`` int ``(N,)`` (client ids for client-level DP)
            and ``class_names`` (strings; default ``"0" .. "K-1"``).
        test_path: ``.npz`` of held-out images in the same format; ``None`` holds out a
            stratified ``test_fraction`` of ``private_path`` (never voting).
        test_fraction: fraction held out per class when ``test_path`` is None.
        split_seed: seed of that split.
        batch_size: private indices per ``train_dataloader`` batch.
    """

    def __init__(
        self,
        *,
        private_path: str,
        test_path: str | None = None,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 4096,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.private_path = str(private_path)
        self.test_path = None if test_path is None else str(test_path)
        self.test_fraction = float(test_fraction)
        self.split_seed = split_seed

    @property
    def test_split_from_private(self) -> bool:
        """``True`` when ``test_path`` is not given: the held-out split is carved out of the private data."""
        return self.test_path is None

    def load(self) -> tuple[np.ndarray, ...]:
        private = _read(self.private_path, field="private_path")
        labels = np.asarray(private["labels"]).astype(np.int64)
        if "class_names" in private:
            names: Sequence[str] = [str(n) for n in private["class_names"]]
        else:
            names = [str(c) for c in range(int(labels.max()) + 1 if len(labels) else 0)]
        clients = private.get("clients")
        if self.test_path is not None:
            test = _read(self.test_path, field="test_path")
            p_img, p_lab, t_img, t_lab = private["images"], labels, test["images"], np.asarray(test["labels"]).astype(np.int64)
        else:
            keep, held = stratified_split(labels, self.test_fraction, seed=self.split_seed, min_per_class=1)
            p_img, p_lab, t_img, t_lab = private["images"][keep], labels[keep], private["images"][held], labels[held]
            clients = None if clients is None else clients[keep]
        if clients is None:
            return p_img, p_lab, t_img, t_lab, names
        return p_img, p_lab, t_img, t_lab, names, clients
