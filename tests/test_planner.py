"""The planner (pe_lightning.planner): documented values, monotone in epsilon, usable from a config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pe_lightning.planner import (
    EMBEDDING, MAX_ITERATIONS, MIN_SURVIVORS, RANDOM_FACTOR, SELECTION, Plan, PlannedPrivateEvolution,
    expected_true_survivors, plan,
)
from pe_lightning.privacy import noise_multiplier


def _plan(epsilon: float, n: int = 4000, **kw) -> Plan:
    return plan(epsilon=epsilon, delta=kw.pop("delta", 1e-5), num_classes=kw.pop("num_classes", 10), image_size=28,
                approx_private_size=n, **kw)


C = 3.090232  # Q^{-1}(1 / 1,000): one expected noise-only survivor among a class's 1,000 RANDOM bins


@pytest.mark.parametrize(
    "epsilon, delta, n, T, k, sigma, bins, survivors",
    [
        # eps = 1: T = 2 would keep S(2, 4) = 800 / (3.09 * 5.28) = 49 < 60 survivors: one vote, 4 votes per image
        (1.0, 1e-5, 4000, 1, 4, 3.730632, 200, 69.39),
        (0.5, 1e-5, 4000, 1, 4, 7.031827, 200, 36.82),    # no T keeps 60: the floor T = 1, the most votes
        (1.0, 1e-6, 4000, 1, 4, 4.224679, 200, 61.28),    # a smaller delta: more noise, same plan
        (2.0, 1e-5, 4000, 4, 4, 3.987625, 200, 64.92),
        (4.0, 1e-5, 4000, 6, 2, 2.648295, 200, 69.12),    # two votes per image are enough at T = 6
        (10.0, 1e-5, 4000, 6, 1, 1.224472, 200, 105.71),  # T = MAX_ITERATIONS, single votes
        (1.0, 1e-5, 40000, 6, 1, 9.138144, 200, 141.65),  # ten times the data: evolution pays at eps = 1
    ],
)
def test_documented_values(epsilon, delta, n, T, k, sigma, bins, survivors):
    p = _plan(epsilon, n, delta=delta)
    assert (p.iterations, p.num_nearest_neighbors, p.bins_per_class) == (T, k, bins)
    assert p.noise_multiplier == pytest.approx(sigma, rel=1e-6)
    assert p.threshold_sigmas == pytest.approx(C, rel=1e-6) and p.threshold == pytest.approx(C * sigma, rel=1e-6)
    assert p.expected_true_survivors == pytest.approx(survivors, abs=0.01)
    assert p.expected_true_survivors == pytest.approx(n / 10 * math.sqrt(k) / (C * sigma), rel=1e-6)
    assert p.expected_noise_survivors == pytest.approx(1.0, rel=1e-6)
    assert p.num_samples_schedule == [RANDOM_FACTOR * 200] + [bins] * (T - 1) + [200]
    assert p.variation_degrees == {"start": 0.3, "end": 0.1}
    assert p.embedding == EMBEDDING and p.embedding["class_path"].endswith("HOGEmbedding")
    assert SELECTION == "systematic"


def test_no_noise_plans_the_most_iterations_and_the_final_size():
    p = _plan(math.inf)
    assert p.iterations == MAX_ITERATIONS and p.num_nearest_neighbors == 1 and p.threshold == 0.0
    assert p.bins_per_class == 200 and p.expected_noise_survivors == 0.0 and math.isinf(p.expected_true_survivors)


@pytest.mark.parametrize(
    "epsilon, n, sigma",
    [
        (1.0, 4000, 9.138144),
        (10.0, 4000, 1.224472),
        (1.0, 40000, 9.138144),   # the sizes do not follow the data size or the noise
        (0.5, 4000, 17.224387),
    ],
)
def test_documented_values_with_more_iterations(epsilon, n, sigma):
    p = _plan(epsilon, n, iterations=6)
    assert p.iterations == 6 and p.bins_per_class == 200  # the voted populations keep the released size
    assert p.num_samples_schedule == [1000] + [200] * 5 + [200]
    assert _plan(epsilon, n, iterations=6, final_samples_per_class=50).num_samples_schedule == [250] + [50] * 6
    assert p.noise_multiplier == pytest.approx(sigma, rel=1e-6)
    assert p.threshold == pytest.approx(C * sigma, rel=1e-6)


def test_survivor_estimate_bounds_the_bins_a_vote_can_lift_over_the_threshold():
    """S = m sqrt(k') / (c sigma) is the most bins the class's total vote weight can lift to H (no noise)."""
    rng = np.random.default_rng(0)
    m, sigma, c = 400, 3.73, C
    for k in (1, 2, 4):
        s = expected_true_survivors(votes_per_class=m, num_nearest_neighbors=k, threshold_sigmas=c, noise_multiplier=sigma)
        # the best case for survivors: every bin gets exactly H of vote weight
        per_bin = math.ceil(c * sigma / (1 / math.sqrt(k)))  # votes of weight 1/sqrt(k) needed to reach H
        assert math.floor(m * k / per_bin) <= s + 1
        # a random spread of m * k votes over 1,000 bins never lifts more than S bins
        for _ in range(20):
            counts = np.bincount(rng.integers(0, int(rng.integers(10, 1000)), m * k), minlength=1000) / math.sqrt(k)
            assert int((counts >= c * sigma).sum()) <= s
    assert math.isinf(expected_true_survivors(votes_per_class=m, num_nearest_neighbors=1, threshold_sigmas=c, noise_multiplier=0.0))


def test_noise_is_the_accountants_and_the_plan_is_monotone_in_epsilon():
    epsilons = [0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 20, 50, math.inf]
    for n in (1000, 4000, 40000):
        plans = [_plan(e, n) for e in epsilons]
        for e, p in zip(epsilons, plans):
            assert p.noise_multiplier == noise_multiplier(epsilon=e, iterations=p.iterations, delta=1e-5)
            if p.iterations >= 2:  # evolution is planned only where every vote keeps MIN_SURVIVORS
                assert p.expected_true_survivors >= MIN_SURVIVORS
        assert all(a.iterations <= b.iterations for a, b in zip(plans, plans[1:]))  # T never decreases
        for a, b in zip(plans, plans[1:]):
            if a.iterations == b.iterations:  # for a fixed T: less noise, lower threshold, no more votes, no fewer bins
                assert a.noise_multiplier >= b.noise_multiplier and a.threshold >= b.threshold
                assert a.num_nearest_neighbors >= b.num_nearest_neighbors and a.bins_per_class <= b.bins_per_class
                if a.num_nearest_neighbors == b.num_nearest_neighbors:
                    assert a.expected_true_survivors <= b.expected_true_survivors
    # with T fixed by the user the v2 property holds everywhere
    fixed = [_plan(e, iterations=3) for e in epsilons]
    assert all(a.noise_multiplier >= b.noise_multiplier and a.threshold >= b.threshold for a, b in zip(fixed, fixed[1:]))
    for delta in (1e-6, 1e-4):
        p = _plan(1.0, delta=delta)
        assert p.noise_multiplier == noise_multiplier(epsilon=1.0, iterations=p.iterations, delta=delta)


def test_bad_arguments():
    with pytest.raises(ValueError, match="approx_private_size"):
        _plan(1.0, n=5)
    with pytest.raises(ValueError, match="num_classes"):
        _plan(1.0, num_classes=0)
    with pytest.raises(ValueError, match="final_samples_per_class"):
        _plan(1.0, final_samples_per_class=3)


def test_planned_module_takes_the_plan_and_the_cli_link_reads_it():
    from pe_lightning.apis.drawtext import DrawText
    from pe_lightning.embeddings import HOGEmbedding, PixelEmbedding

    model = PlannedPrivateEvolution(api=DrawText(), embedding=PixelEmbedding(), epsilon=10.0, delta=1e-5,
                                    approx_private_size=4000, num_classes=10)
    p = _plan(10.0)
    assert model.iterations == p.iterations and model.threshold == p.threshold
    assert model.num_nearest_neighbors == p.num_nearest_neighbors and isinstance(model.embedding, PixelEmbedding)
    planned = PlannedPrivateEvolution(api=DrawText(), epsilon=1.0, approx_private_size=4000, num_classes=10)
    assert isinstance(planned.embedding, HOGEmbedding) and planned.embedding.config() == HOGEmbedding().config()
    assert planned.num_nearest_neighbors == _plan(1.0).num_nearest_neighbors == 4
    assert PlannedPrivateEvolution(api=DrawText(), epsilon=1.0, approx_private_size=4000, num_classes=10,
                                   num_nearest_neighbors=1).num_nearest_neighbors == 1
    np.testing.assert_allclose(model.variation_degrees, np.linspace(0.3, 0.1, p.iterations))
    assert PlannedPrivateEvolution.planned_iterations(
        {"epsilon": 10.0, "delta": 1e-5, "approx_private_size": 4000, "num_classes": 10, "api": None}
    ) == p.iterations


def test_demo_config_uses_the_planner():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "mnist_drawtext.yaml").read_text())
    assert config["model"]["class_path"] == "pe_lightning.planner.PlannedPrivateEvolution"
    accountant = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("PrivacyAccountant"))
    assert {"epsilon", "delta"} <= set(accountant["init_args"])
    assert not {"epsilon", "delta"} & set(config["model"]["init_args"])  # the budget is stated once (tests/test_budget.py)
    assert "prior" not in (config["model"]["init_args"]["api"].get("init_args") or {})  # public prior
