"""pe_lightning: Private Evolution (DP synthetic images via foundation-model APIs) on PyTorch Lightning.

Names are imported on first use (:mod:`pe_lightning.lazy`), so ``import pe_lightning`` loads
neither torch nor Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "APIOutput": ".apis", "DiffusionUNetAPI": ".apis", "DiTAPI": ".apis", "DrawText": ".apis", "ImageAPI": ".apis",
    "ImprovedDiffusionAPI": ".apis", "StableDiffusionAPI": ".apis",
    "CIFAR10DataModule": ".data", "ImageFolderDataModule": ".data", "MNISTDataModule": ".data",
    "PrivateImageDataModule": ".data",
    "Embedding": ".embeddings", "InceptionEmbedding": ".embeddings", "PixelEmbedding": ".embeddings",
    "NotPrivateWarning": ".evolution", "PrivateEvolution": ".evolution",
    "Population": ".population",
    "DownstreamClassifier": ".classifier", "SyntheticDataModule": ".classifier",
    "callbacks": ".callbacks", "privacy": ".privacy", "classifier": ".classifier",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning import callbacks, classifier, privacy
    from pe_lightning.apis import (APIOutput, DiffusionUNetAPI, DiTAPI, DrawText, ImageAPI, ImprovedDiffusionAPI,
                                   StableDiffusionAPI)
    from pe_lightning.classifier import DownstreamClassifier, SyntheticDataModule
    from pe_lightning.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, PrivateImageDataModule
    from pe_lightning.embeddings import Embedding, InceptionEmbedding, PixelEmbedding
    from pe_lightning.evolution import NotPrivateWarning, PrivateEvolution
    from pe_lightning.population import Population
