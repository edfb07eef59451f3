"""Downstream classifier: trained on a synthetic population, tested on the real held-out split."""

from __future__ import annotations

from pe_lightning.classifier.data import SyntheticDataModule, load_image_tree, stratified_split
from pe_lightning.classifier.module import DownstreamClassifier
from pe_lightning.classifier.networks import ResNet, SmallCNN, WideResNet, build_network, resnet18

__all__ = [
    "DownstreamClassifier",
    "ResNet",
    "SmallCNN",
    "SyntheticDataModule",
    "WideResNet",
    "build_network",
    "load_image_tree",
    "resnet18",
    "stratified_split",
]
