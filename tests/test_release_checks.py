"""benchmarks/release_checks.py: the contrast stretch, and each subcommand end to end at tiny size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pe_lightning.apis.drawtext.parameters import CONTINUOUS

_spec = importlib.util.spec_from_file_location(
    "release_checks", Path(__file__).resolve().parents[1] / "benchmarks" / "release_checks.py")
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


def _population_file(path: Path, *, n_per_class: int = 3, intensity: float = 0.5) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class)
    images = (rng.random((len(labels), 28, 28, 1)) * 120).astype(np.uint8)
    cond = {f"cond__{c}": rng.random(len(labels)).astype(np.float32) for c in CONTINUOUS}
    cond["cond__intensity"] = np.full(len(labels), intensity, np.float32)
    np.savez(path, images=images, labels=labels, **cond)
    return path


def test_stretch_puts_each_images_peak_at_255_and_keeps_black():
    images = np.zeros((3, 4, 4, 1), np.uint8)
    images[0, 1, 1] = 102
    images[0, 2, 2] = 34
    images[1, 0, 0] = 255
    out = checks.stretch_contrast(images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert out[0, 1, 1, 0] == 255 and out[0, 2, 2, 0] == 85 and out[0, 0, 0, 0] == 0  # 34 * 255 / 102
    np.testing.assert_array_equal(out[1], images[1])  # already full scale
    np.testing.assert_array_equal(out[2], images[2])  # all black stays black


def test_params_reports_the_released_conditions_next_to_the_prior(tmp_path):
    path = _population_file(tmp_path / "pop.npz", intensity=0.9)
    (line,) = checks.main(["params", str(path)])
    assert "intensity 0.90 ± 0.00 (prior 0.62 ± 0.22)" in line  # the public prior: uniform on (0.25, 1.0)
    assert all(c in line for c in CONTINUOUS)


def test_a_file_that_is_not_a_population_is_named(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="bad.npz.*images"):
        checks.main(["params", str(bad)])


def test_stretch_and_real_train_the_protocols_classifier(tmp_path):
    path = _population_file(tmp_path / "pop.npz")
    tiny = ["--epochs", "1", "--clf-seeds", "0", "--test-size", "100"]
    (stretch,) = checks.main(["stretch", "--variant", "small", *tiny, str(path)])
    assert "[small]: as released" in stretch and "contrast-stretched" in stretch
    (real,) = checks.main(["real", "--variant", "mnist", "--per-class", "2", *tiny])
    assert real.startswith("mnist: real private images, 2 per class (20):")
