"""Private images from a folder tree in the ``ImageFolder`` layout.

::

    private_dir/
        cat/001.png
        cat/002.jpg
        dog/xyz.png
        ...

Class names are the sorted names of the sub-folders; label ``i`` is ``class_names[i]``.
Files are found recursively under each class folder and read in sorted path order, so the
arrays are deterministic. Files whose extension is not an image extension are ignored, as
are hidden files and folders (names starting with ``.``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.image_files import read_image
from pe_lightning.data.splits import stratified_split

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataModule"]

#: File extensions (lower case) read as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _list_classes(root: Path, *, field: str) -> dict[str, list[Path]]:
    """Map each class folder name to its sorted image files; validates the layout."""
    if not root.is_dir():
        raise FileNotFoundError(f"{field}={str(root)!r} is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = (
            f" (found {len(loose)} image file(s) directly in it; put them in one sub-folder per class)"
            if loose
            else ""
        )
        raise ValueError(
            f"{field}={str(root)!r} has no class folders; expected the layout <class>/<file>.png{hint}"
        )
    classes: dict[str, list[Path]] = {}
    for d in class_dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            files.extend(
                Path(dirpath) / n
                for n in filenames
                if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
            )
        if not files:
            raise ValueError(
                f"class folder {str(d)!r} (in {field}) contains no images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        classes[d.name] = sorted(files)
    return classes


class ImageFolderDataModule(PrivateImageDataModule):
    """Private (and test) images from ``ImageFolder``-style folders.

    Args:
        private_dir: root of the private images, one sub-folder per class.
        test_dir: root of the held-out test images with the same class folder names. If
            ``None``, a deterministic stratified fraction ``test_fraction`` of each class of
            ``private_dir`` is held out as the test split (and does not vote).
        test_fraction: fraction in ``(0, 1)`` held out per class when ``test_dir`` is None;
            each class holds out ``max(1, test_fraction * n_c rounded half up)`` images and keeps at
            least one private image (a class with a single image is an error).
        image_size: resize every image to ``image_size x image_size`` pixels (bicubic,
            antialiased), or to ``(height, width)``. ``None`` keeps the size, and then every
            image (private and test) must have the same size.
        channels: 1 (convert to grayscale, PIL mode ``L``) or 3 (RGB; alpha is dropped).
        split_seed: seed of the held-out split when ``test_dir`` is None.
        batch_size: private indices per ``train_dataloader`` batch.

    Raises (in :meth:`setup`):
        FileNotFoundError: a folder does not exist.
        ValueError: no class folders, a class folder without images, an unreadable image
            (named), mismatched sizes without ``image_size`` (first offending file named),
            or ``test_dir`` with a different class set.
    """

    def __init__(
        self,
        *,
        private_dir: str,
        test_dir: str | None = None,
        test_fraction: float = 0.1,
        image_size: int | tuple[int, int] | None = None,
        channels: int = 3,
        split_seed: int = 0,
        batch_size: int = 4096,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not private_dir:
            raise ValueError("private_dir must be a folder path, got an empty value")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size is not None:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
                raise ValueError(f"image_size must be None, an int >= 1 or (height, width), got {image_size!r}")
            self._size: tuple[int, int] | None = (int(size[0]), int(size[1]))
        else:
            self._size = None
        self.private_dir = str(private_dir)
        self.test_dir = None if test_dir is None else str(test_dir)
        self.test_fraction = float(test_fraction)
        self.image_size = image_size
        self.channels = channels
        self.split_seed = split_seed

    def _read_all(self, classes: dict[str, list[Path]], names: list[str], state: dict) -> tuple[np.ndarray, np.ndarray]:
        mode = "L" if self.channels == 1 else "RGB"
        images, labels = [], []
        for label, name in enumerate(names):
            for path in classes[name]:
                arr = read_image(path, mode=mode, size=self._size)
                if self._size is None:
                    if state.get("shape") is None:
                        state["shape"], state["first"] = arr.shape, path
                    elif arr.shape != state["shape"]:
                        h0, w0 = state["shape"][:2]
                        raise ValueError(
                            f"image {str(path)!r} is {arr.shape[1]}x{arr.shape[0]} (WxH) but "
                            f"{str(state['first'])!r} is {w0}x{h0}: expected shape {state['shape']} (H, W, C), "
                            f"found {arr.shape}. Without image_size every image must have the same size; "
                            "set image_size to resize all images to one size"
                        )
                images.append(arr)
                labels.append(label)
        return np.stack(images).astype(np.uint8, copy=False), np.asarray(labels, dtype=np.int64)

    def _holdout(self, labels: np.ndarray, names: list[str]) -> np.ndarray:
        """Boolean mask of held-out test rows: per class, a seeded random choice."""
        for c, name in enumerate(names):
            n_c = int((labels == c).sum())
            if n_c < 2:
                raise ValueError(
                    f"class {name!r} in private_dir has {n_c} image; at least 2 are needed to hold "
                    "out a test image (or give test_dir)"
                )
        _, held = stratified_split(labels, self.test_fraction, seed=self.split_seed, min_per_class=1)
        mask = np.zeros(len(labels), dtype=bool)
        mask[held] = True
        return mask

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        private = _list_classes(Path(self.private_dir), field="private_dir")
        names = sorted(private)
        state: dict = {}
        if self.test_dir is not None:
            test = _list_classes(Path(self.test_dir), field="test_dir")
            if set(test) != set(private):
                missing, extra = sorted(set(private) - set(test)), sorted(set(test) - set(private))
                raise ValueError(
                    f"test_dir={self.test_dir!r} must have the same class folders as private_dir="
                    f"{self.private_dir!r}: missing in test_dir {missing}, extra in test_dir {extra}"
                )
            p_img, p_lab = self._read_all(private, names, state)
            t_img, t_lab = self._read_all(test, names, state)
        else:
            images, labels = self._read_all(private, names, state)
            held = self._holdout(labels, names)
            p_img, p_lab, t_img, t_lab = images[~held], labels[~held], images[held], labels[held]
        return p_img, p_lab, t_img, t_lab, names
