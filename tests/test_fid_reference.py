"""FID's reference statistics: a seeded subset (never a prefix), a folder source, the cache and where it lives."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks import FIDCallback
from pe_lightning.callbacks.fid_reference import FIDReference, seeded_subset
from pe_lightning.metrics.frechet import feature_statistics, pixel_frechet_distance
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


class _CountingPixels(PixelEmbedding):
    calls = 0

    def embed(self, images, *, batch_size=1024):
        type(self).calls += 1
        return super().embed(images, batch_size=batch_size)


def _class_ordered(n_per_class: int = 100) -> np.ndarray:
    """Images as a folder data module reads them: class 0 (black) first, then class 1 (white)."""
    black = np.zeros((n_per_class, 4, 4, 1), np.uint8)
    return np.concatenate([black, black + 255])


def _fakes(tmp_path: Path, *, test=None, private=None, private_dir=None):
    dm = SimpleNamespace(test_images=test, private_images=private,
                         image_shape=(test if test is not None else private).shape[1:])
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: t, barrier=lambda name=None: None)
    trainer = SimpleNamespace(datamodule=dm, global_rank=0, world_size=1, strategy=strategy,
                              default_root_dir=str(tmp_path / "out"))
    module = SimpleNamespace(device="cpu", run=SimpleNamespace(output_dir=tmp_path / "out",
                                                               private_dir=private_dir or tmp_path / "private"))
    return trainer, module


def test_seeded_subset_is_uniform_seeded_and_never_a_prefix():
    labels = np.repeat([0, 1], 500)  # a class-by-class folder
    index = seeded_subset(1000, 200, seed=0)
    assert len(index) == 200 and len(set(index.tolist())) == 200 and np.all(np.diff(index) > 0)
    assert 70 <= (labels[index] == 1).sum() <= 130  # both classes, about half each (a prefix: 0 of class 1)
    assert np.array_equal(index, seeded_subset(1000, 200, seed=0))
    assert not np.array_equal(index, seeded_subset(1000, 200, seed=1))
    assert np.array_equal(seeded_subset(10, None, seed=0), np.arange(10))
    assert np.array_equal(seeded_subset(10, 50, seed=0), np.arange(10))


def test_capped_reference_of_a_class_ordered_split_covers_both_classes(tmp_path):
    images = _class_ordered()
    trainer, module = _fakes(tmp_path, test=images)
    mu, cov, count = FIDReference(max_images=40).statistics(trainer, module, PixelEmbedding(), key="fid", batch_size=16)
    expected = feature_statistics(images[seeded_subset(200, 40, seed=0)].reshape(40, -1) / 255.0)
    assert count == 40 and 0.25 < mu.mean() < 0.75  # a 40-image prefix would be all black (mean 0)
    np.testing.assert_allclose(mu, expected[0], atol=1e-12)
    np.testing.assert_allclose(cov, expected[1], atol=1e-9)


def test_public_statistics_are_cached_in_the_output_root_and_reused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    trainer, module = _fakes(tmp_path, test=images)
    feature = _CountingPixels()
    first = FIDReference(cache=True).statistics(trainer, module, feature, key="fid", batch_size=8)
    (cached,) = (tmp_path / "out" / "fid_reference").glob("*.npz")
    calls = _CountingPixels.calls
    again = FIDReference(cache=True).statistics(trainer, module, feature, key="fid", batch_size=8)
    assert _CountingPixels.calls == calls  # read back, not recomputed
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    FIDReference(cache=True, max_images=10).statistics(trainer, module, feature, key="fid", batch_size=8)
    assert len(list(cached.parent.glob("*.npz"))) == 2  # another subset is another entry
    assert not list(cached.parent.glob(".*.tmp"))  # written temp-then-rename


def test_private_statistics_are_cached_only_on_the_private_side(tmp_path):
    private = np.random.default_rng(1).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    trainer, module = _fakes(tmp_path, private=private)
    with pytest.warns(UserWarning, match="NOT covered by the DP guarantee"):
        FIDReference(split="private", cache=True, cache_dir=str(tmp_path / "out" / "x")).statistics(
            trainer, module, PixelEmbedding(), key="fid", batch_size=8)
    assert len(list((tmp_path / "private" / "fid_reference").glob("*.npz"))) == 1
    assert not (tmp_path / "out").exists()  # nothing in the output root, cache_dir ignored
    trainer, module = _fakes(tmp_path, private=private, private_dir=tmp_path / "out" / "private")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="inside the output root"):
        FIDReference(split="private", cache=True).statistics(trainer, module, PixelEmbedding(), key="fid", batch_size=8)


def test_a_test_split_carved_out_of_the_private_data_is_cached_on_the_private_side(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
    trainer, module = _fakes(tmp_path, test=images)
    trainer.datamodule.test_split_from_private = True  # e.g. an image folder without test_dir
    FIDReference(cache=True).statistics(trainer, module, PixelEmbedding(), key="fid", batch_size=8)
    assert len(list((tmp_path / "private" / "fid_reference").glob("*.npz"))) == 1
    assert not (tmp_path / "out").exists()


def _write_folder(root: Path, images: np.ndarray) -> Path:
    for i, image in enumerate(images):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.squeeze(-1)).save(root / f"c{i % 2}" / f"{i:03d}.png")
    return root


def test_fid_against_a_reference_folder_matches_an_independent_distance(tmp_path):
    reference = np.random.default_rng(2).integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    folder = _write_folder(tmp_path / "reference", reference)
    fid = FIDCallback(feature=PixelEmbedding(), name="pixel", reference_dir=str(folder), cache_reference=True)
    model = tiny_model(noise_multiplier=1.0, num_samples_per_class=6)
    tiny_trainer(tmp_path / "run", callbacks=[fid]).fit(model, datamodule=tiny_datamodule(100))
    on_disk = np.stack([np.asarray(Image.open(p))[..., None] for p in sorted(folder.rglob("*.png"))])
    assert fid.last_value == pytest.approx(pixel_frechet_distance(on_disk, model.population.images), rel=1e-6)
    assert len(list((tmp_path / "run" / "fid_reference").glob("*.npz"))) == 1


def test_bad_reference_folders_are_named(tmp_path):
    trainer, module = _fakes(tmp_path, test=np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match="reference_dir"):
        FIDReference(folder=str(tmp_path / "missing")).statistics(trainer, module, PixelEmbedding(), key="k", batch_size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        FIDReference(folder=str(tmp_path / "empty")).statistics(trainer, module, PixelEmbedding(), key="k", batch_size=4)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="b.png"):
        FIDReference(folder=str(mixed)).statistics(trainer, module, PixelEmbedding(), key="k", batch_size=4)
    with pytest.raises(ValueError, match="not both"):
        FIDCallback(feature=PixelEmbedding(), real_split="private", reference_dir=str(mixed))
    with pytest.raises(ValueError, match="max_real"):
        FIDCallback(feature=PixelEmbedding(), max_real=1)
