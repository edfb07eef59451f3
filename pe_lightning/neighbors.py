"""Exact k-nearest-neighbour search: faiss or blocked torch matrix products (docs/design.md §1).

Used by the votes (:mod:`pe_lightning.voting`), the nearest-image simulator
(:mod:`pe_lightning.apis.nearest_image`) and the k-NN metrics (:mod:`pe_lightning.metrics.manifold`,
:mod:`pe_lightning.callbacks.precision_recall`). Nothing here touches private data or the DP
noise: it is a search over whatever tensors it is given.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_CHUNK_BYTES",
    "DISTANCES",
    "as_slice",
    "check_distance",
    "nearest_neighbors",
    "resolve_backend",
    "rows_of",
    "rows_per_chunk",
]

BACKENDS = ("auto", "faiss", "torch")
#: Nearest-neighbour criteria: smallest L2 distance, largest cosine similarity, largest inner product.
DISTANCES = ("l2", "cosine", "ip")


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError(
            "search backend 'faiss' needs the faiss package: pip install faiss-cpu "
            "(or faiss-gpu on CUDA machines; see the README), or use backend='torch'"
        ) from err
    return faiss


def _faiss_gpu_available(faiss) -> bool:
    """faiss was built with GPU support (faiss-gpu) and sees at least one GPU."""
    return hasattr(faiss, "knn_gpu") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _auto_backend(device: torch.device) -> tuple[str, str]:
    """What ``'auto'`` picks for tensors on ``device``, and why (one line)."""
    try:
        faiss = _faiss()
    except ImportError:
        return "torch", "faiss is not installed"
    if device.type != "cuda":
        return "faiss", "faiss exact brute force on the CPU"
    if _faiss_gpu_available(faiss):
        return "faiss", "faiss-gpu brute-force k-NN straight on the CUDA tensors"
    return "torch", "this faiss has no GPU support, so blocked matrix products on the GPU (no host copies)"


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """Validate a backend name and resolve ``'auto'`` for tensors on ``device`` (default: the CPU).

    ``'auto'`` is faiss on the CPU (torch when faiss is missing); on CUDA it is faiss when
    faiss-gpu is installed (``faiss.knn_gpu`` on the torch tensors), else torch, whose
    matrix products run on the GPU, where faiss-cpu would copy every batch to the host.
    """
    if backend not in BACKENDS:
        raise ValueError(f"search backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return _auto_backend(torch.device(device if device is not None else "cpu"))[0]
    return backend


_ANNOUNCED: set[tuple[str, str]] = set()


def _resolve_and_announce(backend: str, device: torch.device) -> str:
    """:func:`resolve_backend`; the first time ``'auto'`` resolves for a device type, log the choice and why."""
    if backend != "auto":
        return resolve_backend(backend)
    choice, why = _auto_backend(device)
    if (device.type, choice) not in _ANNOUNCED:
        _ANNOUNCED.add((device.type, choice))
        from lightning.pytorch.utilities import rank_zero_info  # noqa: PLC0415

        rank_zero_info(f"[PE] nearest-neighbour search (search_backend='auto') on {device.type}: {choice} ({why})")
    return choice


def check_distance(distance: str) -> str:
    """Validate a nearest-neighbour criterion name (one of :data:`DISTANCES`) and return it."""
    if distance not in DISTANCES:
        raise ValueError(
            f"distance must be one of {DISTANCES} ('l2': smallest Euclidean distance, 'cosine': largest cosine "
            f"similarity, 'ip': largest inner product), got {distance!r}"
        )
    return distance


#: Default bound on the torch backend's distance block: ``(rows, N)`` float32 scores.
DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20


#: Norms below this count as zero when normalising for ``distance='cosine'`` (``F.normalize``'s default).
_NORM_EPS = 1e-12


def rows_per_chunk(num_keys: int, chunk_size: int, max_chunk_bytes: int) -> int:
    """Queries per blocked step: at most ``chunk_size``, and ``rows * num_keys * 4 <= max_chunk_bytes`` (>= 1 row)."""
    return max(1, min(chunk_size, max_chunk_bytes // (4 * max(num_keys, 1))))


def _torch_knn(
    queries: torch.Tensor, keys: torch.Tensor, k: int, chunk_size: int, max_chunk_bytes: int, distance: str = "l2"
) -> torch.Tensor:
    keys = keys.to(queries.device)
    rows = rows_per_chunk(len(keys), chunk_size, max_chunk_bytes)
    # ||x||^2 of the keys, a block at a time (``keys * keys`` at once would copy all keys).
    key_sq = torch.cat([(block * block).sum(1) for block in keys.split(rows)])
    key_sq = key_sq[None, :]
    if distance == "cosine":  # scores q.x / ||x|| per block: no normalised copy of the keys
        inv_norm = key_sq.sqrt().clamp_min_(_NORM_EPS).reciprocal_()
    out = []
    for start in range(0, len(queries), rows):
        q = queries[start : start + rows]
        if distance == "l2":
            # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; ||q||^2 is constant per row, so drop it.
            # One (rows, N) block per step: addmm writes ||x||^2 - 2 q.x without a second temporary.
            dist = torch.addmm(key_sq, q, keys.T, alpha=-2.0)
        else:  # largest similarity first: rank by its negation
            if distance == "cosine":
                q = torch.nn.functional.normalize(q, dim=1, eps=_NORM_EPS)
            dist = torch.mm(q, keys.T).neg_()
            if distance == "cosine":
                dist.mul_(inv_norm)
        out.append(torch.topk(dist, k, dim=1, largest=False, sorted=True).indices)
        del dist
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64, device=queries.device)


_GPU_RESOURCES: dict[int, object] = {}


def _faiss_gpu_resources(faiss, device_index: int):
    """One ``StandardGpuResources`` per GPU and process (creating one reserves scratch memory)."""
    if device_index not in _GPU_RESOURCES:
        _GPU_RESOURCES[device_index] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device_index]


def _faiss_knn(queries: torch.Tensor, keys: torch.Tensor, k: int, distance: str = "l2") -> torch.Tensor:
    faiss = _faiss()
    if distance == "cosine":  # cosine = inner product of unit vectors (a normalised copy for faiss)
        queries = torch.nn.functional.normalize(queries, dim=1, eps=_NORM_EPS)
        keys = torch.nn.functional.normalize(keys, dim=1, eps=_NORM_EPS)
    metric = faiss.METRIC_L2 if distance == "l2" else faiss.METRIC_INNER_PRODUCT
    if keys.is_cuda and _faiss_gpu_available(faiss):
        return _faiss_knn_gpu(faiss, queries, keys, k, metric)
    xq = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
    xb = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
    # Exact brute-force search straight on the key array (the same kernel as
    # IndexFlatL2/IndexFlatIP.search, without copying the keys into an index first).
    _, idx = faiss.knn(xq, xb, k, metric=metric)
    return torch.from_numpy(idx.astype(np.int64)).to(queries.device)


def _faiss_knn_gpu(faiss, queries: torch.Tensor, keys: torch.Tensor, k: int, metric: int) -> torch.Tensor:
    """faiss-gpu's exact brute-force k-NN (``bfKnn``) on the torch tensors where they lie.

    No index is built and nothing is copied to the host: ``faiss.contrib.torch_utils`` lets
    ``knn_gpu`` read the tensors' device memory and write int64 indices into a tensor on the
    same device, on the current torch stream.
    """
    import faiss.contrib.torch_utils as _torch_utils  # noqa: F401, PLC0415 - makes knn_gpu accept torch tensors

    device_index = keys.device.index
    if device_index is None:
        device_index = torch.cuda.current_device() if keys.is_cuda else 0
    _, idx = faiss.knn_gpu(
        _faiss_gpu_resources(faiss, device_index), queries.contiguous(), keys.contiguous(), k,
        metric=metric, device=device_index,
    )
    return idx.to(device=queries.device, dtype=torch.int64)


def nearest_neighbors(
    queries: torch.Tensor,
    keys: torch.Tensor,
    *,
    k: int = 1,
    backend: str = "auto",
    chunk_size: int = 4096,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    distance: str = "l2",
) -> torch.Tensor:
    """Exact ``k``-nearest keys of each query (L2 by default).

    Args:
        queries: float ``(M, D)``.
        keys: float ``(N, D)`` with ``N >= k``.
        k: neighbours per query.
        backend: ``'faiss'`` (exact brute force; with faiss-gpu and CUDA tensors
            ``faiss.knn_gpu`` on the tensors themselves: no index build, no host copy),
            ``'torch'`` (blocked matrix products on the tensors' device), or ``'auto'``
            (:func:`resolve_backend` for the keys' device; the choice is logged once).
        chunk_size: at most this many queries per torch block.
        max_chunk_bytes: torch backend: each block of queries is also small enough that
            its ``(rows, N)`` float32 distance block fits in this many bytes (at least one
            row per block), so extra memory stays bounded (``M x N`` is never materialised).
        distance: ``'l2'`` (smallest Euclidean distance), ``'cosine'`` (largest cosine
            similarity; a zero vector has similarity 0 to everything) or ``'ip'`` (largest
            inner product), in both backends.

    Returns:
        int64 ``(M, k)`` indices into ``keys``, nearest first.
    """
    backend = _resolve_and_announce(backend, keys.device)
    check_distance(distance)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (M, D) and keys (N, D) must share D, got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if not 1 <= k <= len(keys):
        raise ValueError(f"k must be in [1, number of keys={len(keys)}], got {k}")
    if chunk_size < 1 or max_chunk_bytes < 1:
        raise ValueError(f"chunk_size and max_chunk_bytes must be >= 1, got {chunk_size} and {max_chunk_bytes}")
    queries = queries.float()
    keys = keys.float()
    if backend == "faiss":
        return _faiss_knn(queries, keys, k, distance)
    return _torch_knn(queries, keys, k, chunk_size, max_chunk_bytes, distance)


def as_slice(indices: torch.Tensor) -> slice | None:
    """``slice(a, b)`` when ``indices`` is exactly ``a, a + 1, ..., b - 1``, else ``None``."""
    n = indices.numel()
    if indices.ndim != 1 or n == 0:
        return None
    first, last = int(indices[0]), int(indices[-1])
    if last - first + 1 != n or (n > 1 and not bool((indices[1:] - indices[:-1] == 1).all())):
        return None
    return slice(first, last + 1)


def rows_of(indices: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor[indices]``; a view (no copy) when they form one contiguous range (:func:`as_slice`)."""
    rows = as_slice(indices)
    return tensor[rows] if rows is not None else tensor[indices.to(tensor.device)]
