"""Tests for pe_lightning.privacy (GDP accounting for Gaussian histograms)."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from pe_lightning import privacy as P

EPS_GRID = (0.1, 0.5, 1.0, 2.0, 4.0, 10.0)
T_GRID = (1, 4, 20)
DELTA_GRID = (1e-5, 1e-6)


# --------------------------------------------------------------------------- golden values
@pytest.mark.parametrize(
    ("sigma", "iterations", "expected"),
    [
        # Reference values from docs/design.md §2; high-precision (mpmath) roots are
        # 2.594383380527607 and 3.341409469239345.
        (5 * math.sqrt(2), 20, 2.594383380527607),
        (2 * math.sqrt(2), 5, 3.341409469239345),
    ],
)
def test_golden_values(sigma: float, iterations: int, expected: float) -> None:
    eps = P.epsilon(noise_multiplier=sigma, iterations=iterations, delta=1e-5)
    assert eps == pytest.approx(expected, abs=2e-3)
    assert eps == pytest.approx(expected, rel=1e-9)
    assert eps >= expected  # rounded up, never below the true epsilon


def test_gdp_mu() -> None:
    assert P.gdp_mu(noise_multiplier=2.0, iterations=16) == pytest.approx(2.0)
    assert P.gdp_mu(noise_multiplier=0.0, iterations=3) == math.inf


def test_delta_matches_formula() -> None:
    from scipy.special import ndtr

    eps, sigma, t = 1.3, 3.0, 7
    mu = math.sqrt(t) / sigma
    naive = ndtr(-eps / mu + mu / 2) - math.exp(eps) * ndtr(-eps / mu - mu / 2)
    got = P.delta(epsilon=eps, noise_multiplier=sigma, iterations=t)
    assert got == pytest.approx(naive, rel=1e-10)
    assert P.gdp_delta(epsilon=eps, mu=mu) == got


def test_delta_numerically_stable_for_large_epsilon() -> None:
    # exp(800) overflows a float; the log-space evaluation must not.
    # mpmath reference: 6.7745818697218e-32
    assert P.gdp_delta(epsilon=800.0, mu=30.0) == pytest.approx(6.7745818697218e-32, rel=1e-10)
    tiny = P.gdp_delta(epsilon=50.0, mu=2.0)
    assert tiny == pytest.approx(1.066262024475e-128, rel=1e-8)  # mpmath reference
    assert P.gdp_delta(epsilon=1e6, mu=1.0) == 0.0
    for eps in (0.0, 1.0, 10.0, 100.0, 700.0, 1e4):
        value = P.gdp_delta(epsilon=eps, mu=5.0)
        assert 0.0 <= value <= 1.0 and math.isfinite(value)


def test_gdp_edge_cases() -> None:
    assert P.gdp_delta(epsilon=1.0, mu=0.0) == 0.0
    assert P.gdp_delta(epsilon=1.0, mu=math.inf) == 1.0
    assert P.gdp_delta(epsilon=math.inf, mu=3.0) == 0.0
    assert P.gdp_epsilon(mu=0.0, delta=1e-5) == 0.0
    assert P.gdp_epsilon(mu=math.inf, delta=1e-5) == math.inf
    # delta(0) = 2 Phi(mu/2) - 1 <= target  ->  epsilon is exactly 0
    assert P.gdp_epsilon(mu=1e-3, delta=0.5) == 0.0
    assert P.epsilon(noise_multiplier=0.0, iterations=3, delta=1e-5) == math.inf
    assert P.epsilon(noise_multiplier=math.inf, iterations=3, delta=1e-5) == 0.0
    assert P.noise_multiplier(epsilon=math.inf, iterations=5, delta=1e-5) == 0.0


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 10.0, 100.0])
@pytest.mark.parametrize("iterations", [1, 4, 20])
@pytest.mark.parametrize("target_delta", [1e-3, 1e-5, 1e-9])
def test_delta_epsilon_round_trip(sigma: float, iterations: int, target_delta: float) -> None:
    eps = P.epsilon(noise_multiplier=sigma, iterations=iterations, delta=target_delta)
    back = P.delta(epsilon=eps, noise_multiplier=sigma, iterations=iterations)
    assert back <= target_delta  # never below the true epsilon
    assert back == pytest.approx(target_delta, rel=1e-6)


def test_calibration_never_overshoots_and_is_tight() -> None:
    for eps, t, dlt in itertools.product(EPS_GRID, T_GRID, DELTA_GRID):
        sigma = P.noise_multiplier(epsilon=eps, iterations=t, delta=dlt)
        assert sigma > 0
        spent = P.epsilon(noise_multiplier=sigma, iterations=t, delta=dlt)
        assert spent <= eps, (eps, t, dlt, sigma, spent)
        looser = P.epsilon(noise_multiplier=0.999 * sigma, iterations=t, delta=dlt)
        assert looser > eps or spent >= eps * (1 - 1e-3), (eps, t, dlt, sigma)
        assert spent == pytest.approx(eps, rel=1e-6)


def test_calibration_matches_golden() -> None:
    sigma = P.noise_multiplier(epsilon=2.594383380527607, iterations=20, delta=1e-5)
    assert sigma == pytest.approx(5 * math.sqrt(2), rel=1e-6)


# --------------------------------------------------------------------------- monotonicity
def test_epsilon_decreases_in_sigma() -> None:
    sigmas = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0]
    eps = [P.epsilon(noise_multiplier=s, iterations=10, delta=1e-5) for s in sigmas]
    assert all(a > b for a, b in zip(eps, eps[1:]))


def test_epsilon_increases_in_iterations() -> None:
    ts = [1, 2, 5, 10, 50, 200]
    eps = [P.epsilon(noise_multiplier=5.0, iterations=t, delta=1e-5) for t in ts]
    assert all(a < b for a, b in zip(eps, eps[1:]))


def test_delta_decreases_in_epsilon() -> None:
    ds = [P.delta(epsilon=e, noise_multiplier=2.0, iterations=4) for e in (0.0, 0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(ds, ds[1:]))


def test_noise_increases_with_iterations_and_stricter_budget() -> None:
    by_t = [P.noise_multiplier(epsilon=1.0, iterations=t, delta=1e-5) for t in (1, 4, 20)]
    assert all(a < b for a, b in zip(by_t, by_t[1:]))
    by_eps = [P.noise_multiplier(epsilon=e, iterations=5, delta=1e-5) for e in EPS_GRID]
    assert all(a > b for a, b in zip(by_eps, by_eps[1:]))


# --------------------------------------------------------------------------- independent accountant
CROSS_CASES = [(5 * math.sqrt(2), 20), (2 * math.sqrt(2), 5), (1.0, 1), (20.0, 10)]


@pytest.mark.parametrize(("sigma", "iterations"), CROSS_CASES)
def test_matches_dp_accounting_pld(sigma: float, iterations: int) -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), iterations)
    )
    theirs = accountant.get_epsilon(1e-5)
    ours = P.epsilon(noise_multiplier=sigma, iterations=iterations, delta=1e-5)
    # Measured agreement: 1e-9 to 3e-8 relative; PLD's pessimistic discretisation is never below the exact value.
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours <= theirs * (1 + 1e-12)


@pytest.mark.parametrize(("sigma", "iterations"), CROSS_CASES)
def test_rdp_upper_bounds_ours(sigma: float, iterations: int) -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), iterations)
    )
    assert accountant.get_epsilon(1e-5) >= P.epsilon(
        noise_multiplier=sigma, iterations=iterations, delta=1e-5
    )


# --------------------------------------------------------------------------- ledger
def test_ledger_homogeneous_equals_epsilon() -> None:
    ledger = P.PrivacyLedger(delta=1e-5)
    assert len(ledger) == 0 and ledger.epsilon == 0.0 and ledger.mu == 0.0
    sigma = 5 * math.sqrt(2)
    for t in range(1, 21):
        returned = ledger.record(iteration=t, noise_multiplier=sigma)
        expected = P.epsilon(noise_multiplier=sigma, iterations=t, delta=1e-5)
        assert returned == pytest.approx(expected, rel=1e-12)  # sum(1/s^2) vs T/s^2 rounding
    assert ledger.iterations == len(ledger) == 20
    assert ledger.mu == pytest.approx(P.gdp_mu(noise_multiplier=sigma, iterations=20))
    assert ledger.epsilon == pytest.approx(2.594383380527607, rel=1e-9)
    entries = ledger.entries
    assert [e["iteration"] for e in entries] == list(range(1, 21))
    assert all(e["noise_multiplier"] == sigma for e in entries)
    assert [e["epsilon"] for e in entries] == sorted(e["epsilon"] for e in entries)
    assert entries[-1]["epsilon"] == ledger.epsilon


def test_ledger_heterogeneous_composition() -> None:
    sigmas = [2.0, 3.0, 6.0, 1.5]
    ledger = P.PrivacyLedger(delta=1e-6)
    for t, s in enumerate(sigmas, start=1):
        ledger.record(iteration=t, noise_multiplier=s)
    mu = math.sqrt(sum(1 / s**2 for s in sigmas))
    assert ledger.mu == pytest.approx(mu, rel=1e-12)
    assert ledger.epsilon == P.gdp_epsilon(mu=mu, delta=1e-6)
    # infinite noise costs nothing
    before = ledger.epsilon
    ledger.record(iteration=5, noise_multiplier=math.inf)
    assert ledger.epsilon == pytest.approx(before, rel=1e-12)


def test_ledger_epsilon_if_does_not_record() -> None:
    ledger = P.PrivacyLedger(delta=1e-5)
    ledger.record(iteration=1, noise_multiplier=4.0)
    predicted = ledger.epsilon_if(noise_multiplier=4.0, extra_iterations=3)
    assert len(ledger) == 1
    assert predicted == P.epsilon(noise_multiplier=4.0, iterations=4, delta=1e-5)
    assert ledger.epsilon_if(noise_multiplier=4.0, extra_iterations=0) == ledger.epsilon
    assert ledger.epsilon_if(noise_multiplier=0.0) == math.inf
    assert ledger.epsilon_if(noise_multiplier=2.0) == ledger.record(
        iteration=2, noise_multiplier=2.0
    )


def test_ledger_zero_sigma_is_infinite() -> None:
    ledger = P.PrivacyLedger(delta=1e-5)
    ledger.record(iteration=1, noise_multiplier=3.0)
    assert ledger.record(iteration=2, noise_multiplier=0.0) == math.inf
    assert ledger.mu == math.inf and ledger.epsilon == math.inf
    assert ledger.record(iteration=3, noise_multiplier=10.0) == math.inf
    assert ledger.epsilon_if(noise_multiplier=100.0) == math.inf


def test_ledger_state_dict_json_round_trip() -> None:
    ledger = P.PrivacyLedger(delta=1e-5)
    for t, s in enumerate([2.0, 5.0, math.inf, 3.0], start=1):
        ledger.record(iteration=t, noise_multiplier=s)
    state = json.loads(json.dumps(ledger.state_dict(), allow_nan=False))
    restored = P.PrivacyLedger(delta=0.5)
    restored.load_state_dict(state)
    assert restored.delta == ledger.delta
    assert restored.entries == ledger.entries
    assert restored.mu == ledger.mu and restored.epsilon == ledger.epsilon
    restored.record(iteration=5, noise_multiplier=2.0)  # continues numbering
    assert len(restored) == 5

    zero = P.PrivacyLedger(delta=1e-5)
    zero.record(iteration=1, noise_multiplier=0.0)
    state = json.loads(json.dumps(zero.state_dict(), allow_nan=False))
    again = P.PrivacyLedger(delta=1e-5)
    again.load_state_dict(state)
    assert again.epsilon == math.inf


def test_ledger_rejects_bad_iterations() -> None:
    ledger = P.PrivacyLedger(delta=1e-5)
    with pytest.raises(ValueError, match="iteration"):
        ledger.record(iteration=2, noise_multiplier=1.0)  # must start at 1
    ledger.record(iteration=1, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="iteration 1 already recorded"):
        ledger.record(iteration=1, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="iteration"):
        ledger.record(iteration=3, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="iteration"):
        ledger.record(iteration=0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="iteration"):
        ledger.record(iteration=2.0, noise_multiplier=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_multiplier"):
        ledger.record(iteration=2, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="extra_iterations"):
        ledger.epsilon_if(noise_multiplier=1.0, extra_iterations=-1)
    assert len(ledger) == 1  # failed records leave no trace
    with pytest.raises(ValueError, match="delta"):
        P.PrivacyLedger(delta=0.0)
    with pytest.raises(ValueError, match="noise_multipliers"):
        ledger.load_state_dict({"delta": 1e-5})


# --------------------------------------------------------------------------- validation
GOOD = {"epsilon": 1.0, "noise_multiplier": 2.0, "iterations": 5, "delta": 1e-5}
BAD_VALUES = {
    "epsilon": [0.0, -1.0, math.nan, "1"],
    "delta": [0.0, 1.0, -1e-5, 2.0, math.nan, math.inf],
    "iterations": [0, -3, 2.0, True, "5"],
    "noise_multiplier": [-0.1, math.nan, -math.inf],
}
FUNCTIONS = {
    P.delta: ("epsilon", "noise_multiplier", "iterations"),
    P.epsilon: ("noise_multiplier", "iterations", "delta"),
    P.noise_multiplier: ("epsilon", "iterations", "delta"),
    P.gdp_mu: ("noise_multiplier", "iterations"),
}
CASES = [
    (fn, arg, bad)
    for fn, args in FUNCTIONS.items()
    for arg in args
    for bad in BAD_VALUES[arg]
    # epsilon = 0 is a legitimate query point of the delta curve
    if not (fn is P.delta and arg == "epsilon" and bad == 0.0)
]


@pytest.mark.parametrize(
    ("fn", "arg", "bad"), CASES, ids=[f"{f.__name__}-{a}-{b!r}" for f, a, b in CASES]
)
def test_bad_inputs_name_the_argument(fn, arg: str, bad: object) -> None:
    kwargs = {name: GOOD[name] for name in FUNCTIONS[fn]}
    kwargs[arg] = bad
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        fn(**kwargs)


def test_gdp_bad_inputs() -> None:
    with pytest.raises(ValueError, match="mu"):
        P.gdp_epsilon(mu=-1.0, delta=1e-5)
    with pytest.raises(ValueError, match="mu"):
        P.gdp_delta(epsilon=1.0, mu=math.nan)
    with pytest.raises(ValueError, match="delta"):
        P.gdp_epsilon(mu=1.0, delta=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        P.gdp_delta(epsilon=-0.5, mu=1.0)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        P.epsilon(2.0, 5, 1e-5)  # type: ignore[misc]


def test_remaining_noise_multiplier_of_a_resume_with_a_new_budget_golden_values():
    """2 of 4 iterations spent at the sigma of (1.0, 1e-5); resumed with epsilon 2.0, then with the same 1.0."""
    calibrated = P.noise_multiplier(epsilon=1.0, iterations=4, delta=1e-5)
    ledger = P.PrivacyLedger(delta=1e-5)
    for t in (1, 2):
        ledger.record(iteration=t, noise_multiplier=calibrated)
    assert ledger.mu == pytest.approx(math.sqrt(2) / calibrated, rel=1e-12)
    kwargs = dict(delta=1e-5, spent_mu=ledger.mu, spent_iterations=2, iterations=4, calibrated=calibrated)
    sigma = P.remaining_noise_multiplier(epsilon=2.0, **kwargs)
    assert sigma == pytest.approx(3.045523977943842, rel=1e-9)
    # mu^2 composes: the spent part plus two at the new sigma reach the new budget's mu, never beyond it.
    target_mu = 1 / P.noise_multiplier(epsilon=2.0, iterations=1, delta=1e-5)
    assert math.sqrt(ledger.mu**2 + 2 / sigma**2) == pytest.approx(target_mu, rel=1e-9)
    assert 2.0 - 1e-6 < ledger.epsilon_if(noise_multiplier=sigma, extra_iterations=2) <= 2.0
    # The same budget keeps the calibrated sigma; nothing spent or nothing left changes nothing.
    assert P.remaining_noise_multiplier(epsilon=1.0, **kwargs) == calibrated
    assert P.remaining_noise_multiplier(epsilon=2.0, **{**kwargs, "spent_iterations": 0, "spent_mu": 0.0}) == calibrated
    assert P.remaining_noise_multiplier(epsilon=2.0, **{**kwargs, "spent_iterations": 4}) == calibrated
    # A budget already used up (a smaller new epsilon) is left to the accountant's budget check.
    assert P.remaining_noise_multiplier(epsilon=0.3, **kwargs) == calibrated


@pytest.mark.parametrize("field,bad", [("epsilon", -1.0), ("delta", 1.0), ("spent_iterations", -1), ("iterations", 0),
                                       ("calibrated", -0.5), ("spent_mu", math.nan)])
def test_remaining_noise_multiplier_names_the_bad_argument(field, bad):
    kwargs = dict(epsilon=2.0, delta=1e-5, spent_mu=0.2, spent_iterations=2, iterations=4, calibrated=7.0)
    with pytest.raises(ValueError, match="mu" if field == "spent_mu" else field):
        P.remaining_noise_multiplier(**{**kwargs, field: bad})
