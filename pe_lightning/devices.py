"""Host-to-device copies of batches."""

from __future__ import annotations

import torch

__all__ = ["to_device"]


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory with a
    non-blocking copy (so the copy overlaps with queued GPU work). Same tensor if already there."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
