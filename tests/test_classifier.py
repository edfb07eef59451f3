"""Downstream classifier: networks, module, synthetic data module, CLI configs and the DownstreamEvaluation callback."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from pe_lightning import MNISTDataModule, Population
from pe_lightning.callbacks import DownstreamEvaluation
from pe_lightning.classifier import (
    DownstreamClassifier,
    SmallCNN,
    SyntheticDataModule,
    WideResNet,
    build_network,
    stratified_split,
)
from pe_lightning.cli import main
from pe_lightning.data.base import PrivateImageDataModule
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]
MNIST_CONFIG = ROOT / "configs" / "mnist_classifier.yaml"


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train with one intra-op thread: on 2 busy cores, 2 contending OpenMP threads run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ArrayDataModule(PrivateImageDataModule):
    """Random in-memory 'real' data: fast, no MNIST parsing."""

    def __init__(self, *, channels: int = 3, size: int = 8, n: int = 30, class_names=("cat", "dog", "emu"), seed: int = 1) -> None:
        super().__init__()
        self.channels, self.size, self.n, self.names, self.seed = channels, size, n, list(class_names), seed

    def load(self):
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.n, self.size, self.size, self.channels)
        private = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).numpy()
        test = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).numpy()
        labels = np.arange(self.n, dtype=np.int64) % len(self.names)
        return private, labels, test, labels.copy(), self.names


def noise_population(n_per_class: int, *, num_classes: int, shape=(28, 28, 1), seed: int = 0) -> Population:
    """Synthetic stand-in: uniform noise images (never equal to a real image)."""
    gen = torch.Generator().manual_seed(seed)
    n = n_per_class * num_classes
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8).numpy()
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), n_per_class)
    return Population(images=images, labels=labels)


def row_set(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


def quiet_trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("small_cnn", {}, (2, 1, 28, 28)),
        ("small_cnn", {"image_size": 32}, (2, 3, 32, 32)),
        ("wrn", {"depth": 10, "widen_factor": 1}, (2, 3, 32, 32)),
        ("wrn", {"depth": 10, "widen_factor": 2, "dropout": 0.3}, (2, 1, 28, 28)),
        ("resnet18", {}, (2, 3, 32, 32)),
    ],
)
def test_network_output_shapes(name, kwargs, shape):
    net = build_network(name, num_classes=7, in_channels=shape[1], **kwargs)
    assert net(torch.rand(shape)).shape == (2, 7)


def test_small_cnn_is_the_benchmark_network():
    net = SmallCNN(10, 1)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [(1, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3136, 128), (128, 10)]
    with pytest.raises(ValueError, match="image_size"):
        net(torch.rand(1, 1, 32, 32))


def test_wrn_28_10_size_and_bad_depth():
    # WRN-28-10 has 36.5M parameters; count them without the forward pass.
    assert sum(p.numel() for p in WideResNet(depth=28, widen_factor=10).parameters()) == pytest.approx(36.48e6, rel=1e-3)
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=27)


def test_unknown_network_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown network 'vgg'.*'resnet18'.*'small_cnn'.*'wrn'"):
        build_network("vgg", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="network kwargs"):
        build_network("wrn", num_classes=10, in_channels=3, depht=10)


# ------------------------------------------------------------------------------- module
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"network": "vgg"}, "network"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr_step_size": 0}, "lr_step_size"),
        ({"lr_gamma": 0.0}, "lr_gamma"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"input_range": "imagenet"}, "input_range"),
    ],
)
def test_classifier_rejects_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DownstreamClassifier(**kwargs)


def test_input_ranges_and_scheduler():
    images = torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 1, 2, 1)
    x01 = DownstreamClassifier(input_range="zero_one").preprocess(images)
    x11 = DownstreamClassifier(input_range="minus_one_one").preprocess(images)
    assert x01.shape == (1, 1, 1, 2)  # NHWC -> NCHW
    assert x01.flatten().tolist() == [0.0, 1.0] and x11.flatten().tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        DownstreamClassifier().preprocess(images.float())
    conf = DownstreamClassifier(lr_step_size=20, lr_gamma=0.2, optimizer="sgd").configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.SGD)
    sched = conf["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 20 and sched.gamma == 0.2


def test_ema_weights_are_used_for_evaluation_and_checkpointed(tmp_path):
    real = ArrayDataModule(channels=3, size=8)
    dm = SyntheticDataModule.from_population(noise_population(6, num_classes=3, shape=(8, 8, 3)), real=real, batch_size=6, shuffle_seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DownstreamClassifier(network="small_cnn", num_classes=3, in_channels=3, ema_decay=0.9, lr=0.05,
                                     network_kwargs={"image_size": 8})
    trainer = quiet_trainer(max_epochs=2, enable_checkpointing=True, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    steps = trainer.global_step
    assert steps > 0 and int(model.ema_network.n_averaged) == steps
    live = dict(model.network.named_parameters())
    ema = dict(model.ema_network.module.named_parameters())
    assert any(not torch.equal(live[k], ema[k]) for k in live), "EMA weights equal the live weights"
    model.eval()
    assert model._eval_network() is model.ema_network
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path or next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert any(k.startswith("ema_network.") for k in ckpt["state_dict"])


def test_model_and_data_must_agree():
    real = ArrayDataModule(channels=3, size=8)
    dm = SyntheticDataModule.from_population(noise_population(4, num_classes=3, shape=(8, 8, 3)), real=real, val_fraction=0.25)
    trainer = quiet_trainer(max_epochs=1)
    with pytest.raises(ValueError, match="num_classes=10 but the data has 3 classes"):
        trainer.fit(DownstreamClassifier(in_channels=3, network_kwargs={"image_size": 8}), datamodule=dm)
    with pytest.raises(ValueError, match="in_channels=1 but the data"):
        trainer.fit(DownstreamClassifier(num_classes=3, network_kwargs={"image_size": 8}), datamodule=dm)


# -------------------------------------------------------------------------- data module
def test_validation_split_is_synthetic_only_stratified_and_deterministic():
    real = tiny_datamodule(num_private=200, test_size=200)
    pop = noise_population(20, num_classes=10)
    dm = SyntheticDataModule.from_population(pop, real=real, val_fraction=0.1, split_seed=3)
    dm.setup("fit")
    assert len(dm.val_images) == 20 and len(dm.train_images) == 180
    assert np.bincount(dm.val_labels, minlength=10).tolist() == [2] * 10
    pop_rows, val_rows, train_rows = row_set(pop.images), row_set(dm.val_images), row_set(dm.train_images)
    assert val_rows <= pop_rows and train_rows <= pop_rows and not (val_rows & train_rows)
    real_rows = row_set(real.private_images) | row_set(real.test_images)
    assert not (val_rows & real_rows) and not (train_rows & real_rows)
    val_batches = [b[0].numpy() for b in dm.val_dataloader()]
    assert row_set(np.concatenate(val_batches)) == val_rows
    # the test loader is exactly the real held-out test split (not the private split)
    test_images = np.concatenate([b[0].numpy() for b in dm.test_dataloader()])
    np.testing.assert_array_equal(test_images, real.test_images)
    # deterministic from split_seed
    again = SyntheticDataModule.from_population(pop, real=real, val_fraction=0.1, split_seed=3)
    again.setup("fit")
    np.testing.assert_array_equal(again.val_images, dm.val_images)
    other = SyntheticDataModule.from_population(pop, real=real, val_fraction=0.1, split_seed=4)
    other.setup("fit")
    assert row_set(other.val_images) != val_rows


def test_stratified_split_keeps_a_training_sample_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2])
    train, val = stratified_split(labels, 0.5, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 2, 0]
    assert stratified_split(labels, 0.0, seed=0)[1].size == 0


def test_png_tree_and_npz_load_identically(tmp_path):
    real = ArrayDataModule(channels=3, size=8)
    real.setup()
    pop = noise_population(5, num_classes=3, shape=(8, 8, 3))
    pop.save(tmp_path / "final", class_names=real.class_names, png=True)
    assert sorted(p.name for p in (tmp_path / "final" / "images").iterdir()) == ["cat", "dog", "emu"]
    loaded = {}
    for key, path in {
        "npz": tmp_path / "final" / "population.npz",
        "tree": tmp_path / "final" / "images",
        "folder": tmp_path / "final",
    }.items():
        dm = SyntheticDataModule(population=str(path), real=real, val_fraction=0.2)
        dm.setup("fit")
        loaded[key] = dm
    for key in ("tree", "folder"):
        for attr in ("train_images", "train_labels", "val_images", "val_labels"):
            np.testing.assert_array_equal(getattr(loaded[key], attr), getattr(loaded["npz"], attr), err_msg=f"{key}.{attr}")


def test_png_tree_of_grayscale_digits(tmp_path):
    real = tiny_datamodule(num_private=50, test_size=100)
    real.setup()
    pop = noise_population(3, num_classes=10)
    pop.save_image_folder(tmp_path / "images", class_names=real.class_names)
    dm = SyntheticDataModule(population=str(tmp_path / "images"), real=real, val_fraction=0.0)
    dm.setup("fit")
    np.testing.assert_array_equal(dm.train_images, pop.images)
    np.testing.assert_array_equal(dm.train_labels, pop.labels)
    assert dm.val_dataloader() == []


def test_clear_errors(tmp_path):
    real = ArrayDataModule(channels=3, size=8)
    missing = tmp_path / "nope" / "population.npz"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        SyntheticDataModule(population=str(missing), real=real).setup("fit")

    gray = tmp_path / "gray.npz"
    noise_population(2, num_classes=3, shape=(8, 8, 1)).save_npz(gray)
    with pytest.raises(ValueError, match=rf"{gray}.*1 channel.*test split of ArrayDataModule has 3"):
        SyntheticDataModule(population=str(gray), real=real).setup("fit")

    big = tmp_path / "big.npz"
    noise_population(2, num_classes=3, shape=(16, 16, 3)).save_npz(big)
    with pytest.raises(ValueError, match=rf"{big}.*\(16, 16, 3\).*\(8, 8, 3\)"):
        SyntheticDataModule(population=str(big), real=real).setup("fit")

    bad_labels = tmp_path / "labels.npz"
    pop = noise_population(2, num_classes=3, shape=(8, 8, 3))
    Population(images=pop.images, labels=pop.labels + 2).save_npz(bad_labels)
    with pytest.raises(ValueError, match=rf"{bad_labels}: labels \[3, 4\] are outside the 3 classes"):
        SyntheticDataModule(population=str(bad_labels), real=real).setup("fit")

    not_npz = tmp_path / "junk.npz"
    not_npz.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=str(not_npz)):
        SyntheticDataModule(population=str(not_npz), real=real).setup("fit")

    tree = tmp_path / "tree"
    pop.save_image_folder(tree)  # folders named 0, 1, 2: not the class names
    with pytest.raises(ValueError, match=r"class folders \['0', '1', '2'\] are not classes"):
        SyntheticDataModule(population=str(tree), real=real).setup("fit")

    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            SyntheticDataModule(population="x.npz", real=real, val_fraction=bad)
    with pytest.raises(ValueError, match="leaves no validation image"):
        SyntheticDataModule.from_population(pop, real=real, val_fraction=0.1).setup("fit")
    with pytest.raises(TypeError, match="PrivateImageDataModule"):
        SyntheticDataModule(population="x.npz", real=object())
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticDataModule(population="x.npz", real=real, batch_size=0)


# ----------------------------------------------------------------------------------- CLI
def test_cli_fit_then_test_from_the_mnist_config(tmp_path, monkeypatch):
    """The shipped config, with the population where the demo writes it (relative paths land in tmp_path)."""
    monkeypatch.chdir(tmp_path)
    pop = noise_population(10, num_classes=10)
    pop.save_npz(tmp_path / "outputs" / "mnist_drawtext" / "final" / "population.npz")
    common = [
        "--config", str(MNIST_CONFIG),
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.real.init_args.test_size=100",
        "--data.init_args.real.init_args.num_private=50",
    ]
    cli = main(["fit", *common, "--trainer.max_epochs=1"])
    dm = cli.datamodule
    assert isinstance(cli.model, DownstreamClassifier) and isinstance(dm, SyntheticDataModule)
    assert len(dm.train_images) == 90 and len(dm.val_images) == 10 and len(dm.test_images) == 100
    assert not (row_set(dm.val_images) & (row_set(dm.real.private_images) | row_set(dm.real.test_images)))
    assert 0.0 <= float(cli.trainer.callback_metrics["val/acc"]) <= 1.0
    ckpt_dir = tmp_path / "outputs" / "mnist_classifier" / "checkpoints"
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.parent == ckpt_dir and best.name.startswith("epoch=00-val_acc=") and (ckpt_dir / "last.ckpt").is_file()
    (metrics_csv,) = (tmp_path / "outputs" / "mnist_classifier" / "logs").rglob("metrics.csv")
    header = next(csv.reader(metrics_csv.open()))
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(header)

    cli = main(["test", *common, "--ckpt_path", str(best)])
    acc = float(cli.trainer.callback_metrics["test/acc"])
    assert 0.0 <= acc <= 1.0 and "test/loss" in cli.trainer.callback_metrics


# ------------------------------------------------------------------------------ callback
def test_downstream_evaluation_callback_on_a_tiny_pe_run(tmp_path):
    cb = DownstreamEvaluation(max_epochs=1, batch_size=32, val_fraction=0.125, seed=0)
    trainer = tiny_trainer(tmp_path, callbacks=[cb])
    model = tiny_model(noise_multiplier=1.0)
    dm = tiny_datamodule(test_size=200)
    trainer.fit(model, datamodule=dm)
    value = trainer.callback_metrics["downstream/test_acc"].item()
    assert 0.0 <= value <= 1.0 and value == pytest.approx(cb.test_acc)
    assert "downstream/val_acc" in trainer.callback_metrics
    # deterministic from the seed, and the global torch RNG is left as it was
    state = torch.random.get_rng_state()
    again, _ = cb.evaluate(model.population, datamodule=dm)
    assert again == cb.test_acc
    assert torch.equal(state, torch.random.get_rng_state())


def test_downstream_evaluation_without_validation_split_on_rgb_data():
    cb = DownstreamEvaluation(max_epochs=1, batch_size=8, val_fraction=0.0, seed=1)
    test_acc, val_acc = cb.evaluate(noise_population(4, num_classes=3, shape=(8, 8, 3)), datamodule=ArrayDataModule())
    assert 0.0 <= test_acc <= 1.0 and val_acc is None


def test_downstream_evaluation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="network"):
        DownstreamEvaluation(network="vgg")
    with pytest.raises(ValueError, match="max_epochs"):
        DownstreamEvaluation(max_epochs=0)
    with pytest.raises(ValueError, match="val_fraction"):
        DownstreamEvaluation(val_fraction=1.0)
    with pytest.raises(ValueError, match="classifier_kwargs"):
        DownstreamEvaluation(classifier_kwargs={"lr": 0.1})


# ----------------------------------------------------------------------- learning sanity
@pytest.mark.filterwarnings("ignore:Total length of .* across ranks is zero")  # no validation split here
def test_small_cnn_learns_real_mnist():
    """Trained on 1,000 real digits (as if they were synthetic) it must beat 70 % on the test split."""
    real = MNISTDataModule(num_private=1000)
    real.setup()
    pop = Population(images=real.private_images, labels=real.private_labels)
    dm = SyntheticDataModule.from_population(pop, real=real, val_fraction=0.0, batch_size=32, shuffle_seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DownstreamClassifier()
        trainer = quiet_trainer(max_epochs=3)
        trainer.fit(model, datamodule=dm)
        (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] > 0.70, result
