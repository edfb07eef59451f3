"""Image grids of synthetic samples (one row per class) written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pe_lightning.atomic import atomic_write
from pe_lightning.images import check_images

__all__ = ["class_grid", "save_png"]


def class_grid(images: np.ndarray, labels: np.ndarray, *, samples_per_class: int = 10, num_classes: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile the first ``samples_per_class`` images of each class into one image.

    Args:
        images: uint8 ``(N, H, W, C)``.
        labels: int ``(N,)``.
        samples_per_class: columns.
        num_classes: rows (default ``labels.max() + 1``); missing samples stay black.
        padding: pixels between tiles.

    Returns:
        uint8 ``(rows * (H + p) + p, cols * (W + p) + p, C)``.
    """
    check_images(images, name="images", channels=None)
    n_cls = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 1))
    _, h, w, c = images.shape
    grid = np.zeros((n_cls * (h + padding) + padding, samples_per_class * (w + padding) + padding, c), dtype=np.uint8)
    for row in range(n_cls):
        idx = np.flatnonzero(labels == row)[:samples_per_class]
        for col, i in enumerate(idx):
            y, x = padding + row * (h + padding), padding + col * (w + padding)
            grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike, *, upscale: int = 1) -> Path:
    """Write a uint8 ``(H, W, C)`` image as PNG atomically (optionally nearest-upscaled)."""
    arr = image[..., 0] if image.shape[-1] == 1 else image
    pil = Image.fromarray(arr)
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
