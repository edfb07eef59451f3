"""k-NN precision/recall and density/coverage: hand-computed cases, a brute-force reference, the callback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks import PrecisionRecall
from pe_lightning.metrics import count_in_balls, kth_neighbor_distances, precision_recall_density_coverage
from pe_lightning.private_metrics import private_report_path
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

BACKENDS = ["faiss", "torch"]


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_dimensional_case_by_hand(backend):
    # real 0, 1, 3 with k = 1: radii 1, 1, 2.  fake 2, 10, 0.5: fake radii 1.5, 8, 1.5.
    real, fake = _t([[0.0], [1.0], [3.0]]), _t([[2.0], [10.0], [0.5]])
    torch.testing.assert_close(kth_neighbor_distances(real, k=1, backend=backend), torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))
    out = precision_recall_density_coverage(real, fake, k=1, backend=backend)
    # precision: 2 is in B(1, 1) (on its boundary: balls are closed), 0.5 in B(0, 1), 10 in none -> 2/3.
    # density: 2 lies in B(1, 1) and B(3, 2); 0.5 in B(0, 1) and B(1, 1); 10 in none -> (2 + 0 + 2) / (1 * 3).
    # recall: 0 and 1 lie in B(0.5, 1.5), 3 in B(2, 1.5) -> 1.  coverage: nearest fakes at 0.5, 0.5, 1 -> 1.
    assert out == pytest.approx({"precision": 2 / 3, "recall": 1.0, "density": 4 / 3, "coverage": 1.0})


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_dimensional_case_by_hand(backend):
    # Real: the corners of the unit square and a far point (10, 0); k = 2.
    # Corner radii: 2nd nearest other corner at distance 1 -> 1; (10, 0): 2nd nearest is (1, 1) -> sqrt(82).
    real = _t([[0, 0], [1, 0], [0, 1], [1, 1], [10, 0]])
    # Fake: the square's centre, a point 3 right of (10, 0), a far-away point.
    fake = _t([[0.5, 0.5], [13, 0], [100, 100]])
    radii = kth_neighbor_distances(real, k=2, backend=backend)
    torch.testing.assert_close(radii, torch.tensor([1, 1, 1, 1, 82 ** 0.5], dtype=torch.float64))
    out = precision_recall_density_coverage(real, fake, k=2, backend=backend)
    # centre: inside the 4 corner balls (distance 0.707 <= 1), not the far one (sqrt(90.5) > sqrt(82)).
    # (13, 0): only B((10, 0), 9.06) (distance 3).  (100, 100): none.
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["density"] == pytest.approx((4 + 1 + 0) / (2 * 3))
    # Fake radii (k = 2): centre -> 2nd nearest other fake (100, 100) at 140.7; (13, 0) -> 140.5 (to (100, 100));
    # (100, 100) -> 140.7.  Every real point is within 140 of the centre -> recall 1.
    assert out["recall"] == pytest.approx(1.0)
    # Coverage: each corner's nearest fake is the centre (0.707 <= 1); (10, 0)'s is (13, 0) (3 <= 9.06) -> 1.
    assert out["coverage"] == pytest.approx(1.0)


def test_far_apart_sets_score_zero_and_identical_sets_score_one():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 5, generator=g)
    far = precision_recall_density_coverage(real, real + 100.0, k=3, backend="torch")
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    same = precision_recall_density_coverage(real, real.clone(), k=3, backend="torch")
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0


def _reference(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The definitions written out with full distance matrices (fine at test sizes)."""
    real, fake = real.double(), fake.double()
    mode = "donot_use_mm_for_euclid_dist"
    r = torch.cdist(real, real, compute_mode=mode).kthvalue(k + 1, dim=1).values
    s = torch.cdist(fake, fake, compute_mode=mode).kthvalue(k + 1, dim=1).values
    d = torch.cdist(real, fake, compute_mode=mode)  # (N, M)
    return {
        "precision": float((d <= r[:, None]).any(0).double().mean()),
        "recall": float((d <= s[None, :]).any(1).double().mean()),
        "density": float((d <= r[:, None]).sum(0).double().mean() / k),
        "coverage": float((d.min(1).values <= r).double().mean()),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_the_full_matrix_definitions_on_random_features(backend):
    g = torch.Generator().manual_seed(3)
    real = torch.randn(150, 6, generator=g)
    fake = torch.randn(110, 6, generator=g) * 0.8 + 0.3
    expected = _reference(real, fake, k=4)
    got = precision_recall_density_coverage(real, fake, k=4, backend=backend, max_chunk_bytes=8 * 150 * 5)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1 and 0 < got["coverage"] < 1


def test_ball_counts_in_small_blocks_equal_one_block():
    g = torch.Generator().manual_seed(4)
    points, centres = torch.randn(70, 3, generator=g), torch.randn(40, 3, generator=g)
    radii = torch.rand(40, generator=g).double() * 1.5
    one = count_in_balls(points, centres, radii)
    blocked = count_in_balls(points, centres, radii, max_chunk_bytes=1)  # one row per block
    assert torch.equal(one, blocked)
    expected = (torch.cdist(points.double(), centres.double()) <= radii[None, :]).sum(1)
    assert torch.equal(one, expected)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kth_neighbor_distances(_t([[0.0], [1.0]]), k=2), "more than k=2"),
        (lambda: kth_neighbor_distances(_t([[0.0], [1.0]]), k=0), "k must be an int >= 1"),
        (lambda: precision_recall_density_coverage(_t([[0.0]] * 6), _t([[0.0, 1.0]] * 6), k=1), "must share D"),
        (lambda: precision_recall_density_coverage(_t([[float("nan")]] * 6), _t([[0.0]] * 6), k=1), "NaN"),
        (lambda: count_in_balls(_t([[0.0]]), _t([[0.0]]), torch.tensor([-1.0])), "radii"),
    ],
)
def test_bad_inputs_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PrecisionRecall(feature="pixels"), "must be an Embedding"),
        (lambda: PrecisionRecall(feature=PixelEmbedding(), k=0), "k must be an int >= 1"),
        (lambda: PrecisionRecall(feature=PixelEmbedding(), every_n_iterations=0), "every_n_iterations"),
        (lambda: PrecisionRecall(feature=PixelEmbedding(), real_split="train"), "real_split"),
        (lambda: PrecisionRecall(feature=PixelEmbedding(), k=5, max_real=5), "max_real"),
        (lambda: PrecisionRecall(feature=PixelEmbedding(), search_backend="annoy"), "search backend"),
    ],
)
def test_callback_arguments_are_checked(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_callback_logs_the_four_metrics_against_the_held_out_split(tmp_path):
    dm = tiny_datamodule(100)
    pr = PrecisionRecall(feature=PixelEmbedding(size=14), k=3, max_real=400, search_backend="torch")
    model = tiny_model(noise_multiplier=1.0, num_samples_per_class=6)
    trainer = tiny_trainer(tmp_path, callbacks=[pr])
    trainer.fit(model, datamodule=dm)
    keys = ["pr/precision", "pr/recall", "pr/density", "pr/coverage"]
    for key in keys:
        assert key in trainer.callback_metrics
    # The last iteration's values are the metric of the final population against 400 evenly spaced test images.
    emb = PixelEmbedding(size=14)
    real = dm.test_images[np.linspace(0, len(dm.test_images) - 1, 400).round().astype(int)]
    expected = precision_recall_density_coverage(emb.embed(real), emb.embed(model.population.images), k=3)
    assert pr.last_values == pytest.approx(expected)
    assert {k: trainer.callback_metrics[k].item() for k in keys} == pytest.approx(
        {f"pr/{k}": v for k, v in expected.items()}, rel=1e-6)


def test_callback_against_private_data_says_it_is_not_private(tmp_path):
    pr = PrecisionRecall(feature=PixelEmbedding(size=14), real_split="private", every_n_iterations=5)
    assert pr.keys["recall"] == "pr/recall_private_not_dp"
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[pr])
    model = tiny_model(noise_multiplier=1.0, iterations=1, variation_degrees=0.3)
    with pytest.warns(UserWarning, match="NOT covered by the DP guarantee"):
        trainer.fit(model, datamodule=tiny_datamodule(100))
    # Kept on the private side only (docs/privacy.md): not in the run's metrics, loggers or summary.
    assert not any(k.startswith("pr/") for k in trainer.callback_metrics)
    report = json.loads(private_report_path(model.resolved_private_dir, model.run_id).read_text())
    assert report["entries"][-1]["pr/coverage_private_not_dp"] == pytest.approx(pr.last_values["coverage"])
