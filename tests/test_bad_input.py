"""Bad input gives a clear error that names the file or field and what was expected,
and nothing already written is lost.

Cases: corrupt/truncated image files, mixed sizes or channel counts, a class without
private samples, a class without synthetic samples, labels outside the class list, NaN
embeddings, schedules of the wrong length, a non-writable output folder. (A config typo is
covered by ``tests/test_cli.py::test_config_typo_is_named``.)
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_lightning import PixelEmbedding, Population, SyntheticDataModule
from pe_lightning.classifier import load_image_tree
from pe_lightning.data import ImageFolderDataModule, PrivateImageDataModule
from pe_lightning.data.base import check_labels
from pe_lightning.population import atomic_directory, atomic_write
from pe_testing import tiny_model, tiny_trainer

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- helpers
class ArrayDataModule(PrivateImageDataModule):
    """In-memory private/test data (28x28x1 noise digits): fast, no MNIST parsing.

    ``private_counts[c]`` private images of class ``c`` (0 allowed: an empty class),
    two test images per class.
    """

    def __init__(self, *, private_counts=(6, 6, 6), class_names=("0", "1", "2"), private_labels=None, seed: int = 0):
        super().__init__(batch_size=64)
        self.private_counts = list(private_counts)
        self.names = list(class_names)
        self.forced_labels = private_labels
        self.seed = seed

    def load(self):
        gen = torch.Generator().manual_seed(self.seed)
        labels = np.repeat(np.arange(len(self.private_counts)), self.private_counts).astype(np.int64)
        if self.forced_labels is not None:
            labels = np.asarray(self.forced_labels)
        private = torch.randint(0, 256, (len(labels), 28, 28, 1), generator=gen, dtype=torch.uint8).numpy()
        test_labels = np.repeat(np.arange(len(self.names)), 2).astype(np.int64)
        test = torch.randint(0, 256, (len(test_labels), 28, 28, 1), generator=gen, dtype=torch.uint8).numpy()
        return private, labels, test, test_labels, self.names


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(root: Path, *, classes=("ant", "bee"), per_class: int = 3, size=(8, 6), mode: str = "RGB") -> Path:
    """``root/<class>/<i>.png``, solid images of ``size`` = (W, H)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = (40 * c + 10 * i,) * (3 if mode == "RGB" else 1)
            Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(root / name / f"{i:02d}.png")
    return root


def noise_population(n_per_class: int, *, num_classes: int, shape=(28, 28, 1), seed: int = 0) -> Population:
    gen = torch.Generator().manual_seed(seed)
    n = n_per_class * num_classes
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8).numpy()
    return Population(images=images, labels=np.repeat(np.arange(num_classes, dtype=np.int64), n_per_class))


def truncated_png(path: Path) -> Path:
    data = png_bytes(np.full((28, 28), 7, np.uint8) + np.arange(28, dtype=np.uint8)[:, None])
    path.write_bytes(data[: len(data) // 2])
    return path


def fit(model, dm, tmp_path: Path):
    tiny_trainer(tmp_path, max_epochs=model.iterations).fit(model, datamodule=dm)


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder path that cannot be created, even by root: it lies under a regular file."""
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file, not a folder")
    return blocker / "out"


# ------------------------------------------------------------ 1. corrupt/truncated files
@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_folder_datamodule_names_corrupt_file(tmp_path: Path, kind: str) -> None:
    root = write_folder(tmp_path / "priv")
    bad = root / "bee" / "zz.png"
    if kind == "truncated":
        full = png_bytes(np.arange(48, dtype=np.uint8).reshape(6, 8)[..., None].repeat(3, -1))
        bad.write_bytes(full[: len(full) // 2])
    elif kind == "garbage":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    else:
        bad.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        ImageFolderDataModule(private_dir=str(root)).setup()
    assert "cannot read image file" in str(info.value)
    assert bad.exists()  # nothing is deleted


def test_synthetic_png_tree_names_corrupt_file(tmp_path: Path) -> None:
    real = ArrayDataModule()
    real.setup()
    tree = tmp_path / "images"
    noise_population(2, num_classes=3).save_image_folder(tree, class_names=real.class_names)
    bad = truncated_png(tree / "1" / "000004.png")
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*not a readable image"):
        SyntheticDataModule(population=str(tree), real=real, val_fraction=0.0).setup("fit")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_image_tree(tree, class_names=real.class_names)


def test_corrupt_population_npz_is_named(tmp_path: Path) -> None:
    path = noise_population(2, num_classes=3).save_npz(tmp_path / "population.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        Population.load_npz(path)


# ------------------------------------------------------------ 2. mixed sizes / channels
def test_folder_datamodule_mixed_sizes_names_file_and_shapes(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "priv", size=(8, 6))
    odd = root / "bee" / "zz.png"
    Image.new("RGB", (5, 7), (1, 2, 3)).save(odd)
    with pytest.raises(ValueError, match=re.escape(str(odd))) as info:
        ImageFolderDataModule(private_dir=str(root)).setup()
    msg = str(info.value)
    assert "expected shape (6, 8, 3) (H, W, C), found (7, 5, 3)" in msg and "image_size" in msg
    assert str(root / "ant" / "00.png") in msg  # the reference image is named too


def test_folder_datamodule_mixed_sizes_in_test_dir(tmp_path: Path) -> None:
    priv = write_folder(tmp_path / "priv", size=(8, 6))
    test = write_folder(tmp_path / "test", size=(8, 6), per_class=1)
    odd = test / "ant" / "00.png"
    Image.new("RGB", (9, 9)).save(odd)
    with pytest.raises(ValueError, match=re.escape(str(odd)) + r".*expected shape \(6, 8, 3\) \(H, W, C\), found \(9, 9, 3\)"):
        ImageFolderDataModule(private_dir=str(priv), test_dir=str(test)).setup()


def test_folder_datamodule_mixed_channels_are_converted_to_the_configured_count(tmp_path: Path) -> None:
    """Channel count is configuration (``channels``): grayscale/RGBA files are converted, not mixed."""
    root = write_folder(tmp_path / "priv")
    Image.new("L", (8, 6), 99).save(root / "ant" / "gray.png")
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(root / "bee" / "alpha.png")
    for channels in (1, 3):
        dm = ImageFolderDataModule(private_dir=str(root), channels=channels)
        dm.setup()
        assert dm.private_images.shape[1:] == (6, 8, channels)
        assert dm.test_images.shape[1:] == (6, 8, channels)


@pytest.mark.parametrize("odd_shape", [(28, 28, 3), (20, 28, 1)])
def test_synthetic_png_tree_mixed_shapes_names_file(tmp_path: Path, odd_shape) -> None:
    real = ArrayDataModule()
    real.setup()
    tree = tmp_path / "images"
    noise_population(2, num_classes=3).save_image_folder(tree, class_names=real.class_names)
    odd = tree / "2" / "000005.png"
    arr = np.full(odd_shape, 50, np.uint8)
    Image.fromarray(arr[..., 0] if odd_shape[-1] == 1 else arr).save(odd)
    expected = re.escape(f"expected (28, 28, 1), found {odd_shape}")
    with pytest.raises(ValueError, match=re.escape(str(odd)) + ".*" + expected):
        SyntheticDataModule(population=str(tree), real=real, val_fraction=0.0).setup("fit")


# ------------------------------------------------------------ 3. class without private samples
def test_folder_datamodule_empty_class_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "priv")
    (root / "cat").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(root / "cat")) + r".*\(in private_dir\) contains no images"):
        ImageFolderDataModule(private_dir=str(root)).setup()
    # also in test_dir
    test = write_folder(tmp_path / "test", per_class=1, classes=("ant", "bee", "cat"))
    for f in (test / "cat").iterdir():
        f.unlink()
    write_folder(root, classes=("cat",))
    with pytest.raises(ValueError, match=re.escape(str(test / "cat")) + r".*\(in test_dir\) contains no images"):
        ImageFolderDataModule(private_dir=str(root), test_dir=str(test)).setup()


def test_private_evolution_class_without_private_samples(tmp_path: Path) -> None:
    dm = ArrayDataModule(private_counts=(6, 0, 6))
    model = tiny_model(noise_multiplier=1.0, lookahead_degree=0, num_samples_per_class=4)
    with pytest.raises(ValueError, match=r"classes \['1'\] have no private samples"):
        fit(model, dm, tmp_path)
    assert model.population is None  # failed before any API call or vote


# ------------------------------------------------------------ 4. class without synthetic samples
@pytest.mark.parametrize("counts", [[4, 0, 4], [0], [4, -1, 4]])
def test_num_samples_per_class_zero_is_rejected(counts) -> None:
    with pytest.raises(ValueError, match=re.escape(f"num_samples_per_class must be an int >= 1 or a list of ints >= 1, got {counts}")):
        tiny_model(num_samples_per_class=counts)


def test_num_samples_per_class_wrong_length(tmp_path: Path) -> None:
    model = tiny_model(noise_multiplier=1.0, lookahead_degree=0, num_samples_per_class=[4, 4])
    with pytest.raises(ValueError, match=r"num_samples_per_class has 2 entries but the data has 3 classes"):
        fit(model, ArrayDataModule(), tmp_path)


def test_synthetic_datamodule_population_missing_a_class(tmp_path: Path) -> None:
    real = ArrayDataModule(class_names=("ant", "bee", "cat"))
    pop = noise_population(3, num_classes=3)
    keep = pop.labels != 1
    partial = Population(images=pop.images[keep], labels=pop.labels[keep])
    path = partial.save_npz(tmp_path / "population.npz")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": no synthetic samples for classes \['bee'\]"):
        SyntheticDataModule(population=str(path), real=real, val_fraction=0.0).setup("fit")
    with pytest.raises(ValueError, match=r"no synthetic samples for classes \['bee'\]"):
        SyntheticDataModule.from_population(partial, real=real, val_fraction=0.0).setup("fit")
    # a PNG tree without the class folder
    tree = tmp_path / "tree"
    partial.save_image_folder(tree, class_names=["ant", "bee", "cat"])
    assert not (tree / "bee").exists()
    with pytest.raises(ValueError, match=re.escape(str(tree)) + r".*no synthetic samples for classes \['bee'\]"):
        SyntheticDataModule(population=str(tree), real=real, val_fraction=0.0).setup("fit")


# ------------------------------------------------------------ 5. labels outside the class list
def test_datamodule_labels_outside_class_list() -> None:
    dm = ArrayDataModule(private_labels=[0, 1, 2, 5, 1, -1])
    with pytest.raises(ValueError, match=r"ArrayDataModule private labels has labels outside the class list \[0, 3\).*\[-1, 5\]"):
        dm.setup()
    with pytest.raises(ValueError, match=r"test labels has labels outside the class list \[0, 2\)"):
        check_labels(np.array([0, 1, 2]), num_classes=2, n=3, name="test labels")
    with pytest.raises(ValueError, match=r"private labels must have shape \(4,\)"):
        check_labels(np.array([0, 1, 2]), num_classes=3, n=4, name="private labels")


def test_population_labels_outside_class_list(tmp_path: Path) -> None:
    real = ArrayDataModule(class_names=("ant", "bee", "cat"))
    pop = noise_population(2, num_classes=3)
    shifted = Population(images=pop.images, labels=pop.labels + 2)  # labels 2, 3, 4
    path = shifted.save_npz(tmp_path / "population.npz")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": labels \[3, 4\] are outside the 3 classes"):
        SyntheticDataModule(population=str(path), real=real).setup("fit")
    # Negative labels are never class indices; a file holding them is named.
    with pytest.raises(ValueError, match=r"labels must be class indices >= 0, got \[-1\]"):
        Population(images=pop.images, labels=pop.labels - 1)
    neg = tmp_path / "neg.npz"
    with open(neg, "wb") as f:
        np.savez(f, images=pop.images, labels=pop.labels - 1)
    with pytest.raises(ValueError, match=re.escape(str(neg)) + r".*>= 0"):
        Population.load_npz(neg)
    # Writing a PNG tree with too few class names is an error, not an IndexError, and writes nothing.
    with pytest.raises(ValueError, match=r"labels \[3, 4\] are outside the class list \[0, 3\)"):
        shifted.save_image_folder(tmp_path / "tree", class_names=["ant", "bee", "cat"])
    with pytest.raises(ValueError, match=r"outside the class list"):
        shifted.save(tmp_path / "run", class_names=["ant", "bee", "cat"])
    assert not (tmp_path / "tree").exists() and not (tmp_path / "run").exists()
    # A PNG tree whose class folder is not a class of the data module.
    tree = tmp_path / "tree2"
    pop.save_image_folder(tree, class_names=["ant", "bee", "dog"])
    with pytest.raises(ValueError, match=re.escape(str(tree)) + r": class folders \['dog'\] are not classes"):
        SyntheticDataModule(population=str(tree), real=real).setup("fit")


# ------------------------------------------------------------ 6. NaN embeddings
class PoisonedEmbedding(PixelEmbedding):
    """Pixel embedding that returns NaN rows for chosen images.

    ``poison='private'``: NaN for the images in ``private`` (by content);
    ``poison='synthetic'``: NaN for every image *not* in ``private``.
    """

    def __init__(self, *, private: np.ndarray, poison: str) -> None:
        super().__init__(size=14)
        self.private = {bytes(img.tobytes()) for img in private}
        self.poison = poison

    def embed(self, images, *, batch_size: int = 1024) -> torch.Tensor:
        out = super().embed(images, batch_size=batch_size).clone()
        arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        is_private = torch.tensor([bytes(img.tobytes()) in self.private for img in arr], dtype=torch.bool)
        bad = is_private if self.poison == "private" else ~is_private
        out[bad] = float("nan")
        return out


@pytest.mark.parametrize("poison", ["private", "synthetic"])
def test_nan_embeddings_fail_the_fit(tmp_path: Path, poison: str) -> None:
    dm = ArrayDataModule()
    dm.setup()
    targets = dm.private_images[[1, 4]] if poison == "private" else dm.private_images
    embedding = PoisonedEmbedding(private=targets, poison=poison)
    model = tiny_model(embedding=embedding, noise_multiplier=1.0, lookahead_degree=0, num_samples_per_class=4)
    with pytest.raises(ValueError, match=rf"NaN/inf for .*{poison} images") as info:
        fit(model, dm, tmp_path)
    if poison == "private":
        assert "PoisonedEmbedding" in str(info.value)
    assert model.iteration == 0  # no iteration completed, no noisy histogram released


# ------------------------------------------------------------ 7. schedules of the wrong length
@pytest.mark.parametrize("degrees", [[0.5], [0.5, 0.4, 0.3], []])
def test_variation_degrees_wrong_length(degrees) -> None:
    expected = f"variation_degrees must have one entry per iteration (iterations=2), got {len(degrees)} entries"
    with pytest.raises(ValueError, match=re.escape(expected)):
        tiny_model(iterations=2, variation_degrees=degrees)


def test_variation_degree_out_of_range_names_the_iteration() -> None:
    with pytest.raises(ValueError, match=re.escape("variation_degrees[1] (iteration 2)")):
        tiny_model(iterations=2, variation_degrees=[0.5, -3.0])


# ------------------------------------------------------------ 8. non-writable output folder
def test_atomic_write_to_unwritable_folder_names_the_path(tmp_path: Path) -> None:
    target = unwritable_dir(tmp_path) / "population.npz"
    with pytest.raises(OSError, match=re.escape(str(target)) + r".*not writable") as info:
        atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"x"))
    assert str(target.parent) in str(info.value)
    with pytest.raises(OSError, match=re.escape(str(tmp_path / "afile" / "out" / "images")) + ".*not writable"):
        atomic_directory(tmp_path / "afile" / "out" / "images", lambda tmp: None)
    assert (tmp_path / "afile").read_text() == "a regular file, not a folder"  # the blocker is untouched


def test_population_save_to_unwritable_folder_names_the_path(tmp_path: Path) -> None:
    out = unwritable_dir(tmp_path)
    pop = noise_population(2, num_classes=3)
    for png in (False, True):
        with pytest.raises(OSError, match=re.escape(str(out)) + r".*not writable"):
            pop.save(out, class_names=["a", "b", "c"], png=png)
    with pytest.raises(OSError, match=re.escape(str(out / "population.npz"))):
        pop.save_npz(out / "population.npz")


@pytest.mark.skipif(IS_ROOT, reason="root ignores directory permissions; covered by the under-a-file tests")
def test_atomic_write_to_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    existing = folder / "population.npz"
    existing.write_bytes(b"old")
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=re.escape(str(existing)) + r".*not writable"):
            atomic_write(existing, lambda tmp: Path(tmp).write_bytes(b"new"))
        assert existing.read_bytes() == b"old"
    finally:
        folder.chmod(0o700)


def test_failed_write_midway_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "population.npz"
    target.write_bytes(b"the old, complete file")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise OSError("No space left on device (simulated)")

    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"the old, complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["population.npz"]  # no temp file left behind


def test_failed_population_save_midway_keeps_previous_save(tmp_path: Path, monkeypatch) -> None:
    """A failure while writing the PNGs leaves the previous population.npz *and* images/ intact."""
    out = tmp_path / "final"
    old = noise_population(2, num_classes=3, seed=1)
    old.save(out, class_names=["a", "b", "c"])
    npz_before = (out / "population.npz").read_bytes()
    pngs_before = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "images").rglob("*.png")}

    calls = {"n": 0}
    real_save = Image.Image.save

    def flaky_save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        noise_population(3, num_classes=3, seed=2).save(out, class_names=["a", "b", "c"])
    monkeypatch.undo()
    assert (out / "population.npz").read_bytes() == npz_before
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "images").rglob("*.png")} == pngs_before
    assert sorted(p.name for p in out.iterdir()) == ["images", "population.npz"]  # no temp leftovers
    loaded = Population.load_npz(out / "population.npz")
    np.testing.assert_array_equal(loaded.images, old.images)


# NOTE: this test checks the fit-start output_dir check being integrated in
# pe_lightning/evolution.py (PrivateEvolution raises PermissionError naming output_dir and
# saying "not writable" before any privacy is spent). It fails until that lands.
def test_private_evolution_unwritable_output_dir_fails_before_spending_privacy(tmp_path: Path) -> None:
    out = unwritable_dir(tmp_path)
    model = tiny_model(noise_multiplier=1.0, lookahead_degree=0, num_samples_per_class=4, output_dir=str(out))
    with pytest.raises(PermissionError, match=re.escape(str(out)) + r".*not writable"):
        fit(model, ArrayDataModule(), tmp_path)
    assert model.population is None and model.iteration == 0  # no API call, no vote, no noise
    assert (tmp_path / "afile").read_text() == "a regular file, not a folder"


def test_folder_datamodule_takes_channels_from_the_files(tmp_path: Path) -> None:
    """``channels=None`` (the default): a grayscale folder gives 1 channel, a colour one 3; a mix is a clear error."""
    gray = tmp_path / "gray"
    for name in ("ant", "bee"):
        (gray / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 6), 40 * i).save(gray / name / f"{i}.png")
    dm = ImageFolderDataModule(private_dir=str(gray))
    dm.setup()
    assert dm.private_images.shape[1:] == (6, 8, 1)
    colour = write_folder(tmp_path / "colour")
    dm = ImageFolderDataModule(private_dir=str(colour))
    dm.setup()
    assert dm.private_images.shape[1:] == (6, 8, 3)
    Image.new("L", (8, 6), 99).save(colour / "ant" / "gray.png")
    with pytest.raises(ValueError, match=r"mix grayscale .*gray\.png.* and colour .*: set the data module's channels"):
        ImageFolderDataModule(private_dir=str(colour)).setup()
    explicit = ImageFolderDataModule(private_dir=str(colour), channels=1)  # the override
    explicit.setup()
    assert explicit.private_images.shape[-1] == 1


def test_an_api_with_another_channel_count_than_the_data_is_named(tmp_path: Path) -> None:
    """A grayscale folder with an RGB API: an error about channels (not about embedding dimensions), nothing spent."""
    from pe_lightning.apis.drawtext import DrawText
    from pe_lightning.callbacks import PrivacyAccountant

    gray = tmp_path / "gray"
    for name in ("0", "1"):
        (gray / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (28, 28), 30 * i).save(gray / name / f"{i}.png")
    accountant = PrivacyAccountant(epsilon=1.0)
    model = tiny_model(api=DrawText(image_size=28, channels=3), num_samples_per_class=4, lookahead_degree=0)
    with pytest.raises(ValueError, match=r"private images have 1 channel\(s\) \(grayscale\) but DrawText makes 3-channel"):
        tiny_trainer(tmp_path, callbacks=[accountant]).fit(model, datamodule=ImageFolderDataModule(private_dir=str(gray)))
    assert len(accountant.ledger) == 0
