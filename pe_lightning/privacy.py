"""Privacy accounting for Private Evolution via Gaussian differential privacy (GDP).

Every PE iteration releases one noisy nearest-neighbour histogram. Under the
*add/remove-one* neighbouring relation (two private data sets are neighbours when one
is obtained from the other by adding or removing a single private sample), one
histogram has L2 sensitivity 1, so the iteration is a Gaussian mechanism with noise
standard deviation ``sigma`` (the *noise multiplier*, in units of the sensitivity).

``T`` full-participation Gaussian mechanisms compose exactly to ``mu``-GDP with
``mu = sqrt(T) / sigma`` (heterogeneous: ``mu = sqrt(sum_t 1 / sigma_t**2)``), whose
tight ``(epsilon, delta)`` curve is (Dong-Roth-Su 2019; Balle-Wang 2018)::

    delta(eps) = Phi(-eps/mu + mu/2) - exp(eps) * Phi(-eps/mu - mu/2)

All epsilons are in nats (natural-log units), deltas are probabilities. Functions that
return an epsilon round *up* (the result is never below the exact value) and the
calibration :func:`noise_multiplier` never returns a noise that overspends.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.optimize import brentq
from scipy.special import log_ndtr

from pe_lightning.validation import check_int, check_real

__all__ = [
    "PrivacyLedger",
    "delta",
    "epsilon",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu",
    "noise_multiplier",
    "remaining_noise_multiplier",
]

_XTOL = 1e-12
_STATE_VERSION = 1


# --------------------------------------------------------------------------- validation
def _check_epsilon(value: Any, *, allow_zero: bool = False) -> float:
    value = check_real("epsilon", value)
    if value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"epsilon must be {expected} (may be math.inf), got {value!r}")
    return value


def _check_delta(value: Any) -> float:
    value = check_real("delta", value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"delta must lie in the open interval (0, 1), got {value!r}")
    return value


def _check_noise(value: Any, name: str = "noise_multiplier") -> float:
    value = check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0 means no noise), got {value!r}")
    return value


def _check_mu(value: Any) -> float:
    value = check_real("mu", value)
    if value < 0:
        raise ValueError(f"mu must be >= 0 (may be math.inf), got {value!r}")
    return value


# --------------------------------------------------------------------------- GDP core
def _gdp_log_delta(eps: float, mu: float) -> float:
    """``log delta(eps)`` of mu-GDP for finite ``eps >= 0`` and finite ``mu > 0``.

    Computed as ``log Phi(a) + log(1 - exp(eps + log Phi(b) - log Phi(a)))`` so that
    neither ``exp(eps)`` overflows nor the difference of two tiny terms underflows.
    """
    log_a = float(log_ndtr(-eps / mu + mu / 2.0))
    log_b = float(log_ndtr(-eps / mu - mu / 2.0))
    log_ratio = min(eps + log_b - log_a, 0.0)  # exp(eps)Phi(b) <= Phi(a) exactly
    if log_ratio == 0.0:
        return -math.inf
    return log_a + math.log(-math.expm1(log_ratio))


def gdp_delta(*, epsilon: float, mu: float) -> float:
    """Tight delta of a ``mu``-GDP mechanism at a given epsilon.

    Args:
        epsilon: Privacy loss in nats, ``>= 0`` (``math.inf`` gives 0).
        mu: GDP parameter, ``>= 0`` (0: no privacy loss; ``math.inf``: no privacy).

    Returns:
        ``Phi(-eps/mu + mu/2) - exp(eps) Phi(-eps/mu - mu/2)``, a probability in [0, 1].

    Raises:
        ValueError: If ``epsilon`` or ``mu`` is negative or NaN.
    """
    eps = _check_epsilon(epsilon, allow_zero=True)
    mu = _check_mu(mu)
    if mu == math.inf:
        return 1.0
    if mu == 0.0 or eps == math.inf:
        return 0.0
    return math.exp(_gdp_log_delta(eps, mu))


def gdp_epsilon(*, mu: float, delta: float) -> float:
    """Smallest epsilon such that a ``mu``-GDP mechanism is ``(epsilon, delta)``-DP.

    The root of ``gdp_delta(epsilon, mu) = delta`` is found with Brent's method and then
    rounded up, so ``gdp_delta(epsilon=result, mu=mu) <= delta`` always holds.

    Args:
        mu: GDP parameter, ``>= 0`` (``math.inf`` gives ``math.inf``).
        delta: Target delta, in (0, 1).

    Returns:
        Epsilon in nats (``0.0`` if already ``delta(0) <= delta``).

    Raises:
        ValueError: If ``mu`` is negative/NaN or ``delta`` is not in (0, 1).
    """
    mu = _check_mu(mu)
    target = _check_delta(delta)
    if mu == 0.0:
        return 0.0
    if mu == math.inf:
        return math.inf
    log_target = math.log(target)

    def excess(eps: float) -> float:
        return _gdp_log_delta(eps, mu) - log_target

    if math.exp(_gdp_log_delta(0.0, mu)) <= target:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0.0:
        lo, hi = hi, 2.0 * hi
    eps = brentq(excess, lo, hi, xtol=_XTOL) if excess(hi) < 0.0 else hi
    step = max(_XTOL, 4e-16 * eps)
    # Round up: never report less than the true epsilon. Checked on the delta scale, the
    # exact expression gdp_delta() evaluates, so delta(epsilon(...)) <= delta holds bitwise.
    while math.exp(_gdp_log_delta(eps, mu)) > target:
        eps += step
        step *= 2.0
    return float(eps)


# --------------------------------------------------------------------------- public API
def gdp_mu(*, noise_multiplier: float, iterations: int) -> float:
    """GDP parameter of ``iterations`` full-participation Gaussian mechanisms.

    Each mechanism has L2 sensitivity 1 under add/remove-one-sample neighbouring and adds
    Gaussian noise of standard deviation ``noise_multiplier`` (in sensitivity units).

    Args:
        noise_multiplier: Noise std / sensitivity, ``>= 0`` (0: no noise, ``mu = inf``).
        iterations: Number of composed mechanisms ``T``, an int ``>= 1``.

    Returns:
        ``mu = sqrt(T) / sigma`` (``math.inf`` when ``sigma == 0``).

    Raises:
        ValueError: On a negative/NaN ``noise_multiplier`` or ``iterations < 1``.
    """
    sigma = _check_noise(noise_multiplier)
    t = check_int("iterations", iterations, 1)
    return math.inf if sigma == 0.0 else math.sqrt(t) / sigma


def delta(*, epsilon: float, noise_multiplier: float, iterations: int) -> float:
    """Exact delta at ``epsilon`` after ``iterations`` Gaussian mechanisms.

    Sensitivity 1 under add/remove-one-private-sample neighbouring; composition is the
    exact GDP composition ``mu = sqrt(T) / sigma``.

    Args:
        epsilon: Privacy loss in nats, ``>= 0``.
        noise_multiplier: Noise std / sensitivity, ``>= 0``.
        iterations: Number of iterations ``T``, an int ``>= 1``.

    Returns:
        The tight delta, a probability in [0, 1].

    Raises:
        ValueError: If any argument is out of range (message names the argument).
    """
    eps = _check_epsilon(epsilon, allow_zero=True)
    mu = gdp_mu(noise_multiplier=noise_multiplier, iterations=iterations)
    return gdp_delta(epsilon=eps, mu=mu)


def epsilon(*, noise_multiplier: float, iterations: int, delta: float) -> float:
    """Smallest epsilon of ``iterations`` Gaussian mechanisms at a target ``delta``.

    Sensitivity 1 under add/remove-one-private-sample neighbouring. The value is rounded
    up: ``delta(epsilon=result, ...) <= delta`` always holds.

    Args:
        noise_multiplier: Noise std / sensitivity, ``>= 0`` (0 gives ``math.inf``).
        iterations: Number of iterations ``T``, an int ``>= 1``.
        delta: Target delta, in (0, 1).

    Returns:
        Epsilon in nats.

    Raises:
        ValueError: If any argument is out of range (message names the argument).
    """
    mu = gdp_mu(noise_multiplier=noise_multiplier, iterations=iterations)
    return gdp_epsilon(mu=mu, delta=delta)


def noise_multiplier(*, epsilon: float, iterations: int, delta: float) -> float:
    """Calibrate the smallest noise multiplier meeting an ``(epsilon, delta)`` budget.

    Sensitivity 1 under add/remove-one-private-sample neighbouring, ``T`` full-
    participation iterations. The result never overspends:
    ``epsilon(noise_multiplier=result, iterations=T, delta=delta) <= epsilon``.

    Args:
        epsilon: Target total epsilon in nats, ``> 0`` (``math.inf`` gives 0.0).
        iterations: Number of iterations ``T``, an int ``>= 1``.
        delta: Target delta, in (0, 1).

    Returns:
        The noise std / sensitivity ``sigma`` for every iteration.

    Raises:
        ValueError: If any argument is out of range (message names the argument).
    """
    eps = _check_epsilon(epsilon)
    t = check_int("iterations", iterations, 1)
    target = _check_delta(delta)
    if eps == math.inf:
        return 0.0
    # Aim slightly inside the budget so the rounded-up epsilon() stays within it.
    log_target = math.log(target) + math.log1p(-1e-9)

    def excess(mu: float) -> float:  # increasing in mu
        return _gdp_log_delta(eps, mu) - log_target

    lo, hi = 0.5, 1.0
    while excess(lo) > 0.0:
        lo, hi = lo / 2.0, lo
    while excess(hi) <= 0.0:
        lo, hi = hi, 2.0 * hi
    mu = max(lo, brentq(excess, lo, hi, xtol=_XTOL * lo))
    sigma = math.sqrt(t) / mu
    factor = 1e-12
    # Verify with the same (rounded-up) computation epsilon() uses; nudge sigma up if needed.
    while gdp_epsilon(mu=math.sqrt(t) / sigma, delta=target) > eps:
        sigma *= 1.0 + factor
        factor *= 2.0
    return float(sigma)


def remaining_noise_multiplier(
    *, epsilon: float, delta: float, spent_mu: float, spent_iterations: int, iterations: int, calibrated: float
) -> float:
    """Sigma for the iterations a resumed run has left, so that all ``iterations`` together meet ``epsilon``.

    Same mechanism and neighbouring relation as :func:`noise_multiplier` (sensitivity 1,
    add/remove one private sample or client). GDP composes as ``mu^2 = sum_t 1 / sigma_t^2``:
    with ``mu_spent`` from the ``spent_iterations`` already run and ``mu_target`` the mu
    whose epsilon at ``delta`` is ``epsilon``, the ``R = iterations - spent_iterations``
    remaining iterations get ``sigma = sqrt(R / (mu_target^2 - mu_spent^2))``, times
    ``1 + 1e-12`` so that rounding never overshoots.

    ``calibrated`` (the sigma calibrated for the whole run) is returned unchanged when
    nothing was spent or nothing remains, when it is 0 (not private), when it already meets
    ``epsilon`` to 1e-9 relative (a run resumed with the same budget), or when the budget
    is used up (``mu_spent`` infinite or ``>= mu_target``: the caller's budget check refuses).

    Args:
        epsilon: the (possibly new) total budget in nats, ``> 0``.
        delta: the run's delta, in (0, 1).
        spent_mu: GDP mu of the iterations already run (:attr:`PrivacyLedger.mu`).
        spent_iterations: how many iterations were run.
        iterations: ``T``, all iterations of the run.
        calibrated: the sigma calibrated for ``T`` iterations at the original budget.

    Returns:
        The noise multiplier of each remaining iteration.
    """
    epsilon, delta = _check_epsilon(epsilon), _check_delta(delta)
    spent_mu, calibrated = _check_mu(spent_mu), _check_noise(calibrated, "calibrated")
    spent_iterations = check_int("spent_iterations", spent_iterations, 0)
    remaining = check_int("iterations", iterations, 1) - spent_iterations
    if spent_iterations == 0 or remaining <= 0 or calibrated == 0.0:
        return calibrated
    inv_var = 0.0 if calibrated == math.inf else 1.0 / (calibrated * calibrated)
    after = gdp_epsilon(mu=math.sqrt(spent_mu * spent_mu + remaining * inv_var), delta=delta)
    target_mu = 1.0 / noise_multiplier(epsilon=epsilon, iterations=1, delta=delta)
    left = target_mu**2 - spent_mu**2  # what the remaining iterations may still add to mu^2
    if abs(after - epsilon) > 1e-9 * epsilon and math.isfinite(spent_mu) and left > 0:
        return math.sqrt(remaining / left) * (1 + 1e-12)
    return calibrated


# --------------------------------------------------------------------------- ledger
class PrivacyLedger:
    """Per-iteration record of the privacy spent by one PE run.

    Iteration ``t`` is one Gaussian mechanism with L2 sensitivity 1 (add/remove one
    private sample) and noise multiplier ``sigma_t``. Heterogeneous iterations compose
    exactly in GDP: ``mu = sqrt(sum_t 1 / sigma_t**2)``; a ``sigma_t`` of 0 makes the
    total infinite. Epsilons are reported in nats at the ledger's fixed ``delta``.

    Args:
        delta: Target delta of the run, in (0, 1).
    """

    def __init__(self, *, delta: float) -> None:
        self._delta = _check_delta(delta)
        self._sigmas: list[float] = []
        self._epsilons: list[float] = []
        self._inv_var_sum = 0.0
        self._has_zero = False
        self._notes: list[str] = []

    # ---- helpers
    @staticmethod
    def _inv_var(sigma: float) -> float:
        return 0.0 if sigma == math.inf else 1.0 / (sigma * sigma)

    def _mu_after(self, sigma: float, extra: int) -> float:
        if extra == 0:
            return math.inf if self._has_zero else math.sqrt(self._inv_var_sum)
        if self._has_zero or sigma == 0.0:
            return math.inf
        return math.sqrt(self._inv_var_sum + extra * self._inv_var(sigma))

    # ---- recording
    def record(self, *, iteration: int, noise_multiplier: float) -> float:
        """Record iteration ``iteration`` and return the cumulative epsilon after it.

        Args:
            iteration: 1-based iteration number; must be exactly ``len(self) + 1``.
            noise_multiplier: Noise std / sensitivity used in that iteration, ``>= 0``.

        Returns:
            Cumulative epsilon in nats (``math.inf`` if any noise multiplier was 0).

        Raises:
            ValueError: On a repeated, skipped or out-of-order ``iteration`` or a bad
                ``noise_multiplier``.
        """
        it = check_int("iteration", iteration, 1)
        sigma = _check_noise(noise_multiplier)
        expected = len(self._sigmas) + 1
        if it != expected:
            kind = "already recorded" if it < expected else "skips iterations"
            raise ValueError(
                f"iteration {it} {kind}: iterations must be recorded in order 1, 2, ...; "
                f"expected iteration={expected}"
            )
        mu = self._mu_after(sigma, 1)
        eps = gdp_epsilon(mu=mu, delta=self._delta)
        self._sigmas.append(sigma)
        self._epsilons.append(eps)
        self._has_zero = self._has_zero or sigma == 0.0
        if not self._has_zero:
            self._inv_var_sum += self._inv_var(sigma)
        return eps

    def epsilon_if(self, *, noise_multiplier: float, extra_iterations: int = 1) -> float:
        """Cumulative epsilon after ``extra_iterations`` more iterations, without recording.

        Args:
            noise_multiplier: Noise std / sensitivity of each extra iteration, ``>= 0``.
            extra_iterations: Number of hypothetical further iterations, an int ``>= 0``.

        Returns:
            Epsilon in nats at the ledger's delta.

        Raises:
            ValueError: On a bad ``noise_multiplier`` or ``extra_iterations``.
        """
        sigma = _check_noise(noise_multiplier)
        extra = check_int("extra_iterations", extra_iterations, 0)
        return gdp_epsilon(mu=self._mu_after(sigma, extra), delta=self._delta)

    def add_note(self, text: str) -> None:
        """Record a remark on the run's accounting (e.g. a resume that accepted a changed configuration)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a ledger note must be a non-empty string, got {text!r}")
        self._notes.append(text)

    # ---- views
    @property
    def notes(self) -> list[str]:
        """The remarks recorded with :meth:`add_note`, oldest first."""
        return list(self._notes)

    @property
    def delta(self) -> float:
        """The fixed target delta of the ledger."""
        return self._delta

    @property
    def iterations(self) -> int:
        """Number of recorded iterations."""
        return len(self._sigmas)

    @property
    def mu(self) -> float:
        """GDP parameter of everything recorded so far (``math.inf`` if any sigma was 0)."""
        return self._mu_after(0.0, 0)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon in nats at the ledger's delta (0.0 before any iteration)."""
        return self._epsilons[-1] if self._epsilons else 0.0

    @property
    def entries(self) -> list[dict[str, Any]]:
        """One dict per iteration: ``{iteration, noise_multiplier, epsilon}`` (cumulative)."""
        return [
            {"iteration": i + 1, "noise_multiplier": s, "epsilon": e}
            for i, (s, e) in enumerate(zip(self._sigmas, self._epsilons))
        ]

    def __len__(self) -> int:
        return len(self._sigmas)

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(delta={self._delta!r}, iterations={self.iterations}, "
            f"epsilon={self.epsilon!r})"
        )

    # ---- persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain, strictly JSON-serialisable state (no inf/NaN); epsilons are recomputed."""
        return {
            "version": _STATE_VERSION,
            "delta": self._delta,
            "noise_multipliers": [None if s == math.inf else s for s in self._sigmas],
            "notes": list(self._notes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this ledger's contents with ``state`` from :meth:`state_dict`.

        Raises:
            ValueError: If ``state`` is malformed.
        """
        if not isinstance(state, dict) or "delta" not in state or "noise_multipliers" not in state:
            raise ValueError("state must be a dict with keys 'delta' and 'noise_multipliers'")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r} is not supported")
        fresh = PrivacyLedger(delta=state["delta"])
        for i, sigma in enumerate(state["noise_multipliers"], start=1):
            fresh.record(iteration=i, noise_multiplier=math.inf if sigma is None else sigma)
        for note in state.get("notes", []):  # absent in states written before notes existed
            fresh.add_note(note)
        self.__dict__.update(fresh.__dict__)
