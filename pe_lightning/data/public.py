"""Public image sets for data-based simulators (:class:`~pe_lightning.apis.NearestImage`).

A *source* string names the set:

* a folder: ``<class>/<file>.png`` sub-folders (class names = folder names, as
  :class:`~pe_lightning.data.ImageFolderDataModule`), or image files directly in it (unlabelled);
* a ``.npz`` file with ``images`` (uint8 ``(N, H, W)`` or ``(N, H, W, C)``), optionally ``labels``
  (int ``(N,)``) and ``class_names`` (str ``(num_classes,)``; default ``"0"``, ``"1"``, ...);
* ``hf:<dataset>``: a Hugging Face dataset, by Hub id (``datasets.load_dataset``) or a folder
  written by ``Dataset.save_to_disk`` (the ``datasets`` package);
* ``sklearn:digits``: the 1,797 8 x 8 UCI handwritten digits bundled with scikit-learn
  (classes ``"0"`` .. ``"9"``; offline), upscaled into the central 20/28 of the image on black
  as MNIST lays out its digits: a public set for MNIST-like demos.

Every image is converted to ``channels`` (PIL ``L`` or ``RGB``; alpha dropped) and resized to
``image_size x image_size`` (bicubic) when it differs, in a deterministic order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from pe_lightning.data.folder import IMAGE_EXTENSIONS, list_class_folders
from pe_lightning.data.image_files import image_to_array, read_image

__all__ = ["PublicImages", "load_public_images"]

_BUILTIN = ("sklearn:digits",)


@dataclass(frozen=True)
class PublicImages:
    """A loaded public image set.

    Attributes:
        images: uint8 ``(N, image_size, image_size, channels)``.
        labels: int64 ``(N,)`` indices into ``class_names``, or ``None`` (unlabelled).
        class_names: the classes, or ``None`` (unlabelled).
        source: the source string it was loaded from.
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None
    source: str

    @property
    def fingerprint(self) -> str:
        """Hex digest of the images, labels and class names (identifies the set's content)."""
        h = hashlib.sha256()
        h.update(repr((self.images.shape, self.class_names)).encode())
        h.update(np.ascontiguousarray(self.images).data)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()[:16]


def _conform(image: Image.Image | np.ndarray, *, size: int, mode: str, where: str) -> np.ndarray:
    """One image as uint8 ``(size, size, C)`` in PIL ``mode``."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"{where}: expected a uint8 image (H, W) or (H, W, C) with C in (1, 3, 4), "
                             f"got {arr.dtype} {arr.shape}")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 2 and mode == "L" and arr.shape == (size, size):
            return arr[..., None]
        if arr.ndim == 3 and arr.shape == (size, size, 3) and mode == "RGB":
            return arr
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{where}: expected a PIL image or a uint8 array, got {type(image).__name__}")
    return image_to_array(image, mode=mode, size=(size, size))


def _stack(items: Iterable, *, size: int, mode: str, where: str) -> np.ndarray:
    out = [_conform(item, size=size, mode=mode, where=f"{where}, image {i}") for i, item in enumerate(items)]
    if not out:
        raise ValueError(f"{where} holds no images")
    return np.stack(out)


def _from_folder(root: Path, *, size: int, mode: str, source: str) -> PublicImages:
    if not root.is_dir():
        raise FileNotFoundError(f"public source {source!r}: no such folder (nor a .npz file, 'hf:...' or {_BUILTIN})")
    if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        classes = list_class_folders(root, field="source")
        names = sorted(classes)
        images, labels = [], []
        for label, name in enumerate(names):
            images.extend(read_image(path, mode=mode, size=(size, size)) for path in classes[name])
            labels.extend([label] * len(classes[name]))
        return PublicImages(np.stack(images), np.asarray(labels, dtype=np.int64), names, source)
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"public source {source!r}: the folder holds neither class folders nor image files "
                         f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    return PublicImages(np.stack([read_image(p, mode=mode, size=(size, size)) for p in files]), None, None, source)


def _from_npz(path: Path, *, size: int, mode: str, source: str) -> PublicImages:
    if not path.is_file():
        raise FileNotFoundError(f"public source {source!r}: no such .npz file")
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
        images = data["images"] if "images" in files else None
        labels = data["labels"] if "labels" in files else None
        names = [str(n) for n in data["class_names"]] if "class_names" in files else None
    except (OSError, ValueError) as err:
        raise ValueError(f"public source {source!r}: not a readable .npz file ({type(err).__name__}: {err})") from err
    if images is None:
        raise ValueError(f"public source {source!r}: the .npz file has no 'images' array (found {sorted(files)})")
    if images.ndim not in (3, 4):
        raise ValueError(f"public source {source!r}: 'images' must be (N, H, W) or (N, H, W, C), got {images.shape}")
    stacked = _stack(images, size=size, mode=mode, where=f"public source {source!r}")
    if labels is None:
        return PublicImages(stacked, None, None, source)
    labels = np.asarray(labels)
    if labels.shape != (len(stacked),) or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"public source {source!r}: 'labels' must be non-negative integers of shape "
                         f"({len(stacked)},), got {labels.dtype} {labels.shape}")
    if names is None:
        names = [str(c) for c in range(int(labels.max()) + 1)]
    if labels.max() >= len(names):
        raise ValueError(f"public source {source!r}: labels go up to {labels.max()} but 'class_names' has {len(names)} entries")
    return PublicImages(stacked, labels.astype(np.int64), names, source)


def _from_sklearn_digits(*, size: int, mode: str, source: str) -> PublicImages:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    raw = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    # The 8 x 8 digits fill their frame; lay them out as MNIST does: a 20/28 box, centred on black.
    inner = max(1, round(size * 20 / 28))
    framed = []
    for digit in raw:
        canvas = Image.new("L", (size, size), 0)
        canvas.paste(Image.fromarray(digit).resize((inner, inner), Image.Resampling.BICUBIC),
                     ((size - inner) // 2, (size - inner) // 2))
        framed.append(canvas)
    images = _stack(framed, size=size, mode=mode, where=f"public source {source!r}")
    return PublicImages(images, digits.target.astype(np.int64), [str(c) for c in range(10)], source)


def _datasets():
    try:
        import datasets  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "public source 'hf:...' needs the Hugging Face datasets package: pip install datasets"
        ) from err
    return datasets


def _from_hf(name: str, *, size: int, mode: str, source: str, split: str, image_column: str,
             label_column: str | None) -> PublicImages:
    datasets = _datasets()
    local = os.path.expanduser(name)
    try:
        ds = datasets.load_from_disk(local) if os.path.isdir(local) else datasets.load_dataset(name, split=split)
    except (OSError, ConnectionError, FileNotFoundError, ValueError) as err:
        raise RuntimeError(
            f"public source {source!r}: could not load the Hugging Face dataset {name!r} split {split!r} "
            f"({type(err).__name__}: {err}). Offline, on a machine with internet run "
            f"`datasets.load_dataset({name!r}, split={split!r}).save_to_disk('/path/to/copy')` and set "
            "source: hf:/path/to/copy (or keep a warm cache in $HF_HOME with HF_DATASETS_OFFLINE=1)"
        ) from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"public source {source!r}: no split {split!r} (splits: {sorted(ds)}); set hf_split")
        ds = ds[split]
    columns = list(ds.column_names)
    if image_column not in columns:
        raise ValueError(f"public source {source!r}: no image column {image_column!r} (columns: {columns}); "
                         "set hf_image_column")
    if label_column is not None and label_column not in columns:
        raise ValueError(f"public source {source!r}: no label column {label_column!r} (columns: {columns}); "
                         "set hf_label_column (null: unlabelled)")
    images = _stack((row[image_column] for row in ds.select_columns([image_column])), size=size, mode=mode,
                    where=f"public source {source!r}")
    if label_column is None:
        return PublicImages(images, None, None, source)
    values = list(ds[label_column])
    names = getattr(ds.features[label_column], "names", None)
    if names is not None:  # a ClassLabel column
        return PublicImages(images, np.asarray(values, dtype=np.int64), [str(n) for n in names], source)
    names = sorted({str(v) for v in values})
    index = {n: i for i, n in enumerate(names)}
    return PublicImages(images, np.asarray([index[str(v)] for v in values], dtype=np.int64), names, source)


def load_public_images(
    source: str,
    *,
    image_size: int,
    channels: int,
    hf_split: str = "train",
    hf_image_column: str = "image",
    hf_label_column: str | None = "label",
) -> PublicImages:
    """Load a public image set (see the module docstring for the ``source`` forms).

    Args:
        source: folder, ``.npz`` file, ``hf:<dataset>`` or ``sklearn:digits``.
        image_size: output side, pixels.
        channels: 1 (grayscale) or 3 (RGB).
        hf_split: split of a Hugging Face dataset.
        hf_image_column: its image column (PIL images or uint8 arrays).
        hf_label_column: its label column (a ``ClassLabel`` gives the class names; other
            values are classes by their sorted string form); ``None``: unlabelled.

    Returns:
        The images, labels and class names.

    Raises:
        FileNotFoundError: a missing folder or file.
        ValueError: an unreadable file or image, a missing array, column or split (named).
        RuntimeError: a Hugging Face dataset that cannot be loaded (offline hint).
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"public source must be a non-empty string, got {source!r}")
    mode = {1: "L", 3: "RGB"}[channels]
    if source in _BUILTIN:
        return _from_sklearn_digits(size=image_size, mode=mode, source=source)
    if source.startswith("hf:"):
        if not source[3:]:
            raise ValueError("public source 'hf:' needs a dataset id or a save_to_disk folder after the prefix")
        return _from_hf(source[3:], size=image_size, mode=mode, source=source, split=hf_split,
                        image_column=hf_image_column, label_column=hf_label_column)
    path = Path(os.path.expanduser(source))
    if path.suffix.lower() == ".npz":
        return _from_npz(path, size=image_size, mode=mode, source=source)
    return _from_folder(path, size=image_size, mode=mode, source=source)
