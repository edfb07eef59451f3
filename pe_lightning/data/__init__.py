"""Private image data modules: MNIST (bundled offline), CIFAR-10 and image folders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "CIFAR10DataModule": "pe_lightning.data.cifar10",
    "HFDataModule": "pe_lightning.data.hf",
    "ImageFolderDataModule": "pe_lightning.data.folder",
    "MNISTDataModule": "pe_lightning.data.mnist",
    "MNISTVariantDataModule": "pe_lightning.data.transfer",
    "NpzDataModule": "pe_lightning.data.npz",
    "PrivateImageDataModule": "pe_lightning.data.base",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.data.base import PrivateImageDataModule
    from pe_lightning.data.cifar10 import CIFAR10DataModule
    from pe_lightning.data.folder import ImageFolderDataModule
    from pe_lightning.data.mnist import MNISTDataModule
    from pe_lightning.data.npz import NpzDataModule
    from pe_lightning.data.transfer import MNISTVariantDataModule
    from pe_lightning.data.hf import HFDataModule
