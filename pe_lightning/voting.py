"""Differentially private nearest-neighbour voting (docs/design.md §1).

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

from pe_lightning.noise import NoiseKey, standard_normal

__all__ = [
    "BACKENDS",
    "DISTANCES",
    "resolve_backend",
    "check_distance",
    "nearest_neighbors",
    "as_slice",
    "assign_votes",
    "vote_histogram",
    "vote_weight",
    "client_scale",
    "SELECTION_MODES",
    "add_gaussian_noise",
    "apply_threshold",
    "select_parents",
    "ZeroHistogramWarning",
]

BACKENDS = ("auto", "faiss", "torch")
#: Nearest-neighbour criteria: smallest L2 distance, largest cosine similarity, largest inner product.
DISTANCES = ("l2", "cosine", "ip")


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


def _rows_per_chunk(num_keys: int, chunk_size: int, max_chunk_bytes: int) -> int:
    """Queries per torch block: at most ``chunk_size``, and ``rows * num_keys * 4 <= max_chunk_bytes`` (>= 1 row)."""
    return max(1, min(chunk_size, max_chunk_bytes // (4 * max(num_keys, 1))))


def _torch_knn(
    queries: torch.Tensor, keys: torch.Tensor, k: int, chunk_size: int, max_chunk_bytes: int, distance: str = "l2"
) -> torch.Tensor:
    keys = keys.to(queries.device)
    rows = _rows_per_chunk(len(keys), chunk_size, max_chunk_bytes)
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


def _rows_of(indices: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor[indices]``; a view (no copy) when they form one contiguous range (:func:`as_slice`)."""
    rows = as_slice(indices)
    return tensor[rows] if rows is not None else tensor[indices.to(tensor.device)]


def assign_votes(
    *,
    private_embeddings: torch.Tensor,
    private_labels: torch.Tensor,
    synthetic_embeddings: torch.Tensor,
    synthetic_labels: torch.Tensor,
    k: int = 1,
    backend: str = "auto",
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    distance: str = "l2",
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
        distance: ``'l2'``, ``'cosine'`` or ``'ip'``, see :func:`nearest_neighbors`.

    Returns:
        int64 ``(M, k)`` global indices into the synthetic set.
    """
    check_distance(distance)
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
            max_chunk_bytes=max_chunk_bytes, distance=distance,
        )
        out[priv_idx.to(out.device)] = syn_idx.to(out.device)[local.to(out.device)]
    return out


def vote_histogram(assignments: torch.Tensor, *, num_synthetic: int, clients: torch.Tensor | None = None) -> torch.Tensor:
    """Vote counts per synthetic sample (L2 sensitivity 1).

    Sample-level (``clients=None``), the neighbouring relation is add/remove one private
    sample: each sample adds ``1/sqrt(k)`` to each of its ``k`` bins (its vote vector has
    L2 norm 1). Client-level, it is add/remove one *client* with all its samples: each
    client's summed vote-count vector ``v_c`` is scaled to ``v_c / ||v_c||_2``, so it has L2
    norm exactly 1 however many samples the client holds (a client with one sample and
    ``k`` distinct votes gets ``1/sqrt(k)`` per bin, as sample-level).

    Args:
        assignments: int64 ``(M, k)``; every entry must be a valid synthetic index.
        num_synthetic: ``N``.
        clients: optional int64 ``(M,)`` client id of each private sample.

    Returns:
        float64 ``(N,)``.
    """
    if assignments.ndim != 2:
        raise ValueError(f"assignments must be (M, k), got {tuple(assignments.shape)}")
    if assignments.numel() and (assignments.min() < 0 or assignments.max() >= num_synthetic):
        raise ValueError("assignments hold indices outside [0, num_synthetic): some private sample did not vote")
    if clients is not None:
        return _client_vote_histogram(assignments, num_synthetic=num_synthetic, clients=clients)
    k = assignments.shape[1]
    counts = torch.bincount(assignments.flatten().cpu(), minlength=num_synthetic).to(torch.float64)
    return counts * vote_weight(k)


def _client_vote_histogram(assignments: torch.Tensor, *, num_synthetic: int, clients: torch.Tensor) -> torch.Tensor:
    """Client-level histogram (``assignments`` already checked): each client's vote-count vector normalised to L2 norm 1."""
    if assignments.numel() == 0:
        raise ValueError(f"client-level votes need a non-empty (M, k), got {tuple(assignments.shape)}")
    clients = torch.as_tensor(clients).cpu().to(torch.int64).flatten()
    if clients.shape[0] != assignments.shape[0]:
        raise ValueError(f"clients must have one id per private sample ({assignments.shape[0]}), got {clients.shape[0]}")
    k = assignments.shape[1]
    _, client_index = torch.unique(clients, return_inverse=True)
    pairs = client_index.repeat_interleave(k) * num_synthetic + assignments.cpu().flatten()
    cells, counts = torch.unique(pairs, return_counts=True)  # (client, bin) cells with their vote counts
    counts = counts.to(torch.float64)
    owner = cells // num_synthetic
    norms = torch.zeros(int(client_index.max()) + 1, dtype=torch.float64).index_add_(0, owner, counts * counts).sqrt()
    histogram = torch.zeros(num_synthetic, dtype=torch.float64)
    return histogram.index_add_(0, cells % num_synthetic, counts * client_scale(norms)[owner])


def client_scale(norms: torch.Tensor) -> torch.Tensor:
    """The factor applied to a client's vote-count vector of L2 norm ``norms``: ``1 / norms`` (norm 1 after)."""
    return 1.0 / norms


def vote_weight(k: int) -> float:
    """The weight of each of a private sample's ``k`` votes, ``1/sqrt(k)``: its vote vector has L2 norm 1."""
    return 1.0 / math.sqrt(k)


def add_gaussian_noise(
    histogram: torch.Tensor, *, noise_multiplier: float, key: "NoiseKey", iteration: int
) -> torch.Tensor:
    """``histogram + N(0, noise_multiplier^2 I)``, the noise keyed by the run's secret (float64).

    With L2 sensitivity 1 (add/remove one private sample) this is the Gaussian mechanism
    whose privacy :mod:`pe_lightning.privacy` accounts for. The noise is
    :func:`pe_lightning.noise.standard_normal` of ``(key, iteration, histogram.shape)``:
    unpredictable without the key, identical on every rank that holds it. Leading
    dimensions of ``histogram`` are independent releases (the privacy audit batches
    trials this way). ``noise_multiplier=0`` adds nothing (not private).

    Args:
        histogram: vote counts ``(..., N)``.
        noise_multiplier: ``sigma``, noise std in units of the sensitivity, finite and ``>= 0``.
        key: the run's :class:`~pe_lightning.noise.NoiseKey`.
        iteration: the PE iteration (1-based) this release belongs to.
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    noise = torch.from_numpy(standard_normal(key, iteration=iteration, shape=tuple(histogram.shape)))
    return histogram.to(torch.float64) + noise_multiplier * noise.to(histogram.device)


def apply_threshold(noisy: torch.Tensor, *, threshold: float) -> torch.Tensor:
    """``max(noisy - threshold, 0)`` (post-processing)."""
    return torch.clamp(noisy - threshold, min=0.0)


SELECTION_MODES = ("sample", "rank", "systematic")


def select_parents(
    *,
    weights: torch.Tensor,
    labels: torch.Tensor,
    num_per_class: Sequence[int],
    generator: torch.Generator,
    class_names: Sequence[str] | None = None,
    mode: str = "sample",
) -> torch.Tensor:
    """Choose parents within each class from the thresholded noisy counts (post-processing).

    ``mode="sample"`` draws with replacement with probability ∝ ``weights`` (the paper's
    and the reference's default); ``mode="rank"`` takes the ``n_c`` largest weights of
    class ``c`` (ties broken by index), each parent once; ``mode="systematic"`` gives each
    bin its expected number of children under ``"sample"``, ``n_c w_i / sum(w)``, rounded
    by largest remainders (deterministic, no multinomial noise: a low-count survivor of
    the threshold is not lost by chance). Each reads only the noisy histogram and public
    configuration, so it is post-processing: no privacy cost.

    A class whose weights are all zero (e.g. every noisy count fell below the threshold)
    is drawn uniformly with a :class:`ZeroHistogramWarning`; still post-processing.

    Args:
        weights: float ``(N,)`` thresholded noisy counts, >= 0.
        labels: int64 ``(N,)`` class of each synthetic sample.
        num_per_class: how many parents to draw for each class (public configuration).
        generator: CPU generator for the draw (``sample``; ``rank`` draws nothing
            unless a class falls back to uniform).
        class_names: for warning messages.
        mode: ``"sample"`` or ``"rank"``.

    Returns:
        int64 ``(sum(num_per_class),)`` indices into the population, grouped by class in
        label order.
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"selection mode must be one of {SELECTION_MODES}, got {mode!r}")
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
            if mode == "rank":  # no information to rank by: a uniform draw without replacement
                w = torch.rand(len(idx), generator=generator, dtype=torch.float64)
        if mode == "rank":
            if n_c > len(idx):
                raise ValueError(
                    f"class {name!r}: selection 'rank' takes {n_c} distinct parents but the class has only "
                    f"{len(idx)} synthetic samples"
                )
            out.append(idx[torch.sort(w, descending=True, stable=True).indices[:n_c]])
        elif mode == "systematic":
            # Expected counts of "sample" without its multinomial noise: n_c * w / sum(w), floored,
            # the remainder to the largest fractional parts (ties by index). Every bin above the
            # threshold with a share >= 1 / n_c gets children; no parent is lost to sampling.
            exact = w / w.sum() * n_c
            counts = torch.floor(exact).to(torch.int64)
            rest = n_c - int(counts.sum())
            if rest > 0:
                counts[torch.sort(exact - counts, descending=True, stable=True).indices[:rest]] += 1
            out.append(torch.repeat_interleave(idx, counts))
        else:
            out.append(idx[torch.multinomial(w, n_c, replacement=True, generator=generator)])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)
