"""Downstream evaluation at the end of a PE run: train a classifier on the final population."""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.private_metrics import check_private_opt_ins, publish_metrics
from pe_lightning.private_side import test_split_is_private

__all__ = ["DownstreamEvaluation"]


class DownstreamEvaluation(PopulationCallback):
    """Trains a :class:`~pe_lightning.classifier.DownstreamClassifier` on the final population.

    On the final population (``iteration == pl_module.run.iterations``) it builds a
    :class:`~pe_lightning.classifier.SyntheticDataModule` from the in-memory population
    and the PE data module (``trainer.datamodule``): training on the synthetic data minus a
    stratified synthetic validation split, testing on the data module's held-out *test*
    split. The private training split is never used, so the result is post-processing of
    the DP output plus an evaluation on non-private held-out data. The classifier runs in
    its own ``pl.Trainer`` (no logger, no checkpoints, the device of the PE module) and
    the model of the last epoch is tested (no selection on test data).

    It logs ``downstream/test_acc`` (accuracy in ``[0, 1]`` on the real test split) and
    ``downstream/val_acc`` (on the synthetic validation split, when there is one) through
    ``pl_module.log_iteration_metrics``, and keeps them as :attr:`test_acc` and
    :attr:`val_acc`.

    Privacy (docs/privacy.md): when the held-out split was carved out of the private data
    (an image folder without ``test_dir``, ...), the test accuracy is computed against
    private images, OUTSIDE the DP guarantee: it goes only to the private-side report
    (:func:`~pe_lightning.private_metrics.publish_metrics`), to the console and the loggers
    only with the opt-ins below, and the console line names no test-split size.

    Randomness: the weights are initialised under ``torch.manual_seed(seed)``
    (docs/benchmark.md) and training batches are shuffled by a generator seeded with ``seed``,
    all inside ``torch.random.fork_rng``, so the PE run's global RNG state is untouched.
    Under DDP every rank trains the same classifier on its own device (no rank waits
    minutes in a collective) and rank zero's accuracy is broadcast.

    Args:
        network: network name for :func:`~pe_lightning.classifier.build_network`.
        max_epochs: training epochs (docs/benchmark.md: 30).
        lr: Adam learning rate.
        batch_size: images per batch.
        val_fraction: synthetic validation fraction, in ``[0, 1)``.
        seed: seed of the weight initialisation, the shuffling and the split.
        classifier_kwargs: further :class:`~pe_lightning.classifier.DownstreamClassifier`
            arguments (``input_range``, ``ema_decay``, ``network_kwargs``, ...).
        report_private_metrics: print an accuracy computed against private images on the
            console (outside the DP guarantee; warned).
        log_private_metrics: also send it to the loggers and the run summary (needs
            ``report_private_metrics``; outside the DP guarantee; warned).
    """

    #: The split it tests on (:func:`pe_lightning.private_side.data_class` reads it).
    real_split = "test"

    evaluates_saved_runs = True  # python -m pe_lightning test evaluates a saved population with it

    def __init__(
        self,
        *,
        network: str = "small_cnn",
        max_epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        classifier_kwargs: dict[str, Any] | None = None,
        report_private_metrics: bool = False,
        log_private_metrics: bool = False,
    ) -> None:
        super().__init__()
        from pe_lightning.classifier.networks import NETWORKS

        if network not in NETWORKS:
            raise ValueError(f"DownstreamEvaluation network must be one of {sorted(NETWORKS)}, got {network!r}")
        if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 1:
            raise ValueError(f"DownstreamEvaluation max_epochs must be an integer >= 1, got {max_epochs!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"DownstreamEvaluation lr must be > 0, got {lr!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DownstreamEvaluation batch_size must be an integer >= 1, got {batch_size!r}")
        if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
            raise ValueError(f"DownstreamEvaluation val_fraction must be in [0, 1), got {val_fraction!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"DownstreamEvaluation seed must be an integer, got {seed!r}")
        check_private_opt_ins("DownstreamEvaluation", report_private_metrics=report_private_metrics,
                              log_private_metrics=log_private_metrics)
        self.report_private_metrics = report_private_metrics
        self.log_private_metrics = log_private_metrics
        kwargs = dict(classifier_kwargs or {})
        clash = {"network", "lr", "num_classes", "in_channels"} & set(kwargs)
        if clash:
            raise ValueError(f"DownstreamEvaluation classifier_kwargs must not set {sorted(clash)} (set here or taken from the data)")
        self.network = network
        self.max_epochs = max_epochs
        self.lr = float(lr)
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.classifier_kwargs = kwargs
        self.test_acc: float | None = None
        self.val_acc: float | None = None

    def on_population(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, population, iteration: int) -> None:
        if iteration != pl_module.run.iterations:
            return
        test_acc, val_acc = self.evaluate(population, datamodule=trainer.datamodule, device=pl_module.device)
        if trainer.world_size > 1:
            test_acc, val_acc = trainer.strategy.broadcast((test_acc, val_acc), src=0)
        self.test_acc, self.val_acc = test_acc, val_acc
        if val_acc is not None:  # synthetic validation split: public
            pl_module.log_iteration_metrics({"downstream/val_acc": val_acc})
        publish_metrics(self, trainer, pl_module, {"downstream/test_acc": test_acc})

    def evaluate(self, population, *, datamodule, device: torch.device | str = "cpu") -> tuple[float, float | None]:
        """Train on ``population``, test on ``datamodule``'s test split.

        Args:
            population: the synthetic :class:`~pe_lightning.Population`.
            datamodule: the PE run's :class:`~pe_lightning.data.PrivateImageDataModule`.
            device: where to train (``cpu``, ``cuda:i``, ``mps``).

        Returns:
            ``(test_acc, val_acc)``: accuracies in ``[0, 1]``; ``val_acc`` is ``None``
            without a validation split.
        """
        from pe_lightning.classifier import DownstreamClassifier, SyntheticDataModule

        device = torch.device(device)
        dm = SyntheticDataModule.from_population(
            population,
            real=datamodule,
            val_fraction=self.val_fraction,
            split_seed=self.seed,
            batch_size=self.batch_size,
            shuffle_seed=self.seed,
        )
        dm.setup("fit")
        channels = dm.image_shape[-1]
        kwargs = dict(self.classifier_kwargs)
        if self.network == "small_cnn":
            kwargs["network_kwargs"] = {"image_size": dm.image_shape[0], **kwargs.get("network_kwargs", {})}
        if device.type == "cuda":
            accelerator, devices, fork_devices = "cuda", [device.index or 0], [device.index or 0]
        elif device.type == "mps":
            accelerator, devices, fork_devices = "mps", 1, []
        else:
            accelerator, devices, fork_devices = "cpu", 1, []
        with torch.random.fork_rng(devices=fork_devices), tempfile.TemporaryDirectory(prefix="pe_downstream_") as tmp:
            torch.manual_seed(self.seed)
            model = DownstreamClassifier(
                network=self.network, num_classes=dm.num_classes, in_channels=channels, lr=self.lr, **kwargs
            )
            inner = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                max_epochs=self.max_epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0 if len(dm.val_images) == 0 else 1.0,
                default_root_dir=tmp,
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=PossibleUserWarning)
                inner.fit(model, datamodule=dm)
                val_acc = float(inner.callback_metrics["val/acc"]) if "val/acc" in inner.callback_metrics else None
                results = inner.test(model, datamodule=dm, verbose=False)
        test_acc = float(results[0]["test/acc"])
        trained = f"[downstream] {self.network} trained {self.max_epochs} epochs on {len(dm.train_images)} synthetic images"
        val = f", synthetic val accuracy {val_acc:.4f}" if val_acc is not None else ""
        if test_split_is_private(datamodule):  # its size and the accuracy on it are private-derived
            rank_zero_info(f"{trained}; tested on the held-out split carved out of the private data{val}")
        else:
            rank_zero_info(f"{trained}: test accuracy {test_acc:.4f} on {len(dm.test_images)} real held-out images{val}")
        return test_acc, val_acc
