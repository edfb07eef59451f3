"""Image embeddings used for nearest-neighbour voting and FID."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod

import numpy as np
import torch

__all__ = ["Embedding"]


class Embedding(ABC):
    """Maps uint8 images to float32 feature vectors.

    Subclasses load weights lazily in :meth:`setup`. :attr:`fingerprint` identifies the
    embedding (class + configuration) so that cached private embeddings can be reused.
    """

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Load weights and bind to ``device``. Idempotent."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature dimension ``D``."""

    def config(self) -> dict:
        """Config-serialisable constructor arguments (used for the fingerprint)."""
        return {}

    @property
    def fingerprint(self) -> str:
        """Stable hex digest of the class name and :meth:`config`."""
        payload = json.dumps({"class": type(self).__qualname__, "config": self.config()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @abstractmethod
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            images: uint8 ``(N, H, W, C)`` (numpy or torch).
            batch_size: images per forward pass.

        Returns:
            float32 tensor ``(N, D)`` on CPU.
        """
