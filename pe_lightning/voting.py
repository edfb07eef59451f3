"""Nearest-neighbour votes and their histogram (docs/design.md §1, §2.2).

Neighbouring relation: two private sets differ by adding or removing one sample (or one
client, :func:`vote_histogram` with ``clients``). Each private sample casts votes for its
``k`` nearest synthetic samples *of its own class* (:mod:`pe_lightning.neighbors` finds
them), each vote weighing ``1/sqrt(k)``; the histogram therefore has L2 sensitivity 1 (a
single sample changes ``k`` bins by ``1/sqrt(k)`` each). The Gaussian noise, the threshold
(:mod:`pe_lightning.engine.release`) and the selection (:mod:`pe_lightning.engine.selection`)
come after and live there.

Votes are stored as *assignments* (the synthetic index each private sample votes for),
one row per private sample, so a private sample seen twice (e.g. a padded
``DistributedSampler``) still votes exactly once.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch

from pe_lightning.neighbors import DEFAULT_MAX_CHUNK_BYTES, check_distance, nearest_neighbors, rows_of

__all__ = ["assign_votes", "client_scale", "vote_histogram", "vote_weight"]

#: Names that lived here before the split, and the module that owns each now (old imports keep working).
_MOVED = {
    **dict.fromkeys(("BACKENDS", "DISTANCES", "resolve_backend", "as_slice"), "pe_lightning.neighbors"),
    **dict.fromkeys(("add_gaussian_noise", "apply_threshold"), "pe_lightning.engine.release"),
    **dict.fromkeys(("SELECTION_MODES", "ZeroHistogramWarning", "select_parents"), "pe_lightning.engine.selection"),
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        backend: see :func:`~pe_lightning.neighbors.nearest_neighbors`.
        max_chunk_bytes: bound on the torch backend's distance block, see :func:`~pe_lightning.neighbors.nearest_neighbors`.
        distance: ``'l2'``, ``'cosine'`` or ``'ip'``, see :func:`~pe_lightning.neighbors.nearest_neighbors`.

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
            rows_of(priv_idx, private_embeddings), rows_of(syn_idx, synthetic_embeddings), k=k, backend=backend,
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
