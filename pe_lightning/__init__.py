"""pe_lightning: Private Evolution (DP synthetic images via foundation-model APIs) on PyTorch Lightning."""

from pe_lightning.apis import APIOutput, DiffusionUNetAPI, DiTAPI, DrawText, ImageAPI, ImprovedDiffusionAPI, StableDiffusionAPI
from pe_lightning.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, PrivateImageDataModule
from pe_lightning.embeddings import Embedding, InceptionEmbedding, PixelEmbedding
from pe_lightning.evolution import NotPrivateWarning, PrivateEvolution
from pe_lightning.population import Population
from pe_lightning import callbacks, privacy

__version__ = "0.1.0"

__all__ = [
    "APIOutput",
    "CIFAR10DataModule",
    "DiTAPI",
    "DiffusionUNetAPI",
    "DrawText",
    "Embedding",
    "ImageAPI",
    "ImageFolderDataModule",
    "ImprovedDiffusionAPI",
    "InceptionEmbedding",
    "MNISTDataModule",
    "NotPrivateWarning",
    "PixelEmbedding",
    "Population",
    "PrivateEvolution",
    "PrivateImageDataModule",
    "StableDiffusionAPI",
    "callbacks",
    "privacy",
]

from pe_lightning import classifier  # noqa: E402
from pe_lightning.classifier import DownstreamClassifier, SyntheticDataModule  # noqa: E402

__all__ += ["DownstreamClassifier", "SyntheticDataModule", "classifier"]
