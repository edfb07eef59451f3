"""Private images from a Hugging Face ``datasets`` data set: a hub id or a local folder.

::

    data:
      class_path: pe_lightning.data.HFDataModule
      init_args:
        path: uoft-cs/cifar10          # or a save_to_disk folder, a parquet folder or file
        image_column: img
        label_column: label
        private_split: train
        test_split: test

``datasets`` is imported only when the data is loaded. Offline (``HF_HUB_OFFLINE=1`` or
``HF_DATASETS_OFFLINE=1``, or no network), a hub id must already be in the local cache;
otherwise the error names the data set and how to pre-download it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.image_files import image_to_array, parse_image_size
from pe_lightning.data.splits import keep_stratified_subset, stratified_split

__all__ = ["HFDataModule"]


def _is_saved_to_disk(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


class HFDataModule(PrivateImageDataModule):
    """Private (and held-out test) images from a Hugging Face data set.

    Args:
        path: a hub id (``"ylecun/mnist"``, ``"uoft-cs/cifar10"``), a local folder written by
            ``save_to_disk``, a local folder of parquet files (named ``<split>-*.parquet``,
            as on the hub), or one parquet file (its rows are the ``private_split``).
        name: the data set's configuration (hub ids with several configurations).
        private_split: the split whose images vote.
        test_split: the held-out split (evaluation only, e.g. FID). ``None``: hold out
            ``test_fraction`` of each class of the private split instead (they never vote).
        test_fraction: the per-class held-out fraction when ``test_split`` is ``None``.
        image_column: the column of images (an ``Image`` feature, PIL images or arrays).
        label_column: the column of class labels: a ``ClassLabel`` (its names become the
            class names), integers (names ``"0"``, ``"1"``, ...) or strings (sorted). ``None``:
            one class, ``"all"``.
        num_private: keep a deterministic stratified subset of this many private images.
        num_test: keep a deterministic stratified subset of this many test images.
        image_size: resize every image to ``image_size`` (an int or ``(height, width)``;
            bicubic); ``None`` keeps the size (then all images must have one size).
        channels: 1 (grayscale) or 3 (RGB).
        split_seed: seed of the subsets and of the held-out split.
        revision: the hub revision (branch, tag or commit).
        cache_dir: the ``datasets`` cache folder (default: ``HF_DATASETS_CACHE``).
        batch_size: private indices per ``train_dataloader`` batch.

    Raises (in :meth:`setup`):
        FileNotFoundError: the data set is neither a local folder/file nor reachable on
            the hub (offline: not in the cache), with how to pre-download it.
        ValueError: a missing split or column (the available ones named), or images of
            different sizes without ``image_size``.
    """

    def __init__(
        self,
        *,
        path: str,
        name: str | None = None,
        private_split: str = "train",
        test_split: str | None = "test",
        test_fraction: float = 0.1,
        image_column: str = "image",
        label_column: str | None = "label",
        num_private: int | None = None,
        num_test: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        channels: int = 3,
        split_seed: int = 0,
        revision: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 4096,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not path:
            raise ValueError("HFDataModule path must be a hub id or a local folder, got an empty value")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"HFDataModule test_fraction must be in (0, 1), got {test_fraction}")
        if channels not in (1, 3):
            raise ValueError(f"HFDataModule channels must be 1 or 3, got {channels}")
        for field, n in (("num_private", num_private), ("num_test", num_test)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"HFDataModule {field} must be None or an integer >= 1, got {n!r}")
        self.path = str(path)
        self.name = name
        self.private_split = private_split
        self.test_split = test_split
        self.test_fraction = float(test_fraction)
        self.image_column = image_column
        self.label_column = label_column
        self.num_private = num_private
        self.num_test = num_test
        self._size = parse_image_size(image_size)
        self.channels = channels
        self.split_seed = split_seed
        self.revision = revision
        self.cache_dir = cache_dir

    # ------------------------------------------------------------- loading
    def _pre_download_hint(self) -> str:
        args = repr(self.path) + (f", {self.name!r}" if self.name else "")
        return (
            f"pre-download it on a machine with internet: python -c \"import datasets; "
            f"datasets.load_dataset({args}).save_to_disk('DIR')\", copy DIR here and set path: DIR "
            f"(or fill this machine's cache: hf download {self.path} --repo-type dataset, with the same HF_HOME)"
        )

    def _load(self) -> dict[str, Any]:
        """``{split: datasets.Dataset}`` from the hub id or the local path."""
        import datasets

        local = Path(self.path).expanduser()
        if _is_saved_to_disk(local):
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file() and local.suffix == ".parquet":
            loaded = datasets.load_dataset("parquet", data_files={self.private_split: str(local)}, cache_dir=self.cache_dir)
        elif local.is_dir():
            loaded = datasets.load_dataset(str(local), cache_dir=self.cache_dir)
        else:
            loaded = self._load_from_hub(datasets)
        if isinstance(loaded, datasets.Dataset):  # one split saved on its own
            return {self.private_split: loaded}
        return dict(loaded)

    def _load_from_hub(self, datasets: Any) -> Any:
        offline = bool(datasets.config.HF_HUB_OFFLINE)
        try:
            return datasets.load_dataset(self.path, self.name, revision=self.revision, cache_dir=self.cache_dir)
        except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:
            where = "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and not in the local cache" if offline else (
                "not a local folder, and loading it from the Hugging Face hub failed"
            )
            raise FileNotFoundError(
                f"Hugging Face data set {self.path!r}{f' (configuration {self.name!r})' if self.name else ''} is {where} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); {self._pre_download_hint()}"
            ) from err

    def _column(self, split: Any, column: str, *, split_name: str) -> list:
        if column not in split.column_names:
            raise ValueError(
                f"HFDataModule: split {split_name!r} of {self.path!r} has no column {column!r}; "
                f"its columns are {split.column_names}"
            )
        return split[column]

    def _images(self, split: Any, *, split_name: str) -> np.ndarray:
        mode = "L" if self.channels == 1 else "RGB"
        arrays, first = [], None
        for i, item in enumerate(self._column(split, self.image_column, split_name=split_name)):
            img = item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item))
            arr = image_to_array(img, mode=mode, size=self._size)
            if first is None:
                first = arr.shape
            elif arr.shape != first:
                raise ValueError(
                    f"HFDataModule: image {i} of split {split_name!r} has shape {arr.shape} but the first has {first}; "
                    "set image_size to resize all images to one size"
                )
            arrays.append(arr)
        if not arrays:
            raise ValueError(f"HFDataModule: split {split_name!r} of {self.path!r} is empty")
        return np.stack(arrays).astype(np.uint8, copy=False)

    def _class_names(self, splits: dict[str, Any]) -> list[str] | None:
        """Class names of a ``ClassLabel`` label column, else ``None``."""
        feature = splits[self.private_split].features.get(self.label_column)
        names = getattr(feature, "names", None)
        return [str(n) for n in names] if names else None

    def _labels(self, values: Sequence, *, names: list[str]) -> np.ndarray:
        index = {n: i for i, n in enumerate(names)}
        return np.asarray([index[str(v)] for v in values], dtype=np.int64)

    @property
    def test_split_from_private(self) -> bool:
        """``True`` when ``test_split`` is ``None``: the held-out split is carved out of the private data."""
        return self.test_split is None

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        splits = self._load()
        wanted = [self.private_split] + ([self.test_split] if self.test_split is not None else [])
        missing = [s for s in wanted if s not in splits]
        if missing:
            raise ValueError(f"HFDataModule: {self.path!r} has no split {missing[0]!r}; its splits are {sorted(splits)}")
        raw = {s: splits[s] for s in wanted}
        if self.label_column is None:
            names = ["all"]
            labels = {s: np.zeros(len(d), dtype=np.int64) for s, d in raw.items()}
        else:
            values = {s: self._column(d, self.label_column, split_name=s) for s, d in raw.items()}
            names = self._class_names(splits)
            if names is not None:  # ClassLabel: the values are already indices into names
                labels = {s: np.asarray(v, dtype=np.int64) for s, v in values.items()}
            else:
                seen = {v for vs in values.values() for v in vs}
                ints = all(isinstance(v, (int, np.integer)) for v in seen)
                names = [str(v) for v in sorted(seen)] if not ints else [str(v) for v in range(max(seen) + 1)]
                labels = {s: self._labels(v, names=names) for s, v in values.items()}
        p_img, p_lab = self._images(raw[self.private_split], split_name=self.private_split), labels[self.private_split]
        if self.test_split is not None:
            t_img, t_lab = self._images(raw[self.test_split], split_name=self.test_split), labels[self.test_split]
        else:
            kept, held = stratified_split(p_lab, self.test_fraction, seed=self.split_seed, min_per_class=1)
            t_img, t_lab, p_img, p_lab = p_img[held], p_lab[held], p_img[kept], p_lab[kept]
        p_img, p_lab = keep_stratified_subset(p_img, p_lab, self.num_private, seed=self.split_seed)
        t_img, t_lab = keep_stratified_subset(t_img, t_lab, self.num_test, seed=self.split_seed)
        return p_img, p_lab, t_img, t_lab, names
