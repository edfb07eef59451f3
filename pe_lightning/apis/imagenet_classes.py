"""The ImageNet class condition of class-conditional ImageNet models (DiT, improved-diffusion).

RANDOM draws one model class per sample, uniformly over all of them or over a configured
subset per private class, and stores it in the API condition ``"imagenet_class"``; VARIATION
reads it back so that every variation of a sample keeps its class.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pe_lightning.apis.diffusers.base import draw_classes as _draw_classes

__all__ = ["CONDITION", "check_class_subsets_fit", "draw_imagenet_classes", "imagenet_class_condition"]

#: The API condition that holds each sample's model class.
CONDITION = "imagenet_class"


def check_class_subsets_fit(subsets: list[list[int]] | None, *, class_names: Sequence[str] | None, num_classes: int) -> None:
    """Check ``imagenet_classes`` against the private classes and the model.

    Args:
        subsets: ``None`` or one list of model class ids per private class.
        class_names: the private classes (``None``: not known yet).
        num_classes: the model's number of classes.

    Raises:
        ValueError: not one list per private class, or ids outside ``[0, num_classes)``.
    """
    if subsets is None:
        return
    if class_names is not None and len(subsets) != len(class_names):
        raise ValueError(
            f"imagenet_classes has {len(subsets)} lists but there are {len(class_names)} private classes "
            f"({list(class_names)}); give one list of ImageNet class ids per private class"
        )
    bad = sorted({k for s in subsets for k in s if k >= num_classes})
    if bad:
        raise ValueError(f"imagenet_classes contains ids {bad[:5]} outside [0, {num_classes})")


def draw_imagenet_classes(
    labels: np.ndarray, *, subsets: list[list[int]] | None, num_classes: int, generator: torch.Generator
) -> np.ndarray:
    """One model class per sample: uniform over ``num_classes``, or over ``subsets[label]``.

    Args:
        labels: int64 ``(N,)`` private classes.
        subsets: ``None`` or one list of class ids per private class.
        num_classes: the model's number of classes.
        generator: the only randomness.

    Returns:
        int64 ``(N,)``.
    """
    if subsets is not None:
        return _draw_classes(labels, subsets, generator, field="imagenet_classes")
    return torch.randint(num_classes, (labels.shape[0],), generator=generator, device=generator.device).cpu().numpy().astype(np.int64)


def imagenet_class_condition(conditions: Any, *, shape: tuple[int, ...], num_classes: int, api: str) -> np.ndarray:
    """``conditions["imagenet_class"]`` checked: ints of ``shape`` in ``[0, num_classes)``.

    Args:
        conditions: the API conditions given to VARIATION.
        shape: ``(N,)``, the labels' shape.
        num_classes: the model's number of classes.
        api: the API's name, for messages.

    Returns:
        int64 ``shape``.

    Raises:
        ValueError: missing, of the wrong shape or type, or out of range.
    """
    if not isinstance(conditions, dict) or CONDITION not in conditions:
        raise ValueError(f"{api}.variation needs conditions['{CONDITION}'] (int64 (N,)), as returned by random()")
    classes = np.asarray(conditions[CONDITION])
    if classes.shape != shape or (classes.size and not np.issubdtype(classes.dtype, np.integer)):
        raise ValueError(f"conditions['{CONDITION}'] must be an int array of shape {shape}, got {classes.dtype} {classes.shape}")
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"conditions['{CONDITION}'] must lie in [0, {num_classes}), got min {classes.min()} max {classes.max()}")
    return classes.astype(np.int64)
