"""Deterministic, stateless random streams for everything except the DP noise.

Every public or post-processing random draw in a PE run (RANDOM, lookahead, selection,
variation) comes from a ``torch.Generator`` seeded by ``(seed, iteration, stream)``. The
seed is public, so the DP Gaussian noise never comes from here: it is keyed by the run's
secret noise key (:mod:`pe_lightning.noise`). Because the seed is derived, not carried, a run resumed
from a checkpoint and a run on several ranks draw exactly the same numbers as an
uninterrupted single-process run (docs/design.md §3, invariants 2 and 3).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "make_generator"]

STREAMS = ("random", "lookahead", "selection", "variation")  # never the DP noise


def derive_seed(seed: int, iteration: int, stream: str, *extra: int) -> int:
    """A 63-bit seed that depends only on the arguments (stable across processes and versions).

    Raises:
        ValueError: for ``stream="noise"``: the DP noise must not come from the public seed.
    """
    if stream == "noise":
        raise ValueError("the DP noise is keyed by the run's secret noise key (pe_lightning.noise), never by the public seed")
    payload = f"{int(seed)}/{int(iteration)}/{stream}/" + "/".join(str(int(e)) for e in extra)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, iteration: int, stream: str, *extra: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, iteration, stream, *extra))
    return gen
