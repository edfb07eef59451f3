"""Host-to-device copies of batches, and what a device's float32 arithmetic is."""

from __future__ import annotations

import torch

__all__ = ["numerics", "to_device"]


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory with a
    non-blocking copy (so the copy overlaps with queued GPU work). Same tensor if already there."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def numerics(device: torch.device | str) -> dict[str, object]:
    """What decides the float32 results of a computation on ``device``, as a JSON-able dict.

    The same network gives slightly different features on the CPU and on a GPU, and on a
    GPU with TF32 on or off (cuDNN convolutions use TF32 by default on Ampere and newer,
    which changes Inception features in the third or fourth digit). Caches of computed
    features key on this so that results from different arithmetic never mix.

    Returns:
        ``{"device": "cpu", "float32_matmul_precision": ...}`` on the CPU; on CUDA also the
        GPU's name and compute capability and the two TF32 switches
        (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``).
    """
    device = torch.device(device)
    out: dict[str, object] = {"device": device.type, "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        out.update(
            gpu=torch.cuda.get_device_name(device),
            capability=f"{major}.{minor}",
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
        )
    return out
