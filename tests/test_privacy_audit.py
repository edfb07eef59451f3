"""Statistical privacy audit of the implemented mechanism: votes, combination across ranks, keyed noise.

The audit runs the module's own DP path, not a re-implementation of it:

* votes: :func:`pe_lightning.voting.assign_votes` with the module's default search
  backend (``PrivateEvolution(search_backend="auto")``, faiss on the CPU);
* combination: :func:`pe_lightning.engine.release.combine_assignments`, with the private set
  split over two simulated ranks whose padded sampler sees one sample twice, as under DDP;
* histogram and noise: :func:`pe_lightning.voting.vote_histogram` and
  :func:`pe_lightning.engine.release.release_histogram` with a :class:`~pe_lightning.noise.NoiseKey`
  of the module's secret mode (a fixed key so the test is deterministic; the secret
  mode's keys only differ in where their bytes come from).

Two neighbouring private sets under add/remove-one (``D`` and ``D' = D + {x*}``) are
released many times (leading dimensions of ``release_histogram`` are independent
releases). The statistic is the sum of the noisy counts of the bins ``x*`` votes for,
summed over iterations (the likelihood-ratio statistic for these Gaussians). A threshold
test on it is chosen on one sample; on a second, independent sample Clopper-Pearson upper
bounds on its false positive / negative rates give a lower bound on epsilon at delta that
holds with probability >= 95 %: ``eps >= log((1 - delta - FNR) / FPR)`` (or the mirrored
test). It must stay below the accountant's claim for the sigma used, and must be a
sizeable part of it (60 %; 1,000,000 trials per sample). With 4,000,000 trials per sample,
noise 1.3 times too small fails (measured: bound 2.90-2.98 against the claim 2.75 at sigma 1.5): the broken-mechanism cases patch real library code (the
noise sampler's scale, the vote weight), not the test's inputs.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy.stats import beta

import pe_lightning.engine.release as release
import pe_lightning.voting as voting
from pe_lightning import PrivateEvolution, privacy
from pe_lightning.noise import NoiseKey
from pe_lightning.engine.release import combine_assignments, release_histogram
from pe_lightning.voting import assign_votes, vote_histogram

DELTA = 1e-5
SIGMA = 1.5  # claim at T=1, delta=1e-5: epsilon ~= 2.75
CONFIDENCE = 0.95  # joint confidence of the two Clopper-Pearson bounds of one audit
TRIALS = 4_000_000  # releases per hypothesis and per sample (selection, estimation) when catching 1.3x
HONEST_TRIALS = 1_000_000  # enough for the within-claim and power checks
CHUNK = 250_000  # releases per release_histogram call (bounded memory)
BACKEND = PrivateEvolution.__init__.__kwdefaults__["search_backend"]  # the module's default ("auto")
MIN_EVENTS = 30  # a threshold must leave at least this many false positives in the selection sample


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
            backend=BACKEND,
        )
        return vote_histogram(a, num_synthetic=len(syn_emb))

    h0 = hist(priv_emb, priv_labels)
    h1 = hist(torch.cat([priv_emb, x_emb]), torch.cat([priv_labels, x_label]))
    return h0, h1, syn_emb, syn_labels, priv_emb, priv_labels, x_emb, x_label


def _key(*labels) -> NoiseKey:
    """A fixed secret-mode key per (hypothesis, sample, chunk): independent, deterministic noise."""
    return NoiseKey(secret=hashlib.sha256("audit/".join(map(str, labels)).encode()).digest(), mode="secret")


def _combined_votes(p_emb, p_lab, syn_emb, syn_labels, *, k: int) -> torch.Tensor:
    """Votes through the module's path on two simulated ranks (rank 1 re-sees rank 0's first sample)."""
    m = len(p_emb)
    split = m // 2
    parts = []
    for rows in (torch.arange(0, split), torch.cat([torch.arange(split, m), torch.arange(0, 1)])):
        part = torch.full((m, k), -1, dtype=torch.int64)
        part[rows] = assign_votes(
            private_embeddings=p_emb[rows], private_labels=p_lab[rows], synthetic_embeddings=syn_emb,
            synthetic_labels=syn_labels, k=k, backend=BACKEND,
        )
        parts.append(part)
    return combine_assignments(parts)


def _statistic(histogram: torch.Tensor, direction: torch.Tensor, *, sigma: float, iterations: int, trials: int, labels) -> np.ndarray:
    """Sum over iterations of ``<noisy histogram, direction>`` (the LR statistic), for ``trials`` runs."""
    total = np.zeros(trials)
    for start in range(0, trials, CHUNK):
        n = min(CHUNK, trials - start)
        batch = histogram.unsqueeze(0).expand(n, -1)
        for t in range(1, iterations + 1):
            released = release_histogram(batch, noise_multiplier=sigma, threshold=0.0, key=_key(*labels, start), iteration=t)
            total[start : start + n] += (released.noisy_counts @ direction).numpy()
    return total


def _cp_upper(successes: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound at level ``1 - alpha``."""
    return 1.0 if successes >= n else float(beta.ppf(1.0 - alpha, successes + 1.0, n - successes))


def _choose_test(stat0: np.ndarray, stat1: np.ndarray, *, delta: float) -> tuple[float, int]:
    """The threshold and direction (+1: "D' iff stat > t", -1: mirrored) with the largest point estimate."""
    best, choice = -math.inf, (0.0, 1)
    s0, s1 = np.sort(stat0), np.sort(stat1)
    n0, n1 = len(s0), len(s1)
    for t in np.quantile(np.concatenate([s0, s1]), np.linspace(0.001, 0.999, 999)):
        fp, fn = n0 - np.searchsorted(s0, t, side="right"), np.searchsorted(s1, t, side="right")
        for direction, (a, b, na, nb) in ((1, (fp, fn, n0, n1)), (-1, (fn, fp, n1, n0))):
            if a >= MIN_EVENTS:
                est = math.log(max(1.0 - delta - b / nb, 1e-300) / (a / na))
                if est > best:
                    best, choice = est, (float(t), direction)
    return choice


def empirical_epsilon_lower_bound(select: tuple[np.ndarray, np.ndarray], estimate: tuple[np.ndarray, np.ndarray], *, delta: float) -> float:
    """A lower bound on epsilon (probability >= CONFIDENCE) from a test chosen on ``select``, measured on ``estimate``."""
    t, direction = _choose_test(*select, delta=delta)
    stat0, stat1 = estimate
    fp, fn = int((stat0 > t).sum()), int((stat1 <= t).sum())
    if direction == -1:  # "D iff stat > t": the roles of the two error rates swap
        fp, fn, n_fp, n_fn = fn, fp, len(stat1), len(stat0)
    else:
        n_fp, n_fn = len(stat0), len(stat1)
    alpha = (1.0 - CONFIDENCE) / 2
    fpr, fnr = _cp_upper(fp, n_fp, alpha), _cp_upper(fn, n_fn, alpha)
    return max(0.0, math.log(max(1.0 - delta - fnr, 1e-300) / fpr))


def _audit(*, sigma: float, iterations: int = 1, k: int = 1, trials: int = TRIALS, tag: str = "") -> float:
    """Empirical epsilon lower bound of ``iterations`` releases of the module's path with noise ``sigma``."""
    h0, h1, syn_emb, syn_labels, priv_emb, priv_labels, x_emb, x_label = _neighbouring_sets(target=3, k=k)
    # Re-vote through the two-rank combination (the histograms must not depend on it).
    a0 = _combined_votes(priv_emb, priv_labels, syn_emb, syn_labels, k=k)
    a1 = _combined_votes(torch.cat([priv_emb, x_emb]), torch.cat([priv_labels, x_label]), syn_emb, syn_labels, k=k)
    h0c, h1c = vote_histogram(a0, num_synthetic=len(syn_emb)), vote_histogram(a1, num_synthetic=len(syn_emb))
    return _audit_histograms(h0c, h1c, sigma=sigma, iterations=iterations, trials=trials, labels=(tag, k, iterations))


def _audit_histograms(h0: torch.Tensor, h1: torch.Tensor, *, sigma: float, iterations: int, trials: int, labels) -> float:
    """The epsilon lower bound for releasing ``h0`` vs ``h1`` through ``release_histogram``."""
    direction = h1 - h0
    samples = {
        (which, part): _statistic(h, direction, sigma=sigma, iterations=iterations, trials=trials, labels=(*labels, which, part))
        for which, h in ((0, h0), (1, h1))
        for part in ("select", "estimate")
    }
    return empirical_epsilon_lower_bound(
        (samples[0, "select"], samples[1, "select"]), (samples[0, "estimate"], samples[1, "estimate"]), delta=DELTA
    )


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
            backend=BACKEND,
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
def test_noise_distribution_matches_sigma_in_secret_mode() -> None:
    """1e6 draws with a fresh secret key: mean ~ 0, std within 1 % of sigma, Gaussian mass, histogram kept."""
    sigma = 3.7
    hist = torch.zeros(1_000_000, dtype=torch.float64)
    hist[::2] = 5.0
    key = NoiseKey.generate()
    noisy = release_histogram(hist, noise_multiplier=sigma, threshold=0.0, key=key, iteration=1).noisy_counts
    noise = noisy - hist
    assert noisy.dtype == torch.float64 and noisy.shape == hist.shape
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(n)
    assert noise.std().item() == pytest.approx(sigma, rel=0.01)
    within1 = (noise.abs() <= sigma).double().mean().item()
    within2 = (noise.abs() <= 2 * sigma).double().mean().item()
    assert within1 == pytest.approx(0.6827, abs=0.005)
    assert within2 == pytest.approx(0.9545, abs=0.003)
    # The same key and iteration give the same noise (every rank); nothing else does.
    again = release_histogram(hist, noise_multiplier=sigma, threshold=0.0, key=key, iteration=1).noisy_counts
    assert torch.equal(noisy, again)


def test_combination_counts_a_padded_duplicate_once() -> None:
    h0, _, syn_emb, syn_labels, priv_emb, priv_labels, _, _ = _neighbouring_sets(target=3)
    combined = _combined_votes(priv_emb, priv_labels, syn_emb, syn_labels, k=1)
    assert torch.equal(vote_histogram(combined, num_synthetic=len(syn_emb)), h0)


# ------------------------------------------------------------------ the audits
slow_audit = pytest.mark.slow


@slow_audit
def test_audit_single_iteration_within_claim_and_has_power() -> None:
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    assert 2.5 < claim < 3.0
    lb = _audit(sigma=SIGMA, trials=HONEST_TRIALS)
    assert lb <= claim, f"empirical epsilon lower bound {lb:.3f} exceeds the accountant's claim {claim:.3f}"
    assert lb > 0.6 * claim, f"audit has no power: lower bound {lb:.3f} vs claim {claim:.3f}"


@slow_audit
def test_audit_multiple_votes_per_sample_within_claim() -> None:
    """num_nearest_neighbors=4: x* moves 4 bins by 1/2; the best test sums them."""
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma=SIGMA, k=4, trials=HONEST_TRIALS)
    assert 0.6 * claim < lb <= claim, (lb, claim)


@slow_audit
def test_audit_composed_iterations_within_claim() -> None:
    """T = 4 releases (noise keyed per iteration); the sum of the differing bin's counts is the LR statistic."""
    iterations, sigma = 4, 2.0 * SIGMA  # the same mu = sqrt(T)/sigma as one iteration at SIGMA
    claim = privacy.epsilon(noise_multiplier=sigma, iterations=iterations, delta=DELTA)
    lb = _audit(sigma=sigma, iterations=iterations, trials=HONEST_TRIALS)
    assert lb <= claim, f"T={iterations}: empirical lower bound {lb:.3f} exceeds the claim {claim:.3f}"
    assert lb > 0.6 * claim, f"T={iterations}: audit has no power ({lb:.3f} vs claim {claim:.3f})"


@slow_audit
def test_audit_catches_noise_1_3_times_too_small_in_the_sampler(monkeypatch) -> None:
    """Break the library's noise: the sampler the release uses returns N(0, 1/1.3^2)."""
    real = release.standard_normal
    monkeypatch.setattr(release, "standard_normal", lambda key, **kw: real(key, **kw) / 1.3)
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma=SIGMA, tag="small-noise")
    assert lb > claim, f"noise 1.3x too small not detected: lower bound {lb:.3f} vs claim {claim:.3f}"


@slow_audit
def test_audit_catches_a_vote_weight_1_3_times_too_large(monkeypatch) -> None:
    """Break the library's vote weight (sensitivity 1.3 instead of 1)."""
    real = voting.vote_weight
    monkeypatch.setattr(voting, "vote_weight", lambda k: 1.3 * real(k))
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma=SIGMA, tag="heavy-vote")
    assert lb > claim, f"sensitivity 1.3 not detected: lower bound {lb:.3f} vs claim {claim:.3f}"


@slow_audit
def test_audit_catches_k_votes_without_the_1_over_sqrt_k_weight(monkeypatch) -> None:
    """k = 4 votes of weight 1 each (sensitivity 2)."""
    monkeypatch.setattr(voting, "vote_weight", lambda k: 1.0)
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _audit(sigma=SIGMA, k=4, trials=HONEST_TRIALS, tag="unweighted")
    assert lb > claim, (lb, claim)


def _client_audit(*, trials: int, tag: str) -> float:
    """Client level: D' = D + one client holding 5 images (4 of them near the same synthetic sample)."""
    _, _, syn_emb, syn_labels, priv_emb, priv_labels, x_emb, x_label = _neighbouring_sets(target=3)
    client_emb = torch.cat([x_emb, x_emb, x_emb, syn_emb[4:5] + 0.1, x_emb])
    client_lab = x_label.repeat(5)
    clients0 = torch.arange(len(priv_emb))  # every other image is its own client
    clients1 = torch.cat([clients0, torch.full((5,), 1000)])

    def hist(p_emb, p_lab, clients):
        votes = _combined_votes(p_emb, p_lab, syn_emb, syn_labels, k=1)
        return vote_histogram(votes, num_synthetic=len(syn_emb), clients=clients)

    h0 = hist(priv_emb, priv_labels, clients0)
    h1 = hist(torch.cat([priv_emb, client_emb]), torch.cat([priv_labels, client_lab]), clients1)
    return _audit_histograms(h0, h1, sigma=SIGMA, iterations=1, trials=trials, labels=("client", tag))


@slow_audit
def test_audit_client_level_within_claim() -> None:
    """One client with five images: its scaled votes keep the histogram's sensitivity at 1."""
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _client_audit(trials=HONEST_TRIALS, tag="honest")
    assert 0.6 * claim < lb <= claim, (lb, claim)


@slow_audit
def test_audit_catches_client_votes_without_scaling(monkeypatch) -> None:
    """Break the library's client scaling (no normalisation): the client moves the histogram by sqrt(17)."""
    monkeypatch.setattr(voting, "client_scale", lambda norms: torch.ones_like(norms))
    claim = privacy.epsilon(noise_multiplier=SIGMA, iterations=1, delta=DELTA)
    lb = _client_audit(trials=HONEST_TRIALS, tag="unscaled")
    assert lb > claim, (lb, claim)
