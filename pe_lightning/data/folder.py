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
from pe_lightning.data.image_files import parse_image_size, read_image
from pe_lightning.data.splits import stratified_split

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataModule", "list_class_folders"]

#: File extensions (lower case) read as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def list_class_folders(root: Path, *, field: str) -> dict[str, list[Path]]:
    """Map each class folder of ``root`` (``<class>/<file>.png``) to its sorted image files; ``field`` names ``root`` in errors."""
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


#: PIL modes without colour (grayscale, with or without alpha); every other mode counts as colour.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def infer_channels(files: list[Path]) -> int:
    """1 when every image file is grayscale, 3 when every one is colour (read from the headers only).

    Raises:
        ValueError: an unreadable file (named), or a mix of grayscale and colour files (one of each named).
    """
    from PIL import Image

    gray = colour = None
    for path in files:
        try:
            with Image.open(path) as img:
                mode = img.mode
                if mode == "P":  # a palette image is grayscale when its palette is
                    mode = "L" if _palette_is_gray(img) else "RGB"
        except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL's errors for unreadable files
            raise ValueError(
                f"cannot read image file {str(path)!r}: not a readable image ({type(err).__name__}: {err})"
            ) from err
        if mode in GRAY_MODES:
            gray = gray or path
        else:
            colour = colour or path
        if gray and colour:
            raise ValueError(
                f"the image folders mix grayscale ({str(gray)!r}) and colour ({str(colour)!r}) images: set the data "
                "module's channels to 1 (convert all to grayscale) or 3 (RGB)"
            )
    return 1 if gray else 3


def _palette_is_gray(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


class ImageFolderDataModule(PrivateImageDataModule):
    """Private (and test) images from ``ImageFolder``-style folders.

    Args:
        private_dir: root of the private images, one sub-folder per class.
        test_dir: root of the held-out test images with the same class folder names. If
            ``None``, a deterministic stratified fraction ``test_fraction`` of each class of
            ``private_dir`` is held out as the test split (and does not vote).
        test_fraction: fraction in ``[0, 1)`` held out per class when ``test_dir`` is None;
            each class holds out ``max(1, test_fraction * n_c rounded half up)`` images and keeps at
            least one private image (a class with a single image is an error). ``0``: every
            image votes and the test split is empty (the paper's Cat runs: all 100 photos vote).
        image_size: resize every image to ``image_size x image_size`` pixels (bicubic,
            antialiased), or to ``(height, width)``. ``None`` keeps the size, and then every
            image (private and test) must have the same size.
        channels: 1 (convert to grayscale, PIL mode ``L``) or 3 (RGB; alpha is dropped).
            ``None`` (default): taken from the files' format, read from their headers (1 when
            every image is grayscale, 3 when every image is colour; a folder that mixes both
            is an error naming one file of each). Like the image size, the format is treated
            as the data's public schema; set it explicitly to not depend on the files.
        split_seed: seed of the held-out split when ``test_dir`` is None.
        batch_size: private indices per ``train_dataloader`` batch.
        clients: client (user) ids of the private images, for client-level DP:
            ``"subfolder"`` reads them from one more folder level
            (``private_dir/<class>/<client>/<file>``; a client may appear in several
            classes), or the path of a CSV file with a header ``path,client`` whose paths
            are relative to ``private_dir`` (every private image must be listed). ``None``:
            no client ids.

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
        channels: int | None = None,
        split_seed: int = 0,
        batch_size: int = 4096,
        clients: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not private_dir:
            raise ValueError("private_dir must be a folder path, got an empty value")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None (from the files), got {channels}")
        self._size = parse_image_size(image_size)
        self.private_dir = str(private_dir)
        self.test_dir = None if test_dir is None else str(test_dir)
        self.test_fraction = float(test_fraction)
        self.image_size = image_size
        self.channels = channels
        self.split_seed = split_seed
        self.clients = clients

    def _read_all(self, classes: dict[str, list[Path]], names: list[str], state: dict) -> tuple[np.ndarray, np.ndarray]:
        mode = "L" if state["channels"] == 1 else "RGB"
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

    def _client_ids(self, private: dict[str, list[Path]], names: list[str]) -> np.ndarray:
        """Client id of every private file, in the order :meth:`_read_all` reads them."""
        root = Path(self.private_dir)
        files = [path for name in names for path in private[name]]
        if self.clients == "subfolder":
            keys = []
            for path in files:
                rel = path.relative_to(root)
                if len(rel.parts) < 3:
                    raise ValueError(
                        f"clients='subfolder' expects private_dir/<class>/<client>/<file>, but {str(path)!r} is directly "
                        "in its class folder"
                    )
                keys.append(rel.parts[1])
        else:
            import csv

            table = Path(self.clients)
            if not table.is_file():
                raise FileNotFoundError(f"clients={self.clients!r}: expected 'subfolder' or an existing CSV file")
            with open(table, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"path", "client"} <= set(rows[0]):
                raise ValueError(f"clients CSV {str(table)!r} must have the columns 'path' and 'client', got {list(rows[0])}")
            by_path = {Path(r["path"]).as_posix(): r["client"] for r in rows}
            keys = []
            for path in files:
                rel = path.relative_to(root).as_posix()
                if rel not in by_path:
                    raise ValueError(f"clients CSV {str(table)!r} has no row for the private image {rel!r}")
                keys.append(by_path[rel])
        ids = {k: i for i, k in enumerate(sorted(set(keys)))}
        return np.asarray([ids[k] for k in keys], dtype=np.int64)

    @property
    def test_split_from_private(self) -> bool:
        """``True`` when ``test_dir`` is not given: the held-out split is carved out of the private data."""
        return self.test_dir is None

    def load(self) -> tuple[np.ndarray, ...]:
        private = list_class_folders(Path(self.private_dir), field="private_dir")
        names = sorted(private)
        test = list_class_folders(Path(self.test_dir), field="test_dir") if self.test_dir is not None else {}
        files = [f for folder in (private, test) for name in names for f in folder.get(name, [])]
        state: dict = {"channels": self.channels if self.channels is not None else infer_channels(files)}
        if self.test_dir is not None:
            if set(test) != set(private):
                missing, extra = sorted(set(private) - set(test)), sorted(set(test) - set(private))
                raise ValueError(
                    f"test_dir={self.test_dir!r} must have the same class folders as private_dir="
                    f"{self.private_dir!r}: missing in test_dir {missing}, extra in test_dir {extra}"
                )
            p_img, p_lab = self._read_all(private, names, state)
            t_img, t_lab = self._read_all(test, names, state)
            held = np.zeros(len(p_lab), dtype=bool)
        else:
            images, labels = self._read_all(private, names, state)
            held = self._holdout(labels, names) if self.test_fraction > 0 else np.zeros(len(labels), dtype=bool)
            p_img, p_lab, t_img, t_lab = images[~held], labels[~held], images[held], labels[held]
        if self.clients is None:
            return p_img, p_lab, t_img, t_lab, names
        return p_img, p_lab, t_img, t_lab, names, self._client_ids(private, names)[~held]
