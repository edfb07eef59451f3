"""The results script in reduced mode: every setting runs and the CSV, table, plot and grid are written."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pe_lightning.metrics.frechet import pixel_frechet_distance
from pe_lightning.planner import plan

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
    quick_t = plan(epsilon=1.0, delta=1e-5, num_classes=10, image_size=32, approx_private_size=200,
                   final_samples_per_class=10).iterations
    assert [int(c["iteration"]) for c in curves] == list(range(quick_t + 1))  # the planned T, iteration 0 included
    for name in ("transfer_summary.csv", "transfer_summary.md", "fd_per_iteration.png", "pad32/summary.csv"):
        assert (tmp_path / name).is_file(), name


def _row(setting, eps, pe_seed, clf_seed, acc):
    return dict(setting=setting, epsilon=eps, pe_seed=pe_seed, clf_seed=clf_seed, test_acc=acc)


def test_paired_differences_pair_by_pe_and_classifier_seed():
    random = _results.RANDOM_AT_RELEASED_SIZE
    rows = [_row(random, 0.0, p, c, 0.5 + 0.01 * p) for p in range(3) for c in range(2)]
    rows += [_row("PE", 1.0, p, c, 0.6 + 0.01 * p + 0.02 * c) for p in range(3) for c in range(2)]
    (d,) = _results.paired_differences(rows, rows, against=random)
    assert d["epsilon"] == 1.0 and d["pe_seeds"] == 3 and d["wins"] == 3
    assert d["diff_mean"] == pytest.approx(11.0) and d["diff_std"] == pytest.approx(0.0, abs=1e-9)
    # against another run's PE at the same epsilon (strings, as read back from runs.csv)
    other = [{k: str(v) for k, v in _row("PE", 1.0, p, c, 0.62 - 0.03 * p).items()} for p in range(3) for c in range(2)]
    (d,) = _results.paired_differences(rows, other)
    assert d["per_seed"] == "-1.0 +3.0 +7.0" and d["wins"] == 2
    assert _results.paired_differences(rows, [_row("PE", 10.0, 0, 0, 0.5)]) == []  # nothing to pair with


@pytest.mark.slow
def test_results_without_baselines_runs_pe_only_and_pairs_with_an_earlier_run(tmp_path):
    main(["--quick", "--noise", "seeded", "--out", str(tmp_path / "a")])
    main(["--quick", "--noise", "seeded", "--no-baselines", "--pair-with", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    rows = list(csv.DictReader(open(tmp_path / "b" / "runs.csv")))
    assert [r["setting"] for r in rows] == ["PE"]
    assert float(rows[0]["iterations"]) >= 1 and float(rows[0]["diag/unique_parents_min"]) >= 1
    text = (tmp_path / "b" / "paired_with.md").read_text()
    assert "+0.0 ± 0.0" in text and "random API alone, released size" in text  # the same seeded run: no difference
