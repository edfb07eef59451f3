"""The foundation-model API interface used by Private Evolution.

PE only ever calls two functions of a foundation model (docs/design.md §1):

* ``random(labels, generator)`` draws fresh samples (RANDOM_API);
* ``variation(images, conditions, labels, degree, generator)`` returns samples similar
  to the given ones (VARIATION_API); a larger ``degree`` means a larger change.

Both return an :class:`APIOutput`: uint8 images in NHWC layout plus per-sample *API
conditions* (the parameters that produced each image, e.g. a font and a rotation for
the DrawText simulator, an ImageNet class for DiT). Conditions are stored in the
population so that variations can perturb parameters rather than pixels.

Nothing here sees private data: API calls are post-processing of the noisy histogram.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from pe_lightning.images import check_images

__all__ = ["APIOutput", "ImageAPI", "check_api_labels"]


def check_api_labels(
    labels: np.ndarray, *, n: int | None = None, limit: int | None = None, what: str = "the classes", check_range: bool = True
) -> np.ndarray:
    """Validate the class labels an API call receives and return them as int64 ``(N,)``.

    Args:
        labels: one class index per sample.
        n: the required length (e.g. the number of input images); ``None``: any.
        limit: labels must lie in ``[0, limit)``; ``None``: only ``>= 0``.
        what: what ``limit`` counts, for the error (e.g. ``"the 10 class_names"``).
        check_range: ``False`` checks only shape and dtype (labels the API ignores).

    Raises:
        ValueError: wrong shape, a non-integer dtype, or a label outside the range.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
        raise ValueError(f"labels must have shape ({'N' if n is None else n},), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if check_range and labels.size and (labels.min() < 0 or (limit is not None and labels.max() >= limit)):
        raise ValueError(
            f"labels must lie in [0, {limit if limit is not None else 'inf'}) for {what}, "
            f"got min {labels.min()} max {labels.max()}"
        )
    return labels


@dataclass
class APIOutput:
    """Images returned by an API call.

    Attributes:
        images: uint8 array of shape ``(N, H, W, C)``.
        conditions: per-sample API conditions; each value is an array whose first
            dimension is ``N`` (e.g. ``{"font": int64 (N,), "rotation": float32 (N,)}``).

    The arrays belong to the caller once returned: PE keeps lookahead outputs as they are
    (without copying) for ``reuse_lookahead``, so an API must not write into an array it
    has returned (e.g. by reusing one output buffer across calls).
    """

    images: np.ndarray
    conditions: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_images(self.images, name="APIOutput.images", channels=None)
        n = self.images.shape[0]
        for key, value in self.conditions.items():
            if not isinstance(value, np.ndarray) or value.shape[:1] != (n,):
                raise ValueError(
                    f"APIOutput.conditions[{key!r}] must be an array with first dimension {n}, "
                    f"got {getattr(value, 'shape', None)}"
                )


class ImageAPI(ABC):
    """Base class of foundation-model APIs (RANDOM and VARIATION).

    Subclasses keep constructor arguments config-serialisable and load weights lazily in
    :meth:`setup` (never in ``__init__``), so that ``--print_config`` and tests stay cheap.
    Every sampling call takes an explicit ``torch.Generator``; the same generator state
    gives the same images.
    """

    #: Output image shape ``(H, W, C)``; subclasses set it in ``__init__``.
    image_shape: tuple[int, int, int]

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load weights / resources and bind to a device. Called once per fit, may be repeated.

        Args:
            device: where to run the model.
            class_names: names of the private classes, in label order. Class-conditional
                APIs use them (e.g. DrawText draws the class name, Stable Diffusion builds a
                prompt); others ignore them.
        """

    def set_iteration(self, iteration: int) -> None:
        """Tell the API which PE iteration the next calls belong to (0: the initial RANDOM).

        :class:`~pe_lightning.PrivateEvolution` calls this before each iteration's API calls,
        so APIs with per-iteration settings (e.g. a guidance-scale schedule) can pick theirs.
        The default does nothing but remember it in ``self.iteration``.
        """
        self.iteration = int(iteration)

    def take_metrics(self) -> dict[str, float]:
        """Usage metrics of the calls since the last take (e.g. ``api/images``), then reset them.

        The run logs them once per iteration. The default has none; APIs behind HTTP count
        requests, images and time (:class:`~pe_lightning.apis.RemoteImageAPI`).
        """
        return {}

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` if ``degree`` is not a valid variation degree for this API."""
        if not (np.isfinite(degree) and degree >= 0):
            raise ValueError(f"variation degree must be a finite number >= 0, got {degree!r}")

    def check_input_images(self, images: np.ndarray) -> int:
        """Validate VARIATION's ``images`` against :attr:`image_shape`; returns ``N``."""
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1:] != tuple(self.image_shape):
            raise ValueError(
                f"images must be an array of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {getattr(images, 'shape', type(images).__name__)}"
            )
        return images.shape[0]

    def check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        """The class labels of a call, checked and as int64 ``(N,)`` (:func:`check_api_labels`).

        The default bounds them by the API's ``class_names`` (``[0, len(class_names))``) once
        :meth:`setup` or the constructor has set them, and otherwise only asks for integers
        ``>= 0``; APIs whose labels mean something else (texts, pools) override it.

        Args:
            labels: one class index per sample.
            n: the required length (VARIATION: the number of input images).
        """
        names = getattr(self, "class_names", None)
        limit = None if names is None else len(names)
        return check_api_labels(labels, n=n, limit=limit,
                                what="non-negative labels" if limit is None else f"the {limit} class_names")

    def check_ready(self, call: str) -> None:
        """Raise ``RuntimeError`` unless what ``call`` (``"random"`` or ``"variation"``) needs is set up.

        The default has nothing to load.
        """

    def check_variation_degree(self, degree: float) -> float:
        """VARIATION's ``degree`` at call time, checked (:meth:`validate_degree`) and as a float."""
        self.validate_degree(degree)
        return float(degree)

    def check_variation_images(self, images: np.ndarray) -> np.ndarray:
        """VARIATION's ``images``, checked against :attr:`image_shape` (:meth:`check_input_images`)."""
        self.check_input_images(images)
        return images

    def random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: draw ``len(labels)`` fresh samples.

        A template: the arguments are checked here (:meth:`check_ready`,
        :meth:`check_labels`), then the API's :meth:`_random` makes the samples.

        Args:
            labels: int64 array ``(N,)``, the private class each sample is drawn for
                (all zeros for unlabelled data).
            generator: the only source of randomness.

        Returns:
            ``N`` images and their API conditions.
        """
        self.check_ready("random")
        return self._random(labels=self.check_labels(labels), generator=generator)

    def variation(
        self,
        *,
        images: np.ndarray,
        conditions: dict[str, np.ndarray],
        labels: np.ndarray,
        degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION_API: one variation of each input sample.

        A template: the arguments are checked here, once, in this order
        (:meth:`check_variation_degree`, :meth:`check_ready`, :meth:`check_variation_images`,
        :meth:`check_labels`), then the API's :meth:`_variation` makes the variations.

        Args:
            images: uint8 ``(N, H, W, C)``.
            conditions: API conditions of the inputs (as returned by a previous call).
            labels: int64 ``(N,)`` class of each input.
            degree: how much to change; larger means a bigger change (API-specific units).
            generator: the only source of randomness.

        Returns:
            ``N`` images and their API conditions, in input order.
        """
        degree = self.check_variation_degree(degree)
        self.check_ready("variation")
        images = self.check_variation_images(images)
        labels = self.check_labels(labels, images.shape[0])
        return self._variation(images=images, conditions=conditions, labels=labels, degree=degree, generator=generator)

    @abstractmethod
    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """The API's RANDOM on checked arguments: ``labels`` int64 ``(N,)`` from :meth:`check_labels`."""

    @abstractmethod
    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """The API's VARIATION on checked arguments.

        Args:
            images: uint8 ``(N, *image_shape)`` (:meth:`check_variation_images`).
            conditions: the inputs' conditions, unchecked (each API checks those it reads).
            labels: int64 ``(N,)`` (:meth:`check_labels`).
            degree: a valid degree, as a float (:meth:`check_variation_degree`).
            generator: the only source of randomness.
        """
