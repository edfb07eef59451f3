"""The real images a quality metric compares the population with: the held-out split by default."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import numpy as np

__all__ = ["REAL_SPLITS", "real_images"]

#: ``'test'``: the data module's held-out split (never votes); ``'private'``: outside the DP guarantee.
REAL_SPLITS = ("test", "private")


def real_images(trainer: pl.Trainer, *, split: str, key: str, min_images: int = 2) -> np.ndarray:
    """The data module's ``split`` images, uint8 ``(N, H, W, C)``.

    Args:
        trainer: the running trainer (its ``datamodule`` holds the splits).
        split: one of :data:`REAL_SPLITS`. ``'private'`` warns that the metric ``key`` is
            NOT covered by the DP guarantee.
        key: the metric's name, for messages.
        min_images: fewest images the metric needs.

    Raises:
        ValueError: the split is missing or has fewer than ``min_images`` images.
    """
    dm = trainer.datamodule
    if split == "private":
        warnings.warn(
            f"{key} is computed against the PRIVATE images; it is NOT covered by the DP guarantee",
            UserWarning,
            stacklevel=3,
        )
        images = dm.private_images
    else:
        images = dm.test_images
    if images is None or len(images) < min_images:
        raise ValueError(f"{key}: the data module's {split} split needs at least {min_images} images")
    return images
