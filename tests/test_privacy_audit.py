"""Statistical privacy audit of the implemented voting + noise mechanism.

These tests exercise the *implementation* (``pe_lightning.voting.assign_votes``,
``vote_histogram`` and ``add_gaussian_noise``), not only the accountant's formula:

* Two neighbouring private sets under the add/remove-one relation of DESIGN.md
  (``D`` and ``D' = D + {x*}``) are voted on with fixed synthetic embeddings; the extra
  sample ``x*`` votes for a known synthetic bin.
* The noisy histogram of each set is released many times (seeded generators, noise
  drawn in batches by the real ``add_gaussian_noise``) and a threshold distinguisher on
  the differing bin (the likelihood-ratio test, since all other bins are identically
  distributed) tries to tell the two sets apart.
* Clopper-Pearson upper bounds on its false positive / false negative rates give a
  high-confidence empirical *lower* bound on epsilon at the given delta
  (``eps >= log((1 - delta - FNR) / FPR)`` and the symmetric bound), which must stay
  below ``pe_lightning.privacy.epsilon`` for the same noise multiplier, and must be a
  sizeable fraction of it (the audit has power).
* A negative control (noise a third of the claimed sigma) shows the audit can fail.

All randomness comes from seeded ``torch.Generator`` objects: the outcome is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta

from pe_lightning import privacy
from pe_lightning.voting import add_gaussian_noise, assign_votes, vote_histogram

DELTA = 1e-5
SIGMA = 2.0  # claim at T=1, delta=1e-5: epsilon ~= 1.99
CONFIDENCE = 0.95  # joint confidence of every Clopper-Pearson bound used in one audit
NUM_THRESHOLDS = 61


# ------------------------------------------------------------------ neighbouring sets
def _synthetic(num_classes: int = 2, per_class: int = 6, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed, well-separated synthetic embeddings: class c, sample j at 10*(c*per_class+j)*e_0."""
    n = num_classes * per_class
    emb = torch.zeros(n, dim, dtype=torch.float32)
    emb[:, 0] = 10.0 * torch.arange(n, dtype=torch.float32)
    emb[:, 1] = torch.arange(n, dtype=torch.float32) % 3  # not collinear; irrelevant to votes
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return emb, labels


def _neighbouring_sets(*, target: int, k: int = 1):
    """``(D, D')`` with ``D' = D + {x*}``; ``x*`` sits on synthetic sample ``target``.

    Returns:
        ``(hist_D, hist_D', syn_emb, syn_labels, priv_emb, priv_labels, x_emb, x_label)``.
    """
    syn_emb, syn_labels = _synthetic()
    gen = torch.Generator().manual_seed(1234)
    n_priv = 40
    # Private samples scattered over the synthetic range (both classes).
    priv_emb = torch.zeros(n_priv, syn_emb.shape[1])
    priv_emb[:, 0] = torch.rand(n_priv, generator=gen) * float(syn_emb[:, 0].max())
    priv_labels = torch.randint(0, 2, (n_priv,), generator=gen)
    x_emb = syn_emb[target : target + 1].clone()
    x_emb[0, 0] += 0.1  # nearest to `target`, then its class neighbours
    x_label = syn_labels[target : target + 1].clone()

    def hist(p_emb, p_lab):
        a = assign_votes(
            private_embeddings=p_emb,
            private_labels=p_lab,
            synthetic_embeddings=syn_emb,
            synthetic_labels=syn_labels,
            k=k,
            backend="torch",
        )
        return vote_histogram(a, num_synthetic=len(syn_emb))

    h0 = hist(priv_emb, priv_labels)
    h1 = hist(torch.cat([priv_emb, x_emb]), torch.cat([priv_labels, x_label]))
    return h0, h1, syn_emb, syn_labels, priv_emb, priv_labels, x_emb, x_label


def _release(histogram: torch.Tensor, *, noise_multiplier: float, trials: int, seed: int) -> torch.Tensor:
    """``trials`` independent releases of the noisy histogram, via the real ``add_gaussian_noise``.

    The histogram is deterministic given the data, so the trials are one batched call on a
    ``(trials, N)`` stack of copies (each row gets its own N(0, sigma^2 I) noise).
    """
    gen = torch.Generator().manual_seed(seed)
    stacked = histogram.unsqueeze(0).expand(trials, -1).contiguous()
    return add_gaussian_noise(stacked, noise_multiplier=noise_multiplier, generator=gen)


# ------------------------------------------------------------------ the estimator
def _cp_upper(successes: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at level ``1 - alpha``."""
    successes = np.asarray(successes, dtype=np.float64)
    upper = beta.ppf(1.0 - alpha, successes + 1.0, n - successes)
    return np.where(successes >= n, 1.0, upper)


def empirical_epsilon_lower_bound(stat0: np.ndarray, stat1: np.ndarray, *, delta: float) -> float:
    """High-confidence lower bound on epsilon from a threshold distinguisher.

    ``stat0`` are the statistic's values on ``D``, ``stat1`` on ``D'`` (larger means
    "``D'``"). For each threshold ``t`` of a fixed grid, the test "say ``D'`` iff stat > t"
    has ``FPR = P_D(stat > t)`` and ``FNR = P_D'(stat <= t)``; (eps, delta)-DP implies
    ``eps >= log((1 - delta - FNR) / FPR)`` and ``eps >= log((1 - delta - FPR) / FNR)``.
    FPR and FNR are replaced by Clopper-Pearson upper bounds, Bonferroni-corrected over
    all ``2 * NUM_THRESHOLDS`` rates so the returned maximum holds with joint
    probability >= ``CONFIDENCE``.
    """
    n0, n1 = len(stat0), len(stat1)
    lo = min(np.quantile(stat0, 0.001), np.quantile(stat1, 0.001))
    hi = max(np.quantile(stat0, 0.999), np.quantile(stat1, 0.999))
    thresholds = np.linspace(lo, hi, NUM_THRESHOLDS)
    s0, s1 = np.sort(stat0), np.sort(stat1)
    fp = n0 - np.searchsorted(s0, thresholds, side="right")  # stat0 > t
    fn = np.searchsorted(s1, thresholds, side="right")  # stat1 <= t
    alpha = (1.0 - CONFIDENCE) / (2 * NUM_THRESHOLDS)
    fpr_up = _cp_upper(fp, n0, alpha)
    fnr_up = _cp_upper(fn, n1, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1.0 - delta - fnr_up, 0.0, None) / fpr_up)
        b = np.log(np.clip(1.0 - delta - fpr_up, 0.0, None) / fnr_up)
    best = np.nanmax(np.concatenate([a, b]))
    return float(max(best, 0.0))


def _audit(*, sigma_used: float, iterations: int, trials: int, seed: int, k: int = 1) -> float:
    """Empirical epsilon lower bound of ``iterations`` releases with noise ``sigma_used``.

    The statistic is the sum over iterations of the noisy counts of the bins ``x*`` votes
    for (with ``k=1`` one bin; the likelihood-ratio statistic for these Gaussians).
    """
    target = 3
    h0, h1, *_ = _neighbouring_sets(target=target, k=k)
    diff = torch.nonzero(h1 != h0).flatten()
    stats = []
    for which, h in enumerate((h0, h1)):
        total = torch.zeros(trials, dtype=torch.float64)
        for t in range(iterations):
            noisy = _release(h, noise_multiplier=sigma_used, trials=trials, seed=seed + 1000 * which + t)
            total += noisy[:, diff].sum(dim=1)
        stats.append(total.numpy())
    return empirical_epsilon_lower_bound(stats[0], stats[1], delta=DELTA)


# ------------------------------------------------------------------ sensitivity
@pytest.mark.parametrize("k", [1, 2, 3])
def test_histogram_l2_sensitivity_at_most_one(k: int) -> None:
    """Adding/removing any one private sample moves the histogram by L2 norm exactly 1."""
    h0, h1, syn_emb, syn_labels, priv_emb, priv_labels, _, _ = _neighbouring_sets(target=3, k=k)
    diff = h1 - h0
    assert torch.linalg.vector_norm(diff).item() == pytest.approx(1.0, abs=1e-12)
    # The extra sample votes k times (1/sqrt(k) each), only for synthetic samples of its class.
    assert int((diff != 0).sum()) == k
    assert torch.allclose(diff[diff != 0], torch.full((k,), 1.0 / math.sqrt(k), dtype=torch.float64))
    assert set(syn_labels[diff != 0].tolist()) == {int(syn_labels[3])}
    # Remove each private sample of D in turn: every neighbour is within L2 distance 1.
    def hist(mask):
        a = assign_votes(
            private_embeddings=priv_emb[mask],
            private_labels=priv_labels[mask],
            synthetic_embeddings=syn_emb,
            synthetic_labels=syn_labels,
            k=k,
            backend="torch",
        )
        return vote_histogram(a, num_synthetic=len(syn_emb))

    full = hist(torch.ones(len(priv_emb), dtype=torch.bool))
    assert torch.equal(full, h0)
    for i in range(len(priv_emb)):
        mask = torch.ones(len(priv_emb), dtype=torch.bool)
        mask[i] = False
        norm = torch.linalg.vector_norm(full - hist(mask)).item()
        assert norm <= 1.0 + 1e-12, (i, norm)


# ------------------------------------------------------------------ the noise itself
def test_noise_distribution_matches_sigma() -> None:
    """1e6 draws of add_gaussian_noise: mean ~ 0, std within 1% of sigma, histogram kept."""
    sigma = 3.7
    hist = torch.zeros(1_000_000, dtype=torch.float64)
    hist[::2] = 5.0
    noisy = add_gaussian_noise(hist, noise_multiplier=sigma, generator=torch.Generator().manual_seed(7))
    noise = noisy - hist
    assert noisy.dtype == torch.float64 and noisy.shape == hist.shape
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(n)
    assert noise.std().item() == pytest.approx(sigma, rel=0.01)
    # Rough Gaussianity: ~68.27% within one sigma, ~95.45% within two.
    within1 = (noise.abs() <= sigma).double().mean().item()
    within2 = (noise.abs() <= 2 * sigma).double().mean().item()
    assert within1 == pytest.approx(0.6827, abs=0.005)
    assert within2 == pytest.approx(0.9545, abs=0.003)
    # Same seed, same noise (invariant 2: reproducible on every rank).
    again = add_gaussian_noise(hist, noise_multiplier=sigma, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noisy, again)


# ------------------------------------------------------------------ the audits
def test_audit_single_iteration_within_claim_and_has_power() -> None:
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    assert 1.5 < claim < 2.5
    lb = _audit(sigma_used=SIGMA, iterations=1, trials=200_000, seed=0)
    assert lb <= claim, f"empirical epsilon lower bound {lb:.3f} exceeds the accountant's claim {claim:.3f}"
    assert lb > 0.3 * claim, f"audit has no power: lower bound {lb:.3f} vs claim {claim:.3f}"


def test_audit_multiple_votes_per_sample_within_claim() -> None:
    """num_nearest_neighbors=4: x* moves 4 bins by 1/2; the best test sums them."""
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma_used=SIGMA, iterations=1, trials=200_000, seed=10, k=4)
    assert 0.3 * claim < lb <= claim, (lb, claim)


def test_audit_composed_iterations_within_claim() -> None:
    """T independent noisy releases; the sum of the differing bin's counts is the LR statistic."""
    iterations, sigma = 4, 2.0 * SIGMA  # same mu = sqrt(T)/sigma as the single iteration
    claim = privacy.epsilon(noise_multiplier=sigma, iterations=iterations, delta=DELTA)
    lb = _audit(sigma_used=sigma, iterations=iterations, trials=100_000, seed=20)
    assert lb <= claim, f"T={iterations}: empirical lower bound {lb:.3f} exceeds the claim {claim:.3f}"
    assert lb > 0.3 * claim, f"T={iterations}: audit has no power ({lb:.3f} vs claim {claim:.3f})"


def test_audit_detects_broken_mechanism() -> None:
    """Negative control: noise of sigma/3 while claiming sigma is caught by the audit."""
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma_used=SIGMA / 3, iterations=1, trials=200_000, seed=30)
    assert lb > claim, f"broken mechanism not detected: lower bound {lb:.3f} vs claim {claim:.3f}"


def test_audit_detects_doubled_sensitivity() -> None:
    """Negative control: a histogram whose differing bin moves by 2 (e.g. a sample voting twice)."""
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    h0, h1, *_ = _neighbouring_sets(target=3, k=1)
    broken = h0 + 2.0 * (h1 - h0)
    diff = torch.nonzero(h1 != h0).flatten()
    s0 = _release(h0, noise_multiplier=SIGMA, trials=200_000, seed=40)[:, diff].sum(1).numpy()
    s1 = _release(broken, noise_multiplier=SIGMA, trials=200_000, seed=41)[:, diff].sum(1).numpy()
    lb = empirical_epsilon_lower_bound(s0, s1, delta=DELTA)
    assert lb > claim, (lb, claim)
