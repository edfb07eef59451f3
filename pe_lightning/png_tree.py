"""A population as an ImageFolder-style PNG tree ``<class>/<index>.png``: the writer and the reader.

:meth:`Population.save_image_folder <pe_lightning.population.Population.save_image_folder>`
and :meth:`~pe_lightning.population.Population.save` write with :func:`write_png_tree`;
:func:`~pe_lightning.classifier.load_image_tree` (the downstream classifier's data) reads
with :func:`read_png_tree`. ``<index>`` is the sample's position in the population, zero
padded to six digits, so reading a tree written here gives back the same order.

Private image folders (any image format, nested client folders, class names taken from
the folders) are read by :class:`~pe_lightning.data.ImageFolderDataModule` instead; it has
a different job (and a different layout contract) and shares only
:func:`~pe_lightning.data.image_files.read_image`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pe_lightning.atomic import atomic_directory, names_file
from pe_lightning.data.image_files import read_image
from pe_lightning.images import check_images

__all__ = ["check_class_names", "read_png_tree", "save_png_tree", "write_png_tree"]

_SUFFIX = ".png"


def check_class_names(labels: np.ndarray, class_names: Sequence[str] | None) -> None:
    """Raise ``ValueError`` if a label has no entry in ``class_names`` (``None``: folders named by label).

    Args:
        labels: int ``(N,)`` class indices.
        class_names: folder name of each class, index = label, or ``None``.
    """
    labels = np.asarray(labels)
    if class_names is not None and labels.size and int(labels.max()) >= len(class_names):
        bad = np.unique(labels[labels >= len(class_names)])[:5].tolist()
        raise ValueError(
            f"Population labels {bad} are outside the class list [0, {len(class_names)}) of "
            f"class_names={list(class_names)}"
        )


def write_png_tree(
    folder: str | os.PathLike, *, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> None:
    """Write ``folder/<class>/<index>.png`` for every image into an existing folder (not atomic).

    Use :func:`save_png_tree` for an atomic write; this is the fill step, for callers that
    write more into the same temporary folder before renaming it into place.

    Args:
        folder: an existing, writable folder.
        images: uint8 ``(N, H, W, C)``, ``C`` 1 (grayscale PNG), 3 (RGB) or 4 (RGBA).
        labels: int ``(N,)``; sample ``i`` goes to ``class_names[labels[i]]`` (or
            ``str(labels[i])`` when ``class_names`` is ``None``) as ``{i:06d}.png``.
        class_names: folder name of each class, index = label.

    Raises:
        ValueError: bad ``images``, or a label without an entry in ``class_names``.
        OSError: a file cannot be written (the error names it).
    """
    images = check_images(images, name="PNG tree images", channels=(1, 3, 4))
    check_class_names(labels, class_names)
    folder = Path(folder)
    for i, (img, lab) in enumerate(zip(images, labels)):
        name = class_names[lab] if class_names is not None else str(int(lab))
        sub = folder / str(name)
        sub.mkdir(exist_ok=True)
        arr = img[..., 0] if img.shape[-1] == 1 else img
        path = sub / f"{i:06d}{_SUFFIX}"
        with names_file(path):  # a full disk names the file
            Image.fromarray(arr).save(path)


def save_png_tree(
    path: str | os.PathLike, *, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> Path:
    """Write the tree of :func:`write_png_tree` atomically at ``path`` (temporary folder, then rename).

    Args:
        path: the tree's root; an existing tree there is replaced only once the new one is complete.
        images: as in :func:`write_png_tree`.
        labels: as in :func:`write_png_tree`.
        class_names: as in :func:`write_png_tree`.

    Returns:
        ``path``.

    Raises:
        ValueError: as in :func:`write_png_tree` (checked before anything is written).
        OSError: ``path``'s folder is not writable (named); an existing tree at ``path``
            is kept when writing fails.
    """
    check_class_names(labels, class_names)
    return atomic_directory(path, lambda tmp: write_png_tree(tmp, images=images, labels=labels, class_names=class_names))


def read_png_tree(root: str | os.PathLike, *, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a tree ``<root>/<class>/<index>.png`` as images and labels.

    Folder names are mapped to labels by their position in ``class_names`` (the private
    data module's class order). Images are ordered by their numeric file index when every
    file name is a number (the order :func:`write_png_tree` wrote them in), else by class
    and file name. Hidden files and folders (``.`` prefix) and non-PNG files are ignored.

    Args:
        root: the tree's root folder.
        class_names: class names, index = label.

    Returns:
        ``(images, labels)``: uint8 ``(N, H, W, C)`` and int64 ``(N,)``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: unknown class folders, no images, an unreadable (corrupt or truncated)
            file, or images of different shapes or channel counts (the file is named).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"population image folder not found: {root}")
    label_of = {str(name): i for i, name in enumerate(class_names)}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in label_of]
    if unknown:
        raise ValueError(
            f"{root}: class folders {unknown} are not classes of the real data module; expected folder names among "
            f"{list(label_of)}"
        )
    entries: list[tuple[int, int, str, Path]] = []
    for folder in folders:
        for f in folder.iterdir():
            if f.is_file() and f.suffix.lower() == _SUFFIX and not f.name.startswith("."):
                stem_is_index = re.fullmatch(r"\d+", f.stem) is not None
                entries.append((int(f.stem) if stem_is_index else -1, label_of[folder.name], f.name, f))
    if not entries:
        raise ValueError(f"{root}: no images found (expected <class>/<index>.png)")
    if all(e[0] >= 0 for e in entries):
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
    else:
        entries.sort(key=lambda e: (e[1], e[2]))
    images = []
    shape = None
    for _, _, _, path in entries:
        arr = read_image(path)
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise ValueError(
                f"{path}: image shape {arr.shape} (H, W, C) differs from {shape} of {entries[0][3]}; every image "
                f"of a population must have one shape (expected {shape}, found {arr.shape})"
            )
        images.append(arr)
    return np.stack(images), np.array([e[1] for e in entries], dtype=np.int64)
