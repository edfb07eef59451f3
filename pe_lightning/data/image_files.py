"""Reading one image file into a uint8 array, with errors that name the file."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["image_to_array", "parse_image_size", "read_image"]

_GRAYSCALE_MODES = ("L", "1", "I", "I;16", "F")


def parse_image_size(image_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``(height, width)`` from an ``image_size`` argument: an int (square), a pair, or ``None`` (keep)."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"image_size must be None, an int >= 1 or (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


def image_to_array(img: Image.Image, *, mode: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """A loaded PIL image as uint8 ``(H, W, C)`` (``mode`` and ``size`` as in :func:`read_image`)."""
    target = mode or ("L" if img.mode in _GRAYSCALE_MODES else "RGB")
    img = img.convert(target)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_image(path: str | os.PathLike, *, mode: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, C)``.

    Args:
        path: the file.
        mode: PIL mode to convert to, ``"L"`` (``C = 1``) or ``"RGB"`` (``C = 3``, alpha
            dropped); ``None`` keeps grayscale files grayscale and converts the rest to RGB.
        size: ``(height, width)`` to resize to (bicubic), or ``None`` to keep the size.

    Raises:
        ValueError: naming ``path`` when the file is not a readable image (corrupt,
            truncated, empty or another format).
    """
    try:
        with Image.open(path) as img:
            img.load()
            return image_to_array(img, mode=mode, size=size)
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL's errors for corrupt/truncated files
        raise ValueError(
            f"cannot read image file {str(path)!r}: not a readable image, corrupt or truncated "
            f"({type(err).__name__}: {err})"
        ) from err
