"""Differentially private nearest-neighbour voting (DESIGN.md section 1).

Neighbouring relation: two private sets differ by adding or removing one sample.
Each private sample casts votes for its ``k`` nearest synthetic samples *of its own
class*, each vote weighing ``1/sqrt(k)``; the histogram therefore has L2 sensitivity 1
(a single sample changes ``k`` bins by ``1/sqrt(k)`` each). Adding ``N(0, sigma^2)``
noise to every bin is the Gaussian mechanism with noise multiplier ``sigma``.
Thresholding, selection and everything after are post-processing.

Votes are stored as *assignments* (the synthetic index each private sample votes for),
one row per private sample, so a private sample seen twice (e.g. a padded
``DistributedSampler``) still votes exactly once.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "nearest_neighbors",
    "assign_votes",
    "vote_histogram",
    "add_gaussian_noise",
    "apply_threshold",
    "select_parents",
    "ZeroHistogramWarning",
]

BACKENDS = ("auto", "faiss", "torch")


class ZeroHistogramWarning(UserWarning):
    """All noisy counts of a class are zero after thresholding; selection falls back to uniform."""


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError(
            "search backend 'faiss' needs the faiss package: pip install faiss-cpu "
            "(or faiss-gpu on CUDA machines; see the README), or use backend='torch'"
        ) from err
    return faiss


def resolve_backend(backend: str) -> str:
    """``'auto'`` -> ``'faiss'`` when importable, else ``'torch'``; validates the name."""
    if backend not in BACKENDS:
        raise ValueError(f"search backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        try:
            _faiss()
            return "faiss"
        except ImportError:
            return "torch"
    return backend


#: Default bound on the torch backend's distance block: ``(rows, N)`` float32 scores.
DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20


def _rows_per_chunk(num_keys: int, chunk_size: int, max_chunk_bytes: int) -> int:
    """Queries per torch block: at most ``chunk_size``, and ``rows * num_keys * 4 <= max_chunk_bytes`` (>= 1 row)."""
    return max(1, min(chunk_size, max_chunk_bytes // (4 * max(num_keys, 1))))


def _torch_knn(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk_size: int, max_chunk_bytes: int) -> torch.Tensor:
    keys = keys.to(queries.device)
    rows = _rows_per_chunk(len(keys), chunk_size, max_chunk_bytes)
    # ||x||^2 of the keys, a block at a time (``keys * keys`` at once would copy all keys).
    key_sq = torch.cat([(block * block).sum(1) for block in keys.split(rows)])
    key_sq = key_sq[None, :]
    out = []
    for start in range(0, len(queries), rows):
        q = queries[start : start + rows]
        # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; ||q||^2 is constant per row, so drop it.
        # One (rows, N) block per step: addmm writes ||x||^2 - 2 q.x without a second temporary.
        dist = torch.addmm(key_sq, q, keys.T, alpha=-2.0)
        out.append(torch.topk(dist, k, dim=1, largest=False, sorted=True).indices)
        del dist
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64, device=queries.device)


_GPU_RESOURCES: dict[int, object] = {}


def _faiss_gpu_resources(faiss, device_index: int):
    """One ``StandardGpuResources`` per GPU and process (creating one reserves scratch memory)."""
    if device_index not in _GPU_RESOURCES:
        _GPU_RESOURCES[device_index] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device_index]


def _faiss_knn(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    faiss = _faiss()
    xq = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
    xb = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
    if keys.is_cuda and hasattr(faiss, "StandardGpuResources"):
        device_index = keys.device.index or 0
        index = faiss.index_cpu_to_gpu(_faiss_gpu_resources(faiss, device_index), device_index, faiss.IndexFlatL2(keys.shape[1]))
        index.add(xb)
        _, idx = index.search(xq, k)
    else:
        # Exact brute-force search straight on the key array (the same kernel as
        # IndexFlatL2.search, without copying the keys into an index first).
        _, idx = faiss.knn(xq, xb, k)
    return torch.from_numpy(idx.astype(np.int64)).to(queries.device)


def nearest_neighbors(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    k: int = 1,
    backend: str = "auto",
    chunk_size: int = 4096,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """Exact L2 ``k``-nearest keys of each query.

    Args:
        queries: float ``(M, D)``.
        keys: float ``(N, D)`` with ``N >= k``.
        k: neighbours per query.
        backend: ``'faiss'`` (exact brute force; a GPU flat index when faiss-gpu and CUDA
            tensors), ``'torch'`` (blocked matrix products on the tensors' device), or ``'auto'``.
        chunk_size: at most this many queries per torch block.
        max_chunk_bytes: torch backend: each block of queries is also small enough that
            its ``(rows, N)`` float32 distance block fits in this many bytes (at least one
            row per block), so extra memory stays bounded (``M x N`` is never materialised).

    Returns:
        int64 ``(M, k)`` indices into ``keys``, nearest first.
    """
    backend = resolve_backend(backend)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (M, D) and keys (N, D) must share D, got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if not 1 <= k <= len(keys):
        raise ValueError(f"k must be in [1, number of keys={len(keys)}], got {k}")
    if chunk_size < 1 or max_chunk_bytes < 1:
        raise ValueError(f"chunk_size and max_chunk_bytes must be >= 1, got {chunk_size} and {max_chunk_bytes}")
    queries = queries.float()
    keys = keys.float()
    if backend == "faiss":
        return _faiss_knn(queries, keys, k)
    return _torch_knn(queries, keys, k, chunk_size, max_chunk_bytes)


def _rows_of(indices: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor[indices]`` for ascending unique ``indices``; a view (no copy) when they form one contiguous range."""
    if len(indices) and int(indices[-1]) - int(indices[0]) + 1 == len(indices):
        return tensor[int(indices[0]) : int(indices[-1]) + 1]
    return tensor[indices.to(tensor.device)]


def assign_votes(
    *,
    private_embeddings: torch.Tensor,
    private_labels: torch.Tensor,
    synthetic_embeddings: torch.Tensor,
    synthetic_labels: torch.Tensor,
    k: int = 1,
    backend: str = "auto",
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """The synthetic samples each private sample votes for, within its class.

    Args:
        private_embeddings: ``(M, D)``.
        private_labels: int64 ``(M,)``.
        synthetic_embeddings: ``(N, D)`` (lookahead embeddings of the population).
        synthetic_labels: int64 ``(N,)``.
        k: votes per private sample (``num_nearest_neighbors``).
        backend: see :func:`nearest_neighbors`.
        max_chunk_bytes: bound on the torch backend's distance block, see :func:`nearest_neighbors`.

    Returns:
        int64 ``(M, k)`` global indices into the synthetic set.
    """
    out = torch.empty(len(private_embeddings), k, dtype=torch.int64, device=private_embeddings.device)
    for c in torch.unique(private_labels).tolist():
        priv_idx = torch.nonzero(private_labels == c).flatten()
        syn_idx = torch.nonzero(synthetic_labels.to(private_labels.device) == c).flatten()
        if len(syn_idx) < k:
            raise ValueError(
                f"class {c} has {len(syn_idx)} synthetic samples but private samples of that class need "
                f"num_nearest_neighbors={k} of them; give every class at least {k} synthetic samples"
            )
        # A class stored contiguously (a population is grouped by class) is passed as a view.
        local = nearest_neighbors(
            _rows_of(priv_idx, private_embeddings), _rows_of(syn_idx, synthetic_embeddings), k=k, backend=backend,
            max_chunk_bytes=max_chunk_bytes,
        )
        out[priv_idx.to(out.device)] = syn_idx.to(out.device)[local.to(out.device)]
    return out


def vote_histogram(assignments: torch.Tensor, *, num_synthetic: int) -> torch.Tensor:
    """Vote counts per synthetic sample (L2 sensitivity 1).

    Args:
        assignments: int64 ``(M, k)``; every entry must be a valid synthetic index.
        num_synthetic: ``N``.

    Returns:
        float64 ``(N,)``: each private sample adds ``1/sqrt(k)`` to each of its ``k`` bins.
    """
    if assignments.ndim != 2:
        raise ValueError(f"assignments must be (M, k), got {tuple(assignments.shape)}")
    if assignments.numel() and (assignments.min() < 0 or assignments.max() >= num_synthetic):
        raise ValueError("assignments hold indices outside [0, num_synthetic): some private sample did not vote")
    k = assignments.shape[1]
    counts = torch.bincount(assignments.flatten().cpu(), minlength=num_synthetic).to(torch.float64)
    return counts / math.sqrt(k)


def add_gaussian_noise(histogram: torch.Tensor, *, noise_multiplier: float, generator: torch.Generator) -> torch.Tensor:
    """``histogram + N(0, noise_multiplier^2 I)``, noise drawn from ``generator`` (CPU, float64).

    With sensitivity 1 this is the Gaussian mechanism whose privacy
    :mod:`pe_lightning.privacy` accounts for. ``noise_multiplier=0`` adds nothing (not private).
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    noise = torch.randn(histogram.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return histogram.to(torch.float64) + noise_multiplier * noise.to(histogram.device)


def apply_threshold(noisy: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """``max(noisy - threshold, 0)`` (post-processing)."""
    return torch.clamp(noisy - threshold, min=0.0)


def select_parents(
    *,
    weights: torch.Tensor,
    labels: torch.Tensor,
    num_per_class: Sequence[int],
    generator: torch.Generator,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Draw parents with replacement, within each class, with probability ∝ ``weights``.

    A class whose weights are all zero (e.g. every noisy count fell below the threshold)
    is drawn uniformly with a :class:`ZeroHistogramWarning`; still post-processing.

    Args:
        weights: float ``(N,)`` thresholded noisy counts, >= 0.
        labels: int64 ``(N,)`` class of each synthetic sample.
        num_per_class: how many parents to draw for each class (public configuration).
        generator: CPU generator for the draw.
        class_names: for warning messages.

    Returns:
        int64 ``(sum(num_per_class),)`` indices into the population, grouped by class in
        label order.
    """
    weights = weights.detach().cpu().to(torch.float64)
    labels = labels.detach().cpu()
    if torch.isnan(weights).any() or (weights < 0).any():
        raise ValueError("selection weights must be >= 0 and not NaN")
    out = []
    for c, n_c in enumerate(num_per_class):
        if n_c == 0:
            continue
        idx = torch.nonzero(labels == c).flatten()
        name = class_names[c] if class_names is not None else str(c)
        if len(idx) == 0:
            raise ValueError(f"class {name!r} has no synthetic samples to select {n_c} parents from")
        w = weights[idx]
        if float(w.sum()) <= 0.0:
            warnings.warn(
                f"class {name!r}: all {len(idx)} thresholded noisy counts are zero; selecting parents "
                "uniformly (post-processing, no extra privacy cost). Lower the threshold or raise epsilon.",
                ZeroHistogramWarning,
                stacklevel=2,
            )
            w = torch.ones_like(w)
        out.append(idx[torch.multinomial(w, n_c, replacement=True, generator=generator)])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)
