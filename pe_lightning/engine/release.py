"""The DP release of one PE iteration: combined votes in, only noisy quantities out.

This is the one place where private data (the votes) meets the noise. The module, the
privacy audit and the plain-loop benchmark all call these functions, so what is audited
is what runs.

Neighbouring relation: add/remove one private sample. Each private sample casts ``k``
votes of weight ``1/sqrt(k)`` for synthetic samples of its own class, so the vote
histogram has L2 sensitivity 1 and :func:`release_histogram` is the Gaussian mechanism
with noise multiplier ``sigma`` (accounted by :mod:`pe_lightning.privacy`). Thresholding
and everything after it are post-processing. With the tone release
(:mod:`pe_lightning.engine.tone`) the last iteration releases the vote histogram and the private
peak-level counts as one vector of L2 sensitivity 1, through the same mechanism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from pe_lightning.engine.selection import select_parents
from pe_lightning.engine.tone import joint_histogram, split_release, tone_weights
from pe_lightning.noise import NoiseKey, standard_normal
from pe_lightning.voting import vote_histogram

__all__ = [
    "NoisyRelease",
    "add_gaussian_noise",
    "apply_threshold",
    "combine_assignments",
    "release_and_select",
    "release_histogram",
]


@dataclass(frozen=True)
class NoisyRelease:
    """What leaves the DP release of one iteration (only noisy quantities).

    Attributes:
        noisy_counts: float64 ``(..., N)``: vote histogram + Gaussian noise.
        weights: float64 ``(..., N)``: ``max(noisy_counts - threshold, 0)``, the
            selection weights (post-processing).
        parents: int64 ``(P,)``: the selected parents, grouped by class
            (:func:`release_and_select`; post-processing), else ``None``.
        tone_counts: float64 ``(bins,)``: the noisy private peak-level counts of a release that
            carried them (:mod:`pe_lightning.engine.tone`), in counts, else ``None``.
        tone_weights: float64 ``(bins,)``: those counts above their threshold
            (:func:`pe_lightning.engine.tone.tone_weights`; post-processing), else ``None``.
        vote_noise: the noise std per vote bin in votes: ``sigma``, or ``sigma / sqrt(1 - tone_share)``
            when the release carried the peak counts.
    """

    noisy_counts: torch.Tensor
    weights: torch.Tensor
    parents: torch.Tensor | None = None
    tone_counts: torch.Tensor | None = None
    tone_weights: np.ndarray | None = None
    vote_noise: float | None = None


def combine_assignments(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """One vote row per private sample from every rank's partial ``(M, k)`` assignments.

    A rank fills the rows of the private samples it saw and leaves ``-1`` elsewhere; a
    sample seen by two ranks (a padded ``DistributedSampler``) has the same row on both.
    The element-wise maximum therefore gives each sample's votes exactly once.

    Raises:
        RuntimeError: when some private sample voted on no rank.
    """
    if not parts:
        raise ValueError("combine_assignments needs at least one rank's assignments")
    combined = parts[0] if len(parts) == 1 else torch.stack(list(parts)).max(dim=0).values
    missing = int((combined < 0).any(dim=1).sum())
    if missing:
        raise RuntimeError(f"{missing} private samples did not vote")
    return combined


def add_gaussian_noise(
    histogram: torch.Tensor, *, noise_multiplier: float, key: NoiseKey, iteration: int, stream: str = ""
) -> torch.Tensor:
    """``histogram + N(0, noise_multiplier^2 I)``, the noise keyed by the run's secret (float64).

    With L2 sensitivity 1 (add/remove one private sample, or one client) this is the
    Gaussian mechanism whose privacy :mod:`pe_lightning.privacy` accounts for. The noise is
    :func:`pe_lightning.noise.standard_normal` of ``(key, iteration, histogram.shape)``:
    unpredictable without the key, identical on every rank that holds it; it never comes
    from the public seed. Leading dimensions of ``histogram`` are independent releases
    (the privacy audit batches trials this way). ``noise_multiplier=0`` adds nothing (not private).
    ``stream`` names a further independent draw of the iteration (:func:`~pe_lightning.noise.standard_normal`).

    Args:
        histogram: vote counts ``(..., N)``.
        noise_multiplier: ``sigma``, noise std in units of the sensitivity, finite and ``>= 0``.
        key: the run's :class:`~pe_lightning.noise.NoiseKey`.
        iteration: the PE iteration (1-based) this release belongs to.
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    noise = torch.from_numpy(standard_normal(key, iteration=iteration, shape=tuple(histogram.shape), stream=stream))
    return histogram.to(torch.float64) + noise_multiplier * noise.to(histogram.device)


def apply_threshold(noisy: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """``max(noisy - threshold, 0)`` (post-processing)."""
    return torch.clamp(noisy - threshold, min=0.0)


def release_histogram(
    histogram: torch.Tensor, *, noise_multiplier: float, threshold: float, key: NoiseKey, iteration: int
) -> NoisyRelease:
    """The Gaussian mechanism on a vote histogram, then the threshold.

    Args:
        histogram: vote counts ``(N,)`` from :func:`pe_lightning.voting.vote_histogram`
            (L2 sensitivity 1). Leading dimensions ``(B, N)`` are ``B`` independent
            releases (the privacy audit batches its trials this way).
        noise_multiplier: ``sigma``, the noise std per bin in units of the sensitivity.
        threshold: ``H``, subtracted from the noisy counts before clipping at 0.
        key: the run's noise key (secret by default, see :mod:`pe_lightning.noise`).
        iteration: the 1-based PE iteration; each iteration draws independent noise.
    """
    noisy = add_gaussian_noise(histogram, noise_multiplier=noise_multiplier, key=key, iteration=iteration)
    return NoisyRelease(noisy_counts=noisy, weights=apply_threshold(noisy, threshold=threshold))


def release_and_select(
    assignments: torch.Tensor,
    *,
    labels: torch.Tensor,
    num_parents_per_class: Sequence[int],
    selection: str,
    generator: torch.Generator,
    class_names: Sequence[str],
    noise_multiplier: float,
    threshold: float,
    key: NoiseKey,
    iteration: int,
    clients: torch.Tensor | None = None,
    tone_peaks: np.ndarray | None = None,
    tone_bins: int = 32,
    tone_share: float = 0.0,
) -> NoisyRelease:
    """One iteration's whole DP step: votes in; noisy counts, weights and parents out.

    :func:`release_histogram` of the vote histogram (the Gaussian mechanism, L2 sensitivity 1
    per sample, or per client with ``clients``; neighbours: add/remove one sample or
    client), then :func:`pe_lightning.engine.selection.select_parents` on the thresholded noisy
    counts. The selection reads only noisy quantities and public configuration, so it is
    post-processing; the raw histogram never leaves this function.

    Args:
        assignments: combined ``(M, k)`` votes (:func:`combine_assignments`).
        labels: ``(N,)`` class of each synthetic sample.
        num_parents_per_class: parents to select in each class.
        selection: a strategy name of :mod:`pe_lightning.engine.selection`.
        generator: the public selection stream.
        class_names: for error messages.
        noise_multiplier, threshold, key, iteration: as in :func:`release_histogram`.
        clients: one client id per private sample (``privacy_unit='client'``): each client's
            vote vector is scaled to L2 norm 1 (:func:`pe_lightning.voting.vote_histogram`).
        tone_peaks: int64 ``(M,)`` peak bin of each private sample
            (:func:`pe_lightning.engine.tone.peak_bins`): this release also carries the peak
            counts, as :func:`pe_lightning.engine.tone.joint_histogram` (sample level only).
        tone_bins, tone_share: the peak bins and their share ``b^2`` of the release.
    """
    histogram = vote_histogram(assignments, num_synthetic=len(labels), clients=clients)
    tone_counts, kept_tone, vote_noise = None, None, float(noise_multiplier)
    if tone_peaks is None:
        released = release_histogram(histogram, noise_multiplier=noise_multiplier, threshold=threshold, key=key, iteration=iteration)
        noisy, weights = released.noisy_counts, released.weights
    else:
        if clients is not None:
            raise ValueError("the tone release is sample level only: it cannot be combined with client-level votes")
        # One Gaussian mechanism on the joint vector: its vote part draws the noise a release without the
        # tone release draws (so runs with and without it are paired noise for noise), its peak part an
        # independent stream of the same key.
        joint = joint_histogram(histogram, tone_peaks, bins=tone_bins, share=tone_share)
        noisy_joint = torch.cat([
            add_gaussian_noise(joint[:-tone_bins], noise_multiplier=noise_multiplier, key=key, iteration=iteration),
            add_gaussian_noise(joint[-tone_bins:], noise_multiplier=noise_multiplier, key=key, iteration=iteration, stream="tone"),
        ])
        noisy, tone_counts = split_release(noisy_joint, bins=tone_bins, share=tone_share)
        weights = apply_threshold(noisy, threshold=threshold)
        kept_tone = tone_weights(tone_counts, noise_std=float(noise_multiplier) / math.sqrt(tone_share))
        vote_noise = float(noise_multiplier) / math.sqrt(1.0 - tone_share)
    parents = select_parents(
        weights=weights, labels=labels, num_per_class=list(num_parents_per_class),
        generator=generator, class_names=list(class_names), mode=selection,
    )
    return NoisyRelease(noisy_counts=noisy, weights=weights, parents=parents, tone_counts=tone_counts,
                        tone_weights=kept_tone, vote_noise=vote_noise)
