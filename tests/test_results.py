"""The results script in reduced mode: every setting runs and the CSV, table, plot and grid are written."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pe_lightning.planner import ITERATIONS

from pe_lightning.metrics.frechet import pixel_frechet_distance

_spec = importlib.util.spec_from_file_location("results", Path(__file__).resolve().parents[1] / "benchmarks" / "results.py")
_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_results)
main = _results.main


def test_pixel_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    assert abs(pixel_frechet_distance(a, a)) < 1e-8
    brighter = np.clip(a.astype(int) + 40, 0, 255).astype(np.uint8)
    assert pixel_frechet_distance(a, brighter) > 0.1


@pytest.mark.slow
def test_results_quick_mode_writes_everything(tmp_path):
    summary = main(["--quick", "--out", str(tmp_path)])
    settings = [s["setting"] for s in summary]
    # The planner's RANDOM population is larger than the released one: RANDOM is also scored at the released size.
    assert settings == ["real private training set", "random API alone", "random API alone, released size", "PE"]
    for s in summary:
        assert 0.0 <= s["acc_mean"] <= 100.0 and np.isfinite(s["fd_mean"])
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(rows) == 4
    assert [int(r["n"]) for r in rows] == [200, 500, 100, 100]  # real, RANDOM (5 x 10 per class), RANDOM released size, PE
    assert {"setting", "epsilon", "pe_seed", "clf_seed", "test_acc", "fd"} <= set(rows[0])
    for name in ("summary.csv", "summary.md", "results.png", "grid_eps1.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_transfer_suite_quick_mode_writes_the_table_and_fd_curves(tmp_path):
    table = main(["--suite", "transfer", "--quick", "--variants", "pad32", "--out", str(tmp_path)])
    assert [r["set"] for r in table] == ["pad32"] * 4
    curves = list(csv.DictReader(open(tmp_path / "fd_curves.csv")))
    assert [int(c["iteration"]) for c in curves] == list(range(ITERATIONS + 1))  # the planned T, iteration 0 included
    for name in ("transfer_summary.csv", "transfer_summary.md", "fd_per_iteration.png", "pad32/summary.csv"):
        assert (tmp_path / name).is_file(), name
