"""Images, noise and the VAE for the diffusers APIs: uint8 NHWC in and out, float NCHW in ``[-1, 1]`` inside.

Images are resized to the model resolution with antialiased bicubic interpolation (and
back); grayscale is repeated to RGB for an RGB model and outputs are reduced to one
channel by luminance (ITU-R BT.601). Initial noise is drawn on the generator's device in
float32 (:func:`randn`), so a generator gives the same noise on any device.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.apis.diffusers.loading import DTYPES
from pe_lightning.devices import to_device

__all__ = ["NonFiniteOutputError", "autocast_context", "from_images", "randn", "to_images", "vae_decode", "vae_encode"]

#: ITU-R BT.601 luminance weights (R, G, B), as PIL's ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)


def from_images(images: np.ndarray, *, size: tuple[int, int], channels: int, device: torch.device) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW in ``[-1, 1]`` at ``size`` with ``channels`` channels.

    Args:
        images: uint8 ``(N, H, W, C)`` with ``C`` in (1, 3).
        size: model resolution ``(height, width)``; resized with antialiased bicubic
            interpolation when different.
        channels: model channels, 1 (luminance) or 3 (grayscale inputs are repeated).
        device: where the tensor goes.

    Returns:
        float32 ``(N, channels, height, width)``.
    """
    x = to_device(torch.from_numpy(np.ascontiguousarray(images)), device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    x = _match_channels(x, channels)
    return _resize(x, size).clamp_(-1.0, 1.0)


def to_images(x: torch.Tensor, *, size: tuple[int, int], channels: int) -> np.ndarray:
    """float NCHW in ``[-1, 1]`` -> uint8 NHWC numpy at ``size`` with ``channels`` channels.

    Args:
        x: ``(N, C, H, W)`` with ``C`` in (1, 3), values nominally in ``[-1, 1]``.
        size: output ``(height, width)`` (antialiased bicubic resize when different).
        channels: 1 (luminance of RGB) or 3 (grayscale is repeated).

    Returns:
        uint8 ``(N, height, width, channels)``.
    """
    x = _resize(x.float().clamp(-1.0, 1.0), size)
    x = _match_channels(x, channels)
    x = ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert images with {x.shape[1]} channels to {channels} channels (1 and 3 are supported)")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)


def randn(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float32 standard normal noise drawn on the generator's device, then moved to ``device``."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32).to(device)


def autocast_context(device: torch.device, dtype_name: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on CUDA devices with ``dtype_name``; a no-op otherwise."""
    if device.type != "cuda" or dtype_name is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=DTYPES[dtype_name])


def vae_encode(
    vae: Any,
    images: np.ndarray,
    *,
    size: tuple[int, int],
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> torch.Tensor:
    """Scaled VAE posterior means of uint8 images, ``batch_size`` images per encoder pass.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        images: uint8 ``(N, H, W, C)``, ``N >= 1``; resized to ``size`` and made RGB
            (:func:`from_images`) a sub-batch at a time.
        size: the model resolution ``(height, width)``.
        device: the VAE's device.
        batch_size: images per pass (the encoder's activations at 256-512 px are the
            memory peak of a variation, far above the latents').
        autocast: returns the autocast context to run in.

    Returns:
        float32 ``(N, latent_channels, height / f, width / f)`` on the CPU:
        ``latent_dist.mode() * scaling_factor``.
    """
    scaling = float(vae.config.scaling_factor)
    parts = []
    for start in range(0, images.shape[0], batch_size):
        pixels = from_images(images[start : start + batch_size], size=size, channels=3, device=device)
        with autocast():
            parts.append((vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float() * scaling).cpu())
    return torch.cat(parts)


def vae_decode(
    vae: Any, latents: torch.Tensor, *, batch_size: int, autocast: Callable[[], contextlib.AbstractContextManager]
) -> torch.Tensor:
    """Decode scaled latents, ``batch_size`` at a time.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        latents: ``(N, C, h, w)`` latents times ``scaling_factor``, ``N >= 1``.
        batch_size: latents per decoder pass.
        autocast: returns the autocast context to run in.

    Returns:
        float32 ``(N, 3, H, W)`` images, nominally in ``[-1, 1]``.
    """
    scaling = float(vae.config.scaling_factor)
    parts = []
    for batch in latents.split(batch_size):
        with autocast():
            parts.append(vae.decode((batch / scaling).to(vae.dtype)).sample.float())
    return torch.cat(parts)


class NonFiniteOutputError(FloatingPointError):
    """A diffusion API produced NaN/inf pixels (usually float16 overflow); names the API, call and batch."""
