"""Population storage: npz round trip, PNG tree, atomic writes, clear errors."""

import numpy as np
import pytest
from PIL import Image

from pe_lightning.population import Population


def _pop(n=6):
    rng = np.random.default_rng(0)
    return Population(
        images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
        labels=np.arange(n) % 3,
        conditions={"rotation": rng.normal(size=n).astype(np.float32), "font": np.arange(n)},
        parents=np.arange(n)[::-1].copy(),
    )


def test_npz_round_trip(tmp_path):
    pop = _pop()
    path = pop.save_npz(tmp_path / "population.npz")
    back = Population.load_npz(path)
    np.testing.assert_array_equal(back.images, pop.images)
    np.testing.assert_array_equal(back.labels, pop.labels)
    np.testing.assert_array_equal(back.parents, pop.parents)
    assert set(back.conditions) == {"rotation", "font"}
    with np.load(path) as data:  # the documented public format
        assert data["images"].dtype == np.uint8 and data["images"].shape == (6, 8, 8, 1)
        assert data["labels"].dtype == np.int64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_state_dict_round_trip():
    pop = _pop()
    back = Population.from_state_dict(pop.state_dict())
    np.testing.assert_array_equal(back.images, pop.images)
    np.testing.assert_array_equal(back.conditions["rotation"], pop.conditions["rotation"])


def test_png_tree(tmp_path):
    pop = _pop()
    pop.save(tmp_path / "out", class_names=["a", "b", "c"])
    files = sorted(p.relative_to(tmp_path / "out" / "images").as_posix() for p in (tmp_path / "out" / "images").rglob("*.png"))
    assert files == ["a/000000.png", "a/000003.png", "b/000001.png", "b/000004.png", "c/000002.png", "c/000005.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/images/b/000004.png")), pop.images[4, ..., 0])


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = _pop().save_npz(tmp_path / "population.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _pop(4).save_npz(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["population.npz"]


def test_take_sets_parents():
    pop = _pop()
    sub = pop.take(np.array([5, 5, 0]))
    assert sub.parents.tolist() == [5, 5, 0]
    np.testing.assert_array_equal(sub.images[0], pop.images[5])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="images must be uint8"):
        Population(images=np.zeros((2, 4, 4, 1), np.float32), labels=np.zeros(2))
    with pytest.raises(ValueError, match="labels must have shape"):
        Population(images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.zeros(3))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        Population.load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        Population.load_npz(bad)
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((1, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        Population.load_npz(tmp_path / "nolabels.npz")
