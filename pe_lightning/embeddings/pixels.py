"""Raw-pixel embedding (weight-free): the one the reference PE uses on MNIST."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.devices import to_device
from pe_lightning.embeddings.base import Embedding
from pe_lightning.images import check_image_tensor

__all__ = ["PixelEmbedding", "as_uint8_nhwc", "embed_in_chunks"]

_NORMALIZE = ("none", "l2")
# ITU-R 601-2 luma, as PIL's "L" mode.
_LUMA = (0.299, 0.587, 0.114)


def as_uint8_nhwc(images: np.ndarray | torch.Tensor, *, name: str = "images") -> torch.Tensor:
    """Validate uint8 ``(N, H, W, C)`` images (C in {1, 3}) and return them as a torch tensor.

    Numpy input is wrapped without a copy; a torch tensor keeps its device. A thin alias of
    :func:`pe_lightning.images.check_image_tensor` with the embeddings' channel rule.
    """
    return check_image_tensor(images, name=name, channels=(1, 3))


class PixelEmbedding(Embedding):
    """Flattened pixels scaled to ``[0, 1]``, optionally resized, grayscaled and unit-normed.

    The feature of an image is ``x / 255`` in ``(H', W', C')`` order, flattened, where
    ``(H', W') = (size, size)`` after an antialiased bilinear resize (or the input size when
    ``size`` is None) and ``C' = 1`` when ``grayscale`` (ITU-R 601-2 luma of RGB input)
    else the input channels. With ``size=None, grayscale=False, normalize="none"`` this is
    exactly ``images.reshape(N, -1) / 255``.

    The dimension ``D = H' * W' * C'`` depends on the input shape unless ``size`` is set
    and ``grayscale=True``. Pass ``image_shape=(H, W, C)`` to make :attr:`dim` known before
    the first :meth:`embed`; otherwise :attr:`dim` raises until an embed call has fixed it.
    Once fixed, inputs giving a different ``D`` are rejected (their vectors would not be
    comparable).

    Args:
        size: resize to ``size x size`` pixels first (bilinear, antialiased); ``None``
            keeps the input size.
        grayscale: convert RGB input to one luma channel (1-channel input is kept).
        normalize: ``"none"`` (values in ``[0, 1]``) or ``"l2"`` (unit-norm vectors; an
            all-black image stays the zero vector).
        image_shape: optional expected input ``(H, W, C)``, used to compute :attr:`dim`
            up front.
    """

    def __init__(
        self,
        *,
        size: int | None = None,
        grayscale: bool = False,
        normalize: str = "none",
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"size must be None or an int >= 1, got {size!r}")
        if normalize not in _NORMALIZE:
            raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
            if len(image_shape) != 3 or min(image_shape) < 1 or image_shape[2] not in (1, 3):
                raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape!r}")
        self.size = size
        self.grayscale = bool(grayscale)
        self.normalize = normalize
        self.image_shape = image_shape
        self.device = torch.device("cpu")
        self._dim: int | None = self._dim_for(image_shape) if image_shape is not None else None
        if self._dim is None and size is not None and self.grayscale:
            self._dim = size * size

    def _dim_for(self, shape: tuple[int, int, int]) -> int:
        h, w, c = shape
        if self.size is not None:
            h = w = self.size
        return h * w * (1 if self.grayscale else c)

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Bind the computation to ``device`` (no weights to load)."""
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        """Feature dimension ``D``; see the class docstring for when it is known."""
        if self._dim is None:
            raise RuntimeError(
                "PixelEmbedding.dim depends on the input image shape: pass image_shape=(H, W, C) "
                "(or size=... with grayscale=True), or call embed() once first"
            )
        return self._dim

    def config(self) -> dict:
        return {
            "size": self.size,
            "grayscale": self.grayscale,
            "normalize": self.normalize,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
        }

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` on any device -> float32 ``(B, D)`` on the same device."""
        x = to_device(batch, self.device).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # (B, C, H, W)
        if self.grayscale and x.shape[1] == 3:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # HWC order, like images.reshape(N, -1)
        if self.normalize == "l2":
            x = F.normalize(x, p=2.0, dim=1)
        return x

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, C)``, numpy or torch (any device), C in {1, 3}.
            batch_size: images per chunk.

        Returns:
            float32 CPU tensor ``(N, D)``.
        """
        return embed_in_chunks(self, images, batch_size=batch_size,
                               hint=f"image_shape={self.image_shape}, size={self.size}, grayscale={self.grayscale}; "
                                    "resize the images or set size/grayscale")


def embed_in_chunks(embedding: Embedding, images: np.ndarray | torch.Tensor, *, batch_size: int, hint: str) -> torch.Tensor:
    """The ``embed`` of a weight-free embedding whose ``D`` follows the input shape.

    Checks the images (:func:`as_uint8_nhwc`), fixes ``embedding._dim`` from the first call
    (``embedding._dim_for((H, W, C))``) and refuses a later shape with another ``D`` (the
    message ends with ``hint``), then calls ``embedding._features`` on uint8 ``(B, H, W, C)``
    chunks of ``batch_size`` and gathers float32 CPU rows ``(N, D)``. An embedding with a
    ``_features_into(batch, rows)`` writes each chunk's float32 CPU rows itself instead (no copy
    of a whole chunk: one op on a chunk of rows is big enough to wake torch's thread pool).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = as_uint8_nhwc(images)
    dim = embedding._dim_for(tuple(x.shape[1:]))  # type: ignore[attr-defined]
    if embedding._dim is not None and dim != embedding._dim:  # type: ignore[attr-defined]
        raise ValueError(
            f"images of shape {tuple(x.shape[1:])} give {dim}-d features, but this {type(embedding).__name__} "
            f"produces {embedding._dim}-d features ({hint})"  # type: ignore[attr-defined]
        )
    embedding._dim = dim  # type: ignore[attr-defined]
    out = torch.empty((x.shape[0], dim), dtype=torch.float32)
    into = getattr(embedding, "_features_into", None)
    for start in range(0, x.shape[0], batch_size):
        batch, rows = x[start : start + batch_size], out[start : start + batch_size]
        if into is not None:
            into(batch, rows)
        else:
            rows.copy_(embedding._features(batch).cpu())  # type: ignore[attr-defined]
    return out
