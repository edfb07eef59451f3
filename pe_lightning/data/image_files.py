"""Reading one image file into a uint8 array, with errors that name the file."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["read_image"]

_GRAYSCALE_MODES = ("L", "1", "I", "I;16", "F")


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
            target = mode or ("L" if img.mode in _GRAYSCALE_MODES else "RGB")
            img = img.convert(target)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL's errors for corrupt/truncated files
        raise ValueError(
            f"cannot read image file {str(path)!r}: not a readable image, corrupt or truncated "
            f"({type(err).__name__}: {err})"
        ) from err
    return arr[..., None] if arr.ndim == 2 else arr
