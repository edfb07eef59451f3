"""Downstream classifier: trained on a synthetic population, tested on the real held-out split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "DownstreamClassifier": "pe_lightning.classifier.module",
    "ResNet": "pe_lightning.classifier.networks",
    "SmallCNN": "pe_lightning.classifier.networks",
    "SyntheticDataModule": "pe_lightning.classifier.data",
    "WideResNet": "pe_lightning.classifier.networks",
    "build_network": "pe_lightning.classifier.networks",
    "load_image_tree": "pe_lightning.classifier.data",
    "resnet18": "pe_lightning.classifier.networks",
    "stratified_split": "pe_lightning.classifier.data",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.classifier.data import SyntheticDataModule, load_image_tree, stratified_split
    from pe_lightning.classifier.module import DownstreamClassifier
    from pe_lightning.classifier.networks import ResNet, SmallCNN, WideResNet, build_network, resnet18
