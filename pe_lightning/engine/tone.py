"""The tone release: a DP histogram of the private images' peak gray levels, matched by the released images.

A vote on gradient orientations (HOG) does not see how bright the ink is, so the vote leaves
each synthetic image's tone where the API's prior put it (docs/results.md, fifth round). The
tone release measures it on the private side, inside the budget, and post-processes the final
population with it:

1. Each private image's *peak level* ``p_i`` is its brightest value over pixels and channels
   (0..255); ``p_i`` falls in one of ``bins`` equal bins of ``[0, 256)``.
2. The last iteration's release carries the peak histogram ``g`` beside the vote histogram
   ``h``: one Gaussian mechanism on ``(a h, b g)`` with ``a = sqrt(1 - share)`` and
   ``b = sqrt(share)`` (:func:`joint_histogram`). Neighbours (add/remove one private sample)
   differ by ``a`` times a vote vector of L2 norm 1 and ``b`` times a one-hot vector, so the
   joint vector has **L2 sensitivity sqrt(a^2 + b^2) = 1**: the mechanism, its noise
   multiplier and the accounting are those of any iteration. In count units the votes see
   noise ``sigma / a`` and the peak counts ``sigma / b`` (:func:`split_release`).
3. The noisy peak counts minus ``Q^{-1}(1 / bins)`` noise stds (one expected noise-only bin),
   clipped at 0, are the released tone distribution (:func:`tone_weights`).
4. Each image of the final population is rescaled about its darkest value so that its peak
   takes the released distribution's quantile at the image's own peak rank (:func:`match_tone`):
   post-processing of the release and of the synthetic images.

Everything after step 2 reads noisy counts and public images only. Client-level DP
(``privacy_unit: client``) is not supported: a client's images would add several one-hot
vectors (``EngineSettings`` refuses the combination).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from pe_lightning.validation import is_int

__all__ = ["check_tone_bins", "joint_histogram", "match_tone", "peak_bins", "split_release", "tone_threshold", "tone_weights"]

#: Gray levels of a uint8 image.
LEVELS = 256


def check_tone_bins(bins: int) -> int:
    """``bins`` as an int, or a ValueError naming ``tone_bins``: an integer in ``[2, 256]`` that divides 256."""
    if not (is_int(bins) and 2 <= bins <= LEVELS and LEVELS % bins == 0):
        raise ValueError(f"tone_bins must be an integer in [2, 256] dividing 256, got {bins!r}")
    return int(bins)


def _peaks(images: np.ndarray) -> np.ndarray:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
        raise ValueError(f"images must be uint8 (N, H, W, C), got {getattr(images, 'dtype', type(images))} "
                         f"of shape {getattr(images, 'shape', None)}")
    return images.reshape(len(images), -1).max(axis=1).astype(np.int64)


def peak_bins(images: np.ndarray, *, bins: int) -> np.ndarray:
    """Which of ``bins`` equal bins of ``[0, 256)`` holds each image's peak level (private side).

    Args:
        images: uint8 ``(N, H, W, C)``.
        bins: number of bins, dividing 256.

    Returns:
        int64 ``(N,)`` in ``[0, bins)``.
    """
    return _peaks(images) * check_tone_bins(bins) // LEVELS


def joint_histogram(votes: torch.Tensor, peaks: np.ndarray, *, bins: int, share: float) -> torch.Tensor:
    """``(sqrt(1 - share) * votes, sqrt(share) * peak counts)``: L2 sensitivity 1 (add/remove one sample).

    Args:
        votes: float64 ``(N,)`` vote histogram of L2 sensitivity 1 (sample level).
        peaks: int64 ``(M,)`` peak bin of each private sample (:func:`peak_bins`).
        bins: number of peak bins.
        share: ``b^2``, the part of the release's ``1 / sigma^2`` given to the peak counts, in ``(0, 1)``.

    Returns:
        float64 ``(N + bins,)``.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"tone_share must be in (0, 1), got {share}")
    counts = torch.bincount(torch.as_tensor(peaks, dtype=torch.int64), minlength=check_tone_bins(bins)).to(torch.float64)
    if len(counts) != bins:
        raise ValueError(f"peak bins must lie in [0, {bins}), got a maximum of {len(counts) - 1}")
    return torch.cat([votes.to(torch.float64) * math.sqrt(1.0 - share), counts * math.sqrt(share)])


def split_release(noisy: torch.Tensor, *, bins: int, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy joint vector back in count units: ``(votes / a, peak counts / b)``.

    The votes then carry noise ``sigma / sqrt(1 - share)`` per bin, the peak counts ``sigma / sqrt(share)``.
    """
    return noisy[:-bins] / math.sqrt(1.0 - share), noisy[-bins:] / math.sqrt(share)


def tone_threshold(*, bins: int, noise_std: float) -> float:
    """``Q^{-1}(1 / bins) * noise_std``: one expected noise-only bin among ``bins`` empty ones."""
    return NormalDist().inv_cdf(1.0 - 1.0 / check_tone_bins(bins)) * noise_std


def tone_weights(noisy_counts: torch.Tensor, *, noise_std: float) -> np.ndarray:
    """The released tone distribution (unnormalised): ``max(noisy - tone_threshold, 0)`` (post-processing).

    Args:
        noisy_counts: float64 ``(bins,)`` noisy peak counts in count units.
        noise_std: their noise std, ``sigma / sqrt(share)``.

    Returns:
        float64 ``(bins,)``, all zero when no bin clears the threshold.
    """
    bins = len(noisy_counts)
    threshold = tone_threshold(bins=bins, noise_std=noise_std)
    return np.clip(noisy_counts.detach().cpu().numpy().astype(np.float64) - threshold, 0.0, None)


def match_tone(images: np.ndarray, weights: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Rescale each image so that its peak follows the released tone distribution (post-processing).

    The images are ranked by peak level (ties by index); the image of rank ``r`` of ``N`` takes
    the target peak ``floor(F^{-1}((r + 1/2) / N))``, with ``F`` the distribution of ``weights``
    over the bins of ``[0, 256)`` (uniform within a bin): a gray level of the bin. Its values ``x`` become
    ``m + (x - m) (target - m) / (peak - m)`` with ``m`` its darkest value, rounded and clipped
    to 0..255: the background stays, the brightest value moves to the target. An image with
    ``peak == m`` (flat) or ``target <= m`` is left as it is; all-zero ``weights`` (nothing
    released above the threshold) leave every image as it is.

    Args:
        images: uint8 ``(N, H, W, C)``, synthetic.
        weights: float ``(bins,)``, :func:`tone_weights`.
        out: where to write the result (uint8, ``images``' shape; e.g. memory-mapped scratch
            storage for a large population); default a new array.

    Returns:
        uint8 ``(N, H, W, C)``: ``out``, or a new array.
    """
    weights = np.asarray(weights, dtype=np.float64)
    bins = check_tone_bins(len(weights))
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        raise ValueError("tone weights must be finite and >= 0")
    peaks = _peaks(images).astype(np.float64)
    if out is None:
        out = images.copy()
    elif out.shape != images.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape {images.shape}, got {out.dtype} of shape {out.shape}")
    else:
        np.copyto(out, images)
    if len(images) == 0 or weights.sum() == 0:
        return out
    ranks = np.empty(len(peaks), dtype=np.float64)
    ranks[np.argsort(peaks, kind="stable")] = np.arange(len(peaks))
    cdf = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    edges = np.linspace(0.0, float(LEVELS), bins + 1)
    targets = np.floor(np.interp((ranks + 0.5) / len(peaks), cdf, edges))  # a gray level inside its bin
    darkest = images.reshape(len(images), -1).min(axis=1).astype(np.float64)
    change = (peaks > darkest) & (targets > darkest)
    for i in np.flatnonzero(change):
        gain = (targets[i] - darkest[i]) / (peaks[i] - darkest[i])
        rescaled = darkest[i] + (images[i].astype(np.float64) - darkest[i]) * gain
        out[i] = np.clip(np.round(rescaled), 0, 255).astype(np.uint8)
    return out
