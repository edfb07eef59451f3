"""Private image data modules: MNIST (bundled offline), CIFAR-10 and image folders."""

from __future__ import annotations

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.cifar10 import CIFAR10DataModule
from pe_lightning.data.folder import ImageFolderDataModule
from pe_lightning.data.mnist import MNISTDataModule
from pe_lightning.data.npz import NpzDataModule
from pe_lightning.data.transfer import MNISTVariantDataModule

__all__ = ["CIFAR10DataModule", "ImageFolderDataModule", "MNISTDataModule", "MNISTVariantDataModule", "NpzDataModule",
           "PrivateImageDataModule"]

from pe_lightning.data.hf import HFDataModule  # noqa: E402  - Hugging Face datasets (imported on load)

__all__ += ["HFDataModule"]
