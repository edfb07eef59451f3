"""The tone release (pe_lightning.engine.tone): sensitivity 1 jointly with the votes, the matching, the engine path."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch

from pe_lightning import DrawText, PixelEmbedding
from pe_lightning.callbacks import PrivacyAccountant
from pe_lightning.engine import EngineSettings, PEEngine
from pe_lightning.engine import core as engine_core
from pe_lightning.engine.release import release_and_select
from pe_lightning.engine.scratch import ScratchSpace
from pe_lightning.engine.sharding import ProcessGroupCollective
from pe_lightning.engine.tone import joint_histogram, match_tone, peak_bins, split_release, tone_threshold, tone_weights
from pe_lightning.noise import NoiseKey, standard_normal
from pe_lightning.voting import vote_histogram
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


def _peaks(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).max(axis=1)


def _images(peaks, *, size: int = 6, background: int = 0) -> np.ndarray:
    """One image per peak: a background and a diagonal ramp that ends at the peak."""
    out = np.full((len(peaks), size, size, 1), background, dtype=np.uint8)
    for i, p in enumerate(peaks):
        for j in range(size):
            out[i, j, j, 0] = max(background, round(p * (j + 1) / size))
    return out


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("share", [0.02, 0.5])
def test_the_joint_vector_has_l2_sensitivity_one_under_add_remove_one_sample(k, share):
    rng = np.random.default_rng(k)
    m, n, bins = 40, 12, 32
    assignments = torch.stack([torch.from_numpy(rng.choice(n, size=k, replace=False)) for _ in range(m)])
    peaks = rng.integers(0, bins, size=m)
    full = joint_histogram(vote_histogram(assignments, num_synthetic=n), peaks, bins=bins, share=share)
    for removed in range(m):
        keep = np.arange(m) != removed
        neighbour = joint_histogram(vote_histogram(assignments[torch.from_numpy(keep)], num_synthetic=n), peaks[keep],
                                    bins=bins, share=share)
        assert float(torch.linalg.vector_norm(full - neighbour)) == pytest.approx(1.0, abs=1e-12)


def test_split_release_gives_back_counts_and_peak_bins_follow_the_brightest_value():
    images = _images([0, 15, 16, 255, 128])
    images[0, 0, 0, 0] = 7  # its peak is 7: bin 0 of 32 (width 8)
    assert peak_bins(images, bins=32).tolist() == [0, 1, 2, 31, 16]
    assert peak_bins(images, bins=2).tolist() == [0, 0, 0, 1, 1]
    votes = torch.tensor([1.0, 0.0, 3.0])
    joint = joint_histogram(votes, np.array([0, 1, 1]), bins=2, share=0.25)
    back_votes, back_counts = split_release(joint, bins=2, share=0.25)
    torch.testing.assert_close(back_votes, votes.double())
    torch.testing.assert_close(back_counts, torch.tensor([1.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="tone_share"):
        joint_histogram(votes, np.array([0]), bins=2, share=0.0)
    with pytest.raises(ValueError, match="tone_bins"):
        peak_bins(images, bins=3)
    with pytest.raises(ValueError, match="uint8"):
        peak_bins(images.astype(np.float32), bins=2)


def test_tone_weights_keep_bins_above_one_expected_noise_only_bin():
    assert tone_threshold(bins=32, noise_std=2.0) == pytest.approx(2.0 * NormalDist().inv_cdf(1 - 1 / 32))
    noisy = torch.zeros(32, dtype=torch.float64)
    noisy[5], noisy[30] = 10.0, 3.0
    weights = tone_weights(noisy, noise_std=2.0)  # threshold 3.72
    assert np.flatnonzero(weights).tolist() == [5] and weights[5] == pytest.approx(10.0 - 3.72, abs=0.01)


def test_match_tone_moves_each_peak_to_its_quantile_keeps_the_background_and_the_order():
    peaks = [40, 200, 90, 120, 60, 150]
    images = _images(peaks, background=10)
    weights = np.zeros(32)
    weights[[4, 31]] = 1.0  # half of the released peaks in [32, 40), half in [248, 256)
    out = match_tone(images, weights)
    got = _peaks(out)
    dim = np.argsort(peaks)[:3]
    assert set(np.flatnonzero(got < 40)) == set(dim) and (got[dim] >= 32).all()
    assert (np.delete(got, dim) >= 248).all()
    assert np.argsort(got, kind="stable").tolist() == np.argsort(peaks, kind="stable").tolist()
    assert (out.reshape(6, -1).min(axis=1) == 10).all()  # rescaled about the darkest value
    np.testing.assert_array_equal(images, _images(peaks, background=10))  # the input is not modified
    into = np.zeros_like(images)
    assert match_tone(images, weights, out=into) is into and np.array_equal(into, out)
    with pytest.raises(ValueError, match="out must be uint8"):
        match_tone(images, weights, out=np.zeros(images.shape, dtype=np.float32))


def test_match_tone_leaves_images_alone_without_released_bins_or_contrast():
    images = _images([40, 200])
    np.testing.assert_array_equal(match_tone(images, np.zeros(32)), images)
    flat = np.full((2, 4, 4, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(match_tone(flat, np.eye(32)[31]), flat)
    with pytest.raises(ValueError, match="finite"):
        match_tone(images, np.full(32, -1.0))


def test_settings_refuse_a_bad_tone_release():
    with pytest.raises(ValueError, match="tone_share"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), tone_share=1.0)
    with pytest.raises(ValueError, match="tone_bins"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), tone_share=0.1, tone_bins=24)
    with pytest.raises(ValueError, match="privacy_unit 'sample'"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), tone_share=0.1, privacy_unit="client")
    with pytest.raises(ValueError, match="sample level"):
        release_and_select(torch.tensor([[0]]), labels=torch.tensor([0]), num_parents_per_class=[1], selection="rank",
                           generator=torch.Generator(), class_names=["a"], noise_multiplier=1.0, threshold=0.0,
                           key=NoiseKey.from_seed(0), iteration=1, clients=torch.tensor([0]), tone_peaks=np.array([0]),
                           tone_share=0.1)


def _last_release(tmp_path, private_images, private_labels, *, share, monkeypatch, sigma=0.1, limit_bytes=None):
    """One engine iteration (the last) with the tone release; returns the engine, its metrics and the release."""
    released = []
    real = engine_core.release_and_select

    def recording(*args, **kwargs):
        released.append(real(*args, **kwargs))
        return released[-1]

    monkeypatch.setattr(engine_core, "release_and_select", recording)
    settings = EngineSettings(iterations=1, variation_degrees=[0.5], lookahead_degree=2, seed=0, selection="systematic",
                              tone_share=share, tone_bins=16)
    engine = PEEngine(settings=settings, api=DrawText(image_size=28), embedding=PixelEmbedding(size=14))
    engine.prepare(class_names=[str(c) for c in range(10)], sizes_per_iteration=[[12] * 10, [8] * 10],
                   private_images=private_images, private_labels=private_labels,
                   scratch=ScratchSpace(directory=tmp_path, limit_bytes=limit_bytes), device="cpu",
                   collective=ProcessGroupCollective(), info=lambda line: None)
    engine.begin_iteration()
    engine.vote(torch.arange(len(private_images)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = engine.evolve(noise_multiplier=sigma, key=NoiseKey.from_seed(7))
    return engine, metrics, released[-1]


@pytest.mark.parametrize("limit_bytes", [None, 0])  # in memory; spilled to memory-mapped scratch files
def test_the_engine_matches_the_final_population_to_the_private_peak_levels(tmp_path, monkeypatch, limit_bytes):
    dm = tiny_datamodule(100)
    dm.setup("fit")
    dim = (dm.private_images.astype(np.float64) * 0.4).round().astype(np.uint8)  # private peaks near 100 of 255
    engine, metrics, release = _last_release(tmp_path, dim, dm.private_labels, share=0.5, monkeypatch=monkeypatch,
                                             limit_bytes=limit_bytes)
    assert isinstance(engine.population.images, np.memmap) == (limit_bytes == 0)
    private_bins = set(peak_bins(dim, bins=16).tolist())
    assert set(peak_bins(engine.population.images, bins=16).tolist()) <= private_bins  # DrawText's own peaks are brighter
    assert engine.noise_record[-1]["tone_share"] == 0.5 and metrics["pe/tone_bins_released"] >= 1
    assert release.vote_noise == pytest.approx(0.1 / math.sqrt(0.5))
    assert metrics["diag/noise_only_survivors_per_class"] > 0  # computed with the votes' noise, sigma / sqrt(1 - share)


def test_neighbouring_private_sets_with_the_same_noise_release_peak_counts_one_apart(tmp_path, monkeypatch):
    dm = tiny_datamodule(100)
    dm.setup("fit")
    images, labels = dm.private_images, dm.private_labels
    keep = np.arange(len(images)) != 3
    _, _, rel_d = _last_release(tmp_path / "d", images, labels, share=0.1, monkeypatch=monkeypatch, sigma=1.0)
    _, _, rel_n = _last_release(tmp_path / "n", images[keep], labels[keep], share=0.1, monkeypatch=monkeypatch, sigma=1.0)
    diff = (rel_d.tone_counts - rel_n.tone_counts).numpy()
    assert np.flatnonzero(diff).tolist() == [peak_bins(images[3:4], bins=16)[0]]
    assert diff.sum() == pytest.approx(1.0)  # in counts: the removed image's peak bin, by one


def test_the_module_runs_the_tone_release_and_the_accountant_is_unchanged(tmp_path):
    dm = tiny_datamodule(100)
    model = tiny_model(tone_share=0.02)
    accountant = PrivacyAccountant(epsilon=1.0, delta=1e-5)
    tiny_trainer(tmp_path, callbacks=[accountant]).fit(model, datamodule=dm)
    assert [r.get("tone_share") for r in model.noise_record] == [None, 0.02]  # the last release carries it
    assert accountant.ledger.epsilon <= 1.0 and accountant.ledger.iterations == 2
    assert len(model.population) == 80


def test_the_votes_draw_the_noise_a_release_without_the_tone_release_draws():
    """Runs with and without the tone release are paired noise for noise: only the votes' scale changes."""
    assignments, labels = torch.tensor([[0], [0], [1], [3], [3]]), torch.tensor([0, 0, 1, 1])
    common = dict(labels=labels, num_parents_per_class=[2, 2], selection="rank", class_names=["a", "b"],
                  noise_multiplier=0.7, threshold=0.0, key=NoiseKey.from_seed(3), iteration=2)
    plain = release_and_select(assignments, generator=torch.Generator(), **common)
    toned = release_and_select(assignments, generator=torch.Generator(), tone_peaks=np.array([0, 1, 1, 3, 3]),
                               tone_bins=4, tone_share=0.1, **common)
    votes = vote_histogram(assignments, num_synthetic=4)
    torch.testing.assert_close((toned.noisy_counts - votes) * math.sqrt(0.9), plain.noisy_counts - votes)
    np.testing.assert_array_equal(toned.tone_weights, tone_weights(toned.tone_counts, noise_std=0.7 / math.sqrt(0.1)))
    assert plain.tone_counts is None and plain.tone_weights is None
    # the peak counts take an independent stream of the same key (not the votes' numbers at the same shape)
    tone_noise = (toned.tone_counts - torch.tensor([1.0, 2.0, 0.0, 2.0], dtype=torch.float64)) * math.sqrt(0.1)
    assert not torch.allclose(tone_noise, plain.noisy_counts - votes)
    torch.testing.assert_close(tone_noise / 0.7, torch.from_numpy(standard_normal(NoiseKey.from_seed(3), iteration=2,
                                                                                  shape=(4,), stream="tone")))


def test_the_planned_module_takes_the_tone_release_as_an_opt_in():
    from pe_lightning.planner import PlannedPrivateEvolution

    kwargs = dict(api=DrawText(), epsilon=1.0, approx_private_size=4000, num_classes=10)
    assert PlannedPrivateEvolution(**kwargs).engine.settings.tone_share == 0.0  # not in the plan (docs/results.md)
    opted = PlannedPrivateEvolution(**kwargs, tone_share=0.02, tone_bins=16)
    assert (opted.engine.settings.tone_share, opted.engine.settings.tone_bins) == (0.02, 16)
