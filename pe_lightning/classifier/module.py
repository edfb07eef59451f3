"""The downstream classifier: a LightningModule trained on a synthetic population.

Its data comes from :class:`~pe_lightning.classifier.SyntheticDataModule` (train and
validation on synthetic data only, test on the real held-out split). Batches arrive as
``(images, labels)`` with uint8 ``(N, H, W, C)`` images; the module converts them to
float ``(N, C, H, W)`` in the configured ``input_range`` on the device.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics.classification import MulticlassAccuracy

from pe_lightning.classifier.networks import NETWORKS, build_network
from pe_lightning.images import check_image_tensor

__all__ = ["DownstreamClassifier", "OPTIMIZERS", "INPUT_RANGES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
INPUT_RANGES = ("zero_one", "minus_one_one")


def _ema_multi_avg_fn(decay: float):
    """EMA update with the DPImageBench / score_sde warm-up: ``min(decay, (1 + n) / (10 + n))``."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, weight)

    return update


class DownstreamClassifier(pl.LightningModule):
    """Image classifier trained from scratch (the utility measure of a synthetic set).

    Logs ``train/loss`` (per step), ``train/acc`` (per epoch), ``val/loss``, ``val/acc``,
    ``test/loss``, ``test/acc`` (per epoch). Accuracy is the plain fraction of correct
    predictions (torchmetrics ``MulticlassAccuracy(average="micro")``), in ``[0, 1]``.

    docs/benchmark.md's MNIST recipe is the default (``small_cnn``, Adam, lr 1e-3, pixels/255).
    DPImageBench's CIFAR-10 recipe is ``network="wrn"``, Adam lr 0.01, ``lr_step_size=20``,
    ``lr_gamma=0.2``, ``ema_decay=0.9999``, ``input_range="minus_one_one"``, dropout 0.3.

    Weights are initialised from the global torch RNG when the module is built: seed it
    first (``seed_everything`` in a LightningCLI config, or ``torch.manual_seed(s)``).

    Args:
        network: ``"small_cnn"``, ``"wrn"`` or ``"resnet18"`` (see
            :func:`~pe_lightning.classifier.build_network`).
        num_classes: number of classes (must match the data module's classes).
        in_channels: image channels (must match the data).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum ``momentum``, Nesterov).
        lr: learning rate.
        weight_decay: L2 weight decay (decoupled for ``adamw``).
        momentum: SGD momentum (ignored by Adam/AdamW).
        lr_step_size: if set, ``StepLR(step_size=lr_step_size, gamma=lr_gamma)`` stepped
            once per epoch; ``None`` keeps the learning rate constant.
        lr_gamma: StepLR decay factor, in ``(0, 1]``.
        ema_decay: if set, an exponential moving average of the weights (decay in
            ``(0, 1)``, warm-up ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
            updated after every optimizer step; BatchNorm statistics follow the live
            network) is used for validation and test. It is part of the checkpoint.
        input_range: ``"zero_one"`` (pixels / 255, docs/benchmark.md) or ``"minus_one_one"``
            (pixels / 127.5 - 1, DPImageBench).
        network_kwargs: extra keyword arguments for the network (e.g. ``{"depth": 16,
            "widen_factor": 4, "dropout": 0.3}`` for ``wrn``; ``{"image_size": 32}`` for
            ``small_cnn``).
    """

    def __init__(
        self,
        *,
        network: str = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 1,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.2,
        ema_decay: float | None = None,
        input_range: str = "zero_one",
        network_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ValueError(f"DownstreamClassifier network must be one of {sorted(NETWORKS)}, got {network!r}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"DownstreamClassifier num_classes must be an integer >= 2, got {num_classes!r}")
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f"DownstreamClassifier in_channels must be an integer >= 1, got {in_channels!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"DownstreamClassifier optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"DownstreamClassifier lr must be a finite number > 0, got {lr!r}")
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"DownstreamClassifier weight_decay must be finite and >= 0, got {weight_decay!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"DownstreamClassifier momentum must be in [0, 1), got {momentum!r}")
        if lr_step_size is not None and (not isinstance(lr_step_size, int) or isinstance(lr_step_size, bool) or lr_step_size < 1):
            raise ValueError(f"DownstreamClassifier lr_step_size must be None or an integer >= 1 (epochs), got {lr_step_size!r}")
        if not (isinstance(lr_gamma, (int, float)) and 0 < lr_gamma <= 1):
            raise ValueError(f"DownstreamClassifier lr_gamma must be in (0, 1], got {lr_gamma!r}")
        if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0 < ema_decay < 1):
            raise ValueError(f"DownstreamClassifier ema_decay must be None or in (0, 1), got {ema_decay!r}")
        if input_range not in INPUT_RANGES:
            raise ValueError(f"DownstreamClassifier input_range must be one of {list(INPUT_RANGES)}, got {input_range!r}")
        if network_kwargs is not None and not isinstance(network_kwargs, dict):
            raise ValueError(f"DownstreamClassifier network_kwargs must be a dict or None, got {type(network_kwargs).__name__}")
        self.save_hyperparameters()

        self.network_name = network
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.optimizer_name = optimizer
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.lr_step_size = lr_step_size
        self.lr_gamma = float(lr_gamma)
        self.ema_decay = ema_decay
        self.input_range = input_range
        self.network_kwargs = dict(network_kwargs or {})

        self.network = build_network(network, num_classes=num_classes, in_channels=in_channels, **self.network_kwargs)
        self.ema_network: AveragedModel | None = None
        if ema_decay is not None:
            self.ema_network = AveragedModel(self.network, multi_avg_fn=_ema_multi_avg_fn(float(ema_decay)), use_buffers=False)
            self.ema_network.requires_grad_(False)

        metric = dict(num_classes=num_classes, average="micro")
        self.train_acc = MulticlassAccuracy(**metric)
        self.val_acc = MulticlassAccuracy(**metric)
        self.test_acc = MulticlassAccuracy(**metric)

    # ------------------------------------------------------------------ data
    def setup(self, stage: str) -> None:
        """Checks that the data module's classes and channels match this model."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        num_classes = getattr(dm, "num_classes", None)
        if num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f"DownstreamClassifier num_classes={self.num_classes} but the data has {num_classes} classes "
                f"{getattr(dm, 'class_names', '')}; set model num_classes to {num_classes}"
            )
        shape = getattr(dm, "image_shape", None)
        if shape is not None and shape[-1] != self.in_channels:
            raise ValueError(
                f"DownstreamClassifier in_channels={self.in_channels} but the data's images are {tuple(shape)} (H, W, C); "
                f"set model in_channels to {shape[-1]}"
            )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in the configured input range."""
        images = check_image_tensor(images, name="DownstreamClassifier input images", channels=None)
        x = images.permute(0, 3, 1, 2).float()
        if self.input_range == "zero_one":
            return x / 255.0
        return x / 127.5 - 1.0

    def _eval_network(self) -> nn.Module:
        if self.ema_network is not None and int(self.ema_network.n_averaged) > 0:
            return self.ema_network
        return self.network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` images -> ``(N, num_classes)`` logits.

        Uses the EMA weights (when configured and updated at least once) outside training.
        """
        net = self.network if self.training else self._eval_network()
        return net(self.preprocess(images))

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.network(self.preprocess(images))
        loss = F.cross_entropy(logits, labels)
        self.train_acc(logits, labels)
        n = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_network is not None:
            self.ema_network.update_parameters(self.network)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, metric: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self._eval_network()(self.preprocess(images))
        loss = F.cross_entropy(logits, labels)
        metric(logits, labels)
        n = len(labels)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=n)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).argmax(dim=1)

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> Any:
        params = self.network.parameters()
        if self.optimizer_name == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0, weight_decay=self.weight_decay
            )
        if self.lr_step_size is None:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.lr_step_size, gamma=self.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
