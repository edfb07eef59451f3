"""Validation of uint8 NHWC image batches, the one image layout the library passes around.

Every module that takes a batch of images (populations, API outputs, private data,
embeddings, the downstream classifier, grids) checks it here, so the error a user sees
for a bad array is worded the same way everywhere and names the offending field.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["check_image_tensor", "check_images"]


def _describe(images: Any) -> str:
    """``"<dtype> <shape>"`` of an array or tensor, or its type name for anything else."""
    dtype = getattr(images, "dtype", None)
    shape = getattr(images, "shape", None)
    if dtype is None or shape is None:
        return type(images).__name__
    return f"{dtype} {tuple(shape)}"


def _problem(
    *, name: str, is_uint8: bool, shape: Sequence[int] | None, channels: Sequence[int] | None, expected_hwc: Sequence[int] | None
) -> str | None:
    """The error message for a batch with these properties, or ``None`` when it is valid."""
    want = "uint8 (N, H, W, C)"
    if channels is not None:
        want += f" with C in {tuple(channels)}"
    if expected_hwc is not None:
        want += f" and (H, W, C) = {tuple(expected_hwc)}"
    ok = (
        is_uint8
        and shape is not None
        and len(shape) == 4
        and (channels is None or shape[-1] in tuple(channels))
        and (expected_hwc is None or tuple(shape[1:]) == tuple(expected_hwc))
    )
    return None if ok else f"{name} must be {want}"


def check_images(
    images: Any,
    *,
    name: str,
    channels: tuple[int, ...] | None = (1, 3),
    shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Validate a numpy uint8 ``(N, H, W, C)`` batch and return it C-contiguous.

    Args:
        images: the batch to check.
        name: the field it came from, used in the error (e.g. ``"Population.images"``).
        channels: allowed values of ``C`` (last axis); ``None`` allows any.
        shape: the required ``(H, W, C)`` of every image; ``None`` allows any.

    Returns:
        ``images`` itself when already C-contiguous, else a C-contiguous copy.

    Raises:
        ValueError: ``images`` is not a numpy uint8 array of rank 4 with allowed channels
            and shape; the message names ``name``, what was expected and what was found.
    """
    is_array = isinstance(images, np.ndarray)
    problem = _problem(
        name=name,
        is_uint8=is_array and images.dtype == np.uint8,
        shape=images.shape if is_array else None,
        channels=channels,
        expected_hwc=shape,
    )
    if problem is not None:
        found = _describe(images) if is_array else f"{_describe(images)} (expected a numpy array)"
        raise ValueError(f"{problem}, got {found}")
    return np.ascontiguousarray(images)


def check_image_tensor(
    images: Any,
    *,
    name: str,
    channels: tuple[int, ...] | None = (1, 3),
    shape: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Validate a uint8 ``(N, H, W, C)`` batch given as a torch tensor or numpy array.

    Args:
        images: a torch tensor (kept on its device) or a numpy array (wrapped without a
            copy when C-contiguous).
        name: the field it came from, used in the error.
        channels: allowed values of ``C`` (last axis); ``None`` allows any.
        shape: the required ``(H, W, C)`` of every image; ``None`` allows any.

    Returns:
        The batch as a torch uint8 tensor.

    Raises:
        TypeError: ``images`` is neither a numpy array nor a torch tensor.
        ValueError: wrong dtype, rank, channels or shape (same wording as :func:`check_images`).
    """
    if isinstance(images, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(images)) if images.dtype == np.uint8 else None
    elif isinstance(images, torch.Tensor):
        tensor = images
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    problem = _problem(
        name=name,
        is_uint8=tensor is not None and tensor.dtype == torch.uint8,
        shape=tuple(images.shape),
        channels=channels,
        expected_hwc=shape,
    )
    if problem is not None:
        raise ValueError(f"{problem}, got {_describe(images)}")
    return tensor
