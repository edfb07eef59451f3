"""Image embeddings used for nearest-neighbour voting and FID."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from pe_lightning.devices import numerics

__all__ = ["Embedding"]


class Embedding(ABC):
    """Maps uint8 images to float32 feature vectors.

    Subclasses load weights lazily in :meth:`setup`. :attr:`fingerprint` identifies the
    embedding (class, configuration and the arithmetic of its device, see :meth:`numerics`)
    so that cached private embeddings are reused only where they would come out the same.
    A subclass must say what its configuration is (:meth:`config` is abstract): every
    constructor argument that can change the features goes in, the others are named in
    :attr:`fingerprint_ignores` (``tests/test_embeddings.py`` checks both for every shipped
    embedding).
    """

    #: Constructor arguments that never change the features (batch sizes, download folders),
    #: left out of :meth:`config` and so of the fingerprint.
    fingerprint_ignores: ClassVar[frozenset[str]] = frozenset()

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Load weights and bind to ``device``. Idempotent."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Feature dimension ``D``."""

    @abstractmethod
    def config(self) -> dict:
        """JSON-serialisable constructor arguments that decide the features (the fingerprint's configuration).

        Every constructor argument not in :attr:`fingerprint_ignores` must change this dict
        when it changes, or a cached private embedding computed with another value would be reused.
        """

    @property
    def compute_device(self) -> torch.device:
        """Where the features are computed: the subclass's ``device`` attribute, the CPU when it has none."""
        return torch.device(getattr(self, "device", "cpu"))

    def numerics(self) -> dict:
        """Device and float32 precision the features are computed with (part of the fingerprint).

        The default is :func:`pe_lightning.devices.numerics` of :attr:`compute_device`: CPU and GPU
        features, or GPU features with and without TF32, differ in the last digits and must not
        share a cache entry.
        """
        return numerics(self.compute_device)

    @property
    def fingerprint(self) -> str:
        """Stable hex digest of the class name, :meth:`config` and :meth:`numerics` (read after :meth:`setup`)."""
        payload = json.dumps(
            {"class": type(self).__qualname__, "config": self.config(), "numerics": self.numerics()},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @abstractmethod
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            images: uint8 ``(N, H, W, C)`` (numpy or torch).
            batch_size: images per forward pass.

        Returns:
            float32 tensor ``(N, D)`` on CPU, an ordinary tensor (not an inference-mode
            one: callers accumulate into it in place, e.g. the lookahead mean).
        """
