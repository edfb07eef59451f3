"""HFDataModule on small Hugging Face data sets built here (save_to_disk and parquet folders; no network)."""

from __future__ import annotations

import numpy as np
import pytest

from pe_lightning.data import HFDataModule
from pe_testing import tiny_model, tiny_trainer

datasets = pytest.importorskip("datasets")


def _digits(n: int, *, seed: int, size: int = 28) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(n)]
    images = [np.full((size, size), 40 + 60 * c, dtype=np.uint8) + rng.integers(0, 30, (size, size), dtype=np.uint8) for c in labels]
    return images, labels


def _split(n: int, *, seed: int, image_column: str = "image", label_column: str = "label", class_label: bool = True):
    images, labels = _digits(n, seed=seed)
    features = datasets.Features({
        image_column: datasets.Image(),
        label_column: datasets.ClassLabel(names=["zero", "one", "two"]) if class_label else datasets.Value("int64"),
    })
    return datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DatasetDict (train 60, test 15) written with save_to_disk."""
    folder = tmp_path_factory.mktemp("hf") / "digits"
    datasets.DatasetDict({"train": _split(60, seed=0), "test": _split(15, seed=1)}).save_to_disk(str(folder))
    return folder


def test_save_to_disk_folder_with_class_labels(saved):
    dm = HFDataModule(path=str(saved), channels=1)
    dm.setup("fit")
    assert dm.private_images.shape == (60, 28, 28, 1) and dm.private_images.dtype == np.uint8
    assert dm.test_images.shape == (15, 28, 28, 1)
    assert dm.class_names == ["zero", "one", "two"]
    np.testing.assert_array_equal(np.bincount(dm.private_labels), [20, 20, 20])
    images, _ = _digits(60, seed=0)
    np.testing.assert_array_equal(dm.private_images[5, ..., 0], images[5])  # pixels unchanged, order kept


def test_parquet_folder_custom_columns_resize_rgb_and_held_out_split(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    _split(30, seed=2, image_column="img", label_column="digit", class_label=False).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    dm = HFDataModule(path=str(folder), image_column="img", label_column="digit", test_split=None, test_fraction=0.2,
                      image_size=16, channels=3)
    dm.setup("fit")
    assert dm.class_names == ["0", "1", "2"]
    assert dm.private_images.shape == (24, 16, 16, 3) and dm.test_images.shape == (6, 16, 16, 3)
    assert np.bincount(dm.test_labels).tolist() == [2, 2, 2]  # stratified, never voting


def test_one_parquet_file_subsets_and_no_labels(tmp_path):
    path = tmp_path / "one.parquet"
    _split(30, seed=3).to_parquet(str(path))
    dm = HFDataModule(path=str(path), test_split=None, label_column=None, num_private=10, channels=1)
    dm.setup("fit")
    assert dm.class_names == ["all"] and len(dm.private_images) == 10 and set(dm.private_labels.tolist()) == {0}


def test_missing_split_and_column_are_named(saved):
    with pytest.raises(ValueError, match=r"no split 'validation'; its splits are \['test', 'train'\]"):
        HFDataModule(path=str(saved), test_split="validation").setup("fit")
    with pytest.raises(ValueError, match=r"no column 'img'; its columns are \['image', 'label'\]"):
        HFDataModule(path=str(saved), image_column="img").setup("fit")


def test_offline_hub_id_names_the_data_set_and_how_to_pre_download(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    dm = HFDataModule(path="no-such-user/no-such-digits", name="default")
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "'no-such-user/no-such-digits'" in message and "offline" in message
    assert "save_to_disk('DIR')" in message and "hf download no-such-user/no-such-digits --repo-type dataset" in message


def test_private_evolution_runs_on_a_hub_style_data_set(saved, tmp_path):
    model = tiny_model(num_samples_per_class=4, noise_multiplier=1.0)
    tiny_trainer(tmp_path).fit(model, datamodule=HFDataModule(path=str(saved), channels=1))
    assert model.iteration == 2 and model.population.images.shape == (12, 28, 28, 1)
    assert model.class_names == ["zero", "one", "two"]
