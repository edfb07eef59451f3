"""clean-fid's image resizing (Parmar et al., *On Aliased Resizing and Surprising Subtleties in GAN
Evaluation*, CVPR 2022), in torch, batched and on any device.

clean-fid's "clean" mode resizes each uint8 image to 299 x 299 with PIL's bicubic filter
applied per channel to float32 images (``Image.fromarray(x.astype(float32), mode="F")``,
no quantisation after it) and clips to ``[0, 255]``; the Inception network then sees those
floats. PIL's bicubic filter is the separable Keys kernel with ``a = -0.5``, widened by the
scale factor when shrinking (antialiasing); ``torch.nn.functional.interpolate(mode="bicubic",
antialias=True)`` implements the same filter, so the two agree to float rounding (checked
against the ``clean-fid`` package's own ``make_resizer`` in ``tests/test_clean_fid.py``).

The reference implementation of PE (microsoft/DPSDA) also resizes every image to the private
resolution first (same filter, then rounded to uint8) before the 299 px resize, for the vote
embedding and for FID: :func:`resize_uint8` is that step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.images import check_image_tensor

__all__ = ["CLEAN_SIZE", "clean_resize", "resize_uint8"]

#: The Inception-v3 input size clean-fid resizes to.
CLEAN_SIZE = 299


def _nchw_float(images: np.ndarray | torch.Tensor, *, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    x = check_image_tensor(images, name="images", channels=(1, 3))
    x = x.to(device) if device is not None else x
    x = x.permute(0, 3, 1, 2).to(dtype)  # (N, C, H, W)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _pil_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x  # PIL returns a copy of the image at its own size
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0.0, 255.0)


def clean_resize(
    images: np.ndarray | torch.Tensor,
    *,
    size: int = CLEAN_SIZE,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """clean-fid's resize: PIL bicubic per channel on float images, clipped to ``[0, 255]``, not quantised.

    Args:
        images: uint8 ``(N, H, W, C)``, C in {1, 3} (1 channel is repeated to RGB, as
            clean-fid's ``convert("RGB")`` does), numpy or torch.
        size: output height and width in pixels.
        dtype: float dtype of the computation and the output.
        device: where to compute (default: the input's device).

    Returns:
        float ``(N, 3, size, size)`` with values in ``[0, 255]``, on ``device``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    device = None if device is None else torch.device(device)
    return _pil_bicubic(_nchw_float(images, dtype=dtype, device=device), (size, size))


def resize_uint8(images: np.ndarray | torch.Tensor, *, size: int) -> torch.Tensor:
    """DPSDA's resize to the private resolution: PIL bicubic on floats, then rounded to uint8.

    Computed in float64 on the input's device, so the rounding agrees with PIL's float32
    resize except for values within ~1e-4 of a half-integer.

    Args:
        images: uint8 ``(N, H, W, C)``, C in {1, 3}, numpy or torch.
        size: output height and width in pixels.

    Returns:
        uint8 ``(N, size, size, 3)`` (a 1-channel input becomes RGB); the input itself
        converted to a torch tensor (RGB) when it is already ``size x size``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    x = check_image_tensor(images, name="images", channels=(1, 3))
    if tuple(x.shape[1:3]) == (size, size):
        return x.expand(-1, -1, -1, 3) if x.shape[3] == 1 else x
    out = _pil_bicubic(_nchw_float(x, dtype=torch.float64, device=None), (size, size))
    return out.round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
