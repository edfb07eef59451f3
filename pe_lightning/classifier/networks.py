"""Downstream classifier networks: the docs/benchmark.md CNN, WideResNet and a CIFAR ResNet-18.

Every network maps float ``(N, C, H, W)`` images (already scaled, see
:class:`~pe_lightning.classifier.DownstreamClassifier`) to ``(N, num_classes)`` logits.
Weights are initialised from the global torch RNG: seed it (``torch.manual_seed(s)``,
docs/benchmark.md) before building a network to make the initialisation reproducible.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SmallCNN", "WideResNet", "ResNet", "resnet18", "build_network", "NETWORKS"]


def _check_common(name: str, *, num_classes: int, in_channels: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"{name} num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"{name} in_channels must be an integer >= 1, got {in_channels!r}")


class SmallCNN(nn.Module):
    """The docs/benchmark.md classifier (for 28×28 MNIST by default).

    ``conv(C→32, 3, pad 1)–ReLU–maxpool 2 → conv(32→64, 3, pad 1)–ReLU–maxpool 2 → flatten →
    linear(64·(S/4)²→128)–ReLU → linear(128→num_classes)``; with ``S = 28`` the flattened
    size is 3,136 as in the protocol. PyTorch's default layer initialisation.

    Args:
        num_classes: number of output logits.
        in_channels: image channels ``C``.
        image_size: side ``S`` of the square input images (pixels); fixes the size of
            the first linear layer. Must be divisible by 4.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, image_size: int = 28) -> None:
        super().__init__()
        _check_common("SmallCNN", num_classes=num_classes, in_channels=in_channels)
        if not isinstance(image_size, int) or image_size < 4 or image_size % 4:
            raise ValueError(f"SmallCNN image_size must be a positive multiple of 4, got {image_size!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S)`` float -> ``(N, num_classes)`` logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"SmallCNN was built for (N, {self.in_channels}, {self.image_size}, {self.image_size}) inputs, got "
                f"{tuple(x.shape)}; set in_channels / image_size (network_kwargs) to match the data"
            )
        return self.classifier(self.features(x))


# ------------------------------------------------------------------------ WideResNet
class _WideBasicBlock(nn.Module):
    """Pre-activation wide basic block (BN-ReLU-conv3x3, dropout, BN-ReLU-conv3x3) + shortcut."""

    def __init__(self, in_planes: int, out_planes: int, *, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # As in the reference WRN: a projection shortcut takes the pre-activated input.
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + shortcut


class WideResNet(nn.Module):
    """Wide residual network WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, 2016).

    3×3 stem with 16 channels, three groups of ``(depth - 4) / 6`` pre-activation basic
    blocks with ``16k, 32k, 64k`` channels (strides 1, 2, 2), BN–ReLU, global average
    pooling, linear. Built for 32×32 inputs (any size ≥ 8 works: the pooling is
    adaptive). Kaiming-normal (fan-out) conv initialisation, BN weight 1 / bias 0,
    linear bias 0.

    Args:
        depth: total depth, ``depth ≡ 4 (mod 6)`` (28 for WRN-28-10).
        widen_factor: ``k``, channel multiplier (10 for WRN-28-10).
        num_classes: number of output logits.
        in_channels: image channels.
        dropout: dropout probability between the two convolutions of each block
            (DPImageBench uses 0.3).
    """

    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_common("WideResNet", num_classes=num_classes, in_channels=in_channels)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be an integer >= 10 with (depth - 4) % 6 == 0 (e.g. 10, 16, 28, 40), got {depth!r}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be an integer >= 1, got {widen_factor!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WideResNet dropout must be in [0, 1), got {dropout!r}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [
                _WideBasicBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride=stride if i == 0 else 1, dropout=dropout)
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        _init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float -> ``(N, num_classes)`` logits."""
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# ---------------------------------------------------------------------------- ResNet
class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks, CIFAR variant (3×3 stem, no max-pool), for 32×32 inputs.

    Stem ``conv3x3(C→64)``–BN–ReLU, four stages of ``num_blocks[i]`` basic blocks with
    64, 128, 256, 512 channels (strides 1, 2, 2, 2), global average pooling, linear.
    ``num_blocks=(2, 2, 2, 2)`` is ResNet-18 (see :func:`resnet18`).

    Args:
        num_blocks: basic blocks per stage (four stages).
        num_classes: number of output logits.
        in_channels: image channels.
    """

    def __init__(self, *, num_blocks: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        _check_common("ResNet", num_classes=num_classes, in_channels=in_channels)
        num_blocks = list(num_blocks)
        if len(num_blocks) != 4 or any((not isinstance(b, int)) or b < 1 for b in num_blocks):
            raise ValueError(f"ResNet num_blocks must be four integers >= 1, got {num_blocks!r}")
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        in_planes = 64
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for i in range(blocks):
                layers.append(_BasicBlock(in_planes, planes, stride=stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        _init_resnet_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float -> ``(N, num_classes)`` logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet18(*, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18, CIFAR variant (3×3 stem, no max-pool)."""
    return ResNet(num_blocks=(2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


def _init_resnet_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _small_cnn(*, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    return SmallCNN(num_classes, in_channels, **kwargs)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": _small_cnn,
    "wrn": WideResNet,
    "resnet18": resnet18,
}
"""Network names accepted by :func:`build_network`."""


def build_network(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build a classifier network by name.

    Args:
        name: ``"small_cnn"`` (:class:`SmallCNN`), ``"wrn"`` (:class:`WideResNet`) or
            ``"resnet18"`` (:func:`resnet18`).
        num_classes: number of output logits.
        in_channels: image channels.
        **kwargs: passed to the network (e.g. ``depth``, ``widen_factor``, ``dropout``
            for ``"wrn"``; ``image_size`` for ``"small_cnn"``).

    Returns:
        The network, mapping float ``(N, in_channels, H, W)`` to ``(N, num_classes)``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or bad arguments.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {sorted(NETWORKS)}")
    try:
        return NETWORKS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as err:
        raise ValueError(f"network {name!r}: bad network kwargs {sorted(kwargs)} ({err})") from err
