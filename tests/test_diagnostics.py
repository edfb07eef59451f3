"""Vote diagnostics (pe_lightning.engine.diagnostics): values, and that they read only the DP release."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pe_lightning import DrawText, PixelEmbedding
from pe_lightning.engine import EngineSettings, PEEngine
from pe_lightning.engine import core as engine_core
from pe_lightning.engine.diagnostics import noise_only_survivors, vote_diagnostics
from pe_lightning.engine.scratch import ScratchSpace
from pe_lightning.engine.sharding import ProcessGroupCollective
from pe_lightning.noise import NoiseKey
from pe_testing import tiny_datamodule


def test_values_on_a_hand_made_release():
    noisy = torch.tensor([5.0, 0.5, 3.0, -1.0, 9.0, 1.5], dtype=torch.float64)
    labels = np.array([0, 0, 0, 1, 1, 1])
    d = vote_diagnostics(noisy_counts=noisy, labels=labels, threshold=1.0, noise_multiplier=1.0,
                         parents=np.array([0, 0, 2, 4, 4, 4]))
    np.testing.assert_array_equal(d.bins, [3, 3])
    np.testing.assert_array_equal(d.above_threshold, [2, 2])
    np.testing.assert_array_equal(d.unique_parents, [2, 1])
    np.testing.assert_allclose(d.top_share, [4 / 6, 8 / 8.5])
    q = 0.5 * math.erfc(1 / math.sqrt(2))
    np.testing.assert_allclose(d.noise_only, [3 * q, 3 * q])
    m = d.metrics()
    assert m["diag/bins_above_threshold"] == 4 and m["diag/bins_above_threshold_min_class"] == 2
    assert m["diag/unique_parents_min"] == 1 and m["diag/unique_parents_mean"] == 1.5
    assert m["diag/top_parent_share_max"] == pytest.approx(8 / 8.5)
    assert m["diag/noise_share_of_survivors"] == pytest.approx(6 * q / 4)
    # a class whose weights are all zero: top share 0, not NaN
    d = vote_diagnostics(noisy_counts=torch.zeros(4), labels=np.array([0, 0, 1, 1]), threshold=1.0,
                         noise_multiplier=1.0, parents=np.array([0, 1, 2, 3]))
    assert d.top_share.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="noisy_counts and labels"):
        vote_diagnostics(noisy_counts=torch.zeros(3), labels=np.zeros(4, int), threshold=0.0, noise_multiplier=1.0,
                         parents=np.zeros(1, int))


def test_noise_only_survivors_is_the_gaussian_tail_of_an_empty_histogram():
    rng = np.random.default_rng(0)
    sigma, c, bins, trials = 2.0, 2.5, 1000, 400
    counts = (rng.normal(0.0, sigma, size=(trials, bins)) > c * sigma).sum(1)
    expected = noise_only_survivors(num_bins=bins, threshold=c * sigma, noise_multiplier=sigma)
    assert expected == pytest.approx(bins * 0.5 * math.erfc(c / math.sqrt(2)))
    assert abs(counts.mean() - expected) < 4 * math.sqrt(expected / trials)
    assert noise_only_survivors(num_bins=bins, threshold=0.0, noise_multiplier=0.0) == 0.0
    with pytest.raises(ValueError, match="noise_multiplier"):
        noise_only_survivors(num_bins=1, threshold=1.0, noise_multiplier=-1.0)


def _one_iteration(tmp_path, private_images, private_labels, key, monkeypatch):
    """One engine iteration on these private images; returns its metrics and what the release put out."""
    released = []
    real = engine_core.release_and_select

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        released.append(out)
        return out

    monkeypatch.setattr(engine_core, "release_and_select", recording)
    settings = EngineSettings(iterations=1, variation_degrees=[0.5], lookahead_degree=2, seed=0, threshold=1.5,
                              selection="systematic")
    engine = PEEngine(settings=settings, api=DrawText(image_size=28), embedding=PixelEmbedding(size=14))
    engine.class_names = [str(c) for c in range(10)]
    engine.sizes_per_iteration = [[12] * 10, [8] * 10]
    engine.attach(collective=ProcessGroupCollective(), scratch=ScratchSpace(directory=tmp_path, limit_bytes=None), device="cpu")
    engine.api.setup(device="cpu", class_names=engine.class_names)
    engine.embedding.setup(device="cpu")
    engine.set_private(embeddings=engine.private_embeddings(private_images), labels=private_labels)
    engine.random_population()
    engine.begin_iteration()
    engine.vote(torch.arange(len(private_images)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = engine.evolve(noise_multiplier=1.0, key=key)
    return metrics, released[0], engine


def test_neighbouring_private_sets_with_the_same_noise_differ_only_through_the_released_counts(tmp_path, monkeypatch):
    dm = tiny_datamodule(100)
    dm.setup("fit")
    images, labels = dm.private_images, dm.private_labels
    key = NoiseKey.from_seed(7)
    removed = 3
    keep = np.arange(len(images)) != removed
    m_d, rel_d, eng = _one_iteration(tmp_path / "d", images, labels, key, monkeypatch)
    m_n, rel_n, _ = _one_iteration(tmp_path / "n", images[keep], labels[keep], key, monkeypatch)
    pop_labels = np.repeat(np.arange(10), 12)
    diag = {}
    for name, metrics, rel in (("d", m_d, rel_d), ("n", m_n, rel_n)):
        # what the engine logs is recomputed exactly from the release (noisy counts, parents) and public settings
        d = vote_diagnostics(noisy_counts=rel.noisy_counts, labels=pop_labels, threshold=1.5, noise_multiplier=1.0,
                             parents=rel.parents, num_classes=10)
        assert {k: v for k, v in metrics.items() if k.startswith("diag/")} == d.metrics()
        diag[name] = d
    # same noise: the released counts differ only on the bins the removed sample voted for (its class)
    changed = torch.nonzero(rel_d.noisy_counts != rel_n.noisy_counts).flatten().numpy()
    assert len(changed) == 1 and set(pop_labels[changed]) == {labels[removed]}
    other = np.arange(10) != labels[removed]
    for field in ("bins", "above_threshold", "unique_parents", "top_share", "noise_only"):
        np.testing.assert_array_equal(getattr(diag["d"], field)[other], getattr(diag["n"], field)[other])
    # and given D's released counts, D' yields D's diagnostics: nothing but the release enters
    swapped = vote_diagnostics(noisy_counts=rel_d.noisy_counts, labels=pop_labels, threshold=1.5, noise_multiplier=1.0,
                               parents=rel_d.parents, num_classes=10)
    assert swapped.metrics() == diag["d"].metrics()
    assert eng.iteration == 1
