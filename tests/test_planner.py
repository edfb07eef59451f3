"""The planner (pe_lightning.planner): documented values, monotone in epsilon, usable from a config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pe_lightning.planner import ITERATIONS, RANDOM_FACTOR, SELECTION, Plan, PlannedPrivateEvolution, plan
from pe_lightning.privacy import noise_multiplier


def _plan(epsilon: float, n: int = 4000, **kw) -> Plan:
    return plan(epsilon=epsilon, delta=kw.pop("delta", 1e-5), num_classes=kw.pop("num_classes", 10), image_size=28,
                approx_private_size=n, **kw)


@pytest.mark.parametrize(
    "epsilon, n, bins, sigma",
    [
        (1.0, 4000, 26, 3.730632),     # T = 1: 400 votes per class / (4 * 3.73) = 26.8 -> 26 (no voted population between)
        (10.0, 4000, 200, 0.499889),   # 400 / (4 * 0.50) = 200 -> clipped at the final size
        (1.0, 40000, 200, 3.730632),   # ten times the data: 268 -> clipped
        (0.5, 4000, 14, 7.031827),
        (math.inf, 4000, 200, 0.0),    # no noise: the final size
    ],
)
def test_documented_values(epsilon, n, bins, sigma):
    p = _plan(epsilon, n)
    assert p.iterations == ITERATIONS == 1
    assert p.bins_per_class == bins
    assert p.num_samples_schedule == [RANDOM_FACTOR * 200, 200] == [1000, 200]  # a large RANDOM population, one vote
    assert p.noise_multiplier == pytest.approx(sigma, rel=1e-6)
    assert p.threshold == pytest.approx(2.0 * sigma, rel=1e-6)
    assert p.variation_degrees == {"start": 0.3, "end": 0.1}
    assert SELECTION == "systematic"


@pytest.mark.parametrize(
    "epsilon, n, bins, sigma",
    [
        (1.0, 4000, 10, 9.138144),     # T = 6: 400 / (4 * 9.14) = 10.9 -> 10
        (10.0, 4000, 81, 1.224472),    # 400 / (4 * 1.22) = 81.7 -> 81
        (1.0, 40000, 109, 9.138144),   # ten times the data: ten times the bins
        (0.5, 4000, 10, 17.224387),    # below the floor: MIN_BINS
    ],
)
def test_documented_values_with_more_iterations(epsilon, n, bins, sigma):
    p = _plan(epsilon, n, iterations=6)
    assert p.iterations == 6 and p.bins_per_class == bins
    assert p.num_samples_schedule == [1000] + [bins] * 5 + [200]
    assert p.noise_multiplier == pytest.approx(sigma, rel=1e-6)
    assert p.threshold == pytest.approx(2.0 * sigma, rel=1e-6)


def test_noise_is_the_accountants_and_monotone_in_epsilon():
    epsilons = [0.1, 0.25, 0.5, 1, 2, 3, 4, 6, 8, 10, 20, 50, math.inf]
    plans = [_plan(e) for e in epsilons]
    for e, p in zip(epsilons, plans):
        assert p.noise_multiplier == noise_multiplier(epsilon=e, iterations=p.iterations, delta=1e-5)
    sigmas = [p.noise_multiplier for p in plans]
    assert all(a >= b for a, b in zip(sigmas, sigmas[1:]))  # a larger epsilon never gives more noise per iteration
    assert all(a.bins_per_class <= b.bins_per_class for a, b in zip(plans, plans[1:]))
    assert all(a.threshold >= b.threshold for a, b in zip(plans, plans[1:]))
    for delta in (1e-6, 1e-4):
        assert _plan(1.0, delta=delta).noise_multiplier == noise_multiplier(epsilon=1.0, iterations=ITERATIONS, delta=delta)


def test_bad_arguments():
    with pytest.raises(ValueError, match="approx_private_size"):
        _plan(1.0, n=5)
    with pytest.raises(ValueError, match="num_classes"):
        _plan(1.0, num_classes=0)
    with pytest.raises(ValueError, match="final_samples_per_class"):
        _plan(1.0, final_samples_per_class=3)


def test_planned_module_takes_the_plan_and_the_cli_link_reads_it():
    from pe_lightning.apis.drawtext import DrawText
    from pe_lightning.embeddings import PixelEmbedding

    model = PlannedPrivateEvolution(api=DrawText(), embedding=PixelEmbedding(), epsilon=10.0, delta=1e-5,
                                    approx_private_size=4000, num_classes=10)
    p = _plan(10.0)
    assert model.iterations == p.iterations and model.threshold == p.threshold
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
    assert config["model"]["init_args"]["epsilon"] == accountant["init_args"]["epsilon"]
    assert config["model"]["init_args"]["delta"] == accountant["init_args"]["delta"]
    assert "prior" not in (config["model"]["init_args"]["api"].get("init_args") or {})  # public prior


def test_planned_module_refuses_an_accountant_with_another_budget():
    from pe_lightning.apis.drawtext import DrawText
    from pe_lightning.embeddings import PixelEmbedding

    model = PlannedPrivateEvolution(api=DrawText(), embedding=PixelEmbedding(), epsilon=1.0, delta=1e-5,
                                    approx_private_size=4000, num_classes=10)
    other = noise_multiplier(epsilon=10.0, iterations=model.iterations, delta=1e-5)  # a checkpoint of another budget
    model.engine.load_state_dict({"population": None, "iteration": 1,
                                  "noise_record": [{"iteration": 1, "noise_multiplier": other, "noise_mode": "seeded", "key_id": "x"}]})
    with pytest.raises(ValueError, match="same epsilon and delta"):
        model.on_fit_start()
