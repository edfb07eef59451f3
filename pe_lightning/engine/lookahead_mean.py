"""The mean of a chunk's lookahead embeddings, each embedded beside the API's next variation.

Stage 1 of an iteration asks the API for ``k`` variations of every sample and averages their
embeddings. Done in turn, the embedding waits for the API and the API for the embedding. With a
CPU embedding (HOG, pixels) and a CPU or GPU API, :class:`LookaheadMean` embeds variation ``r`` on
one background thread while the caller asks the API for variation ``r + 1``.

- **Same numbers.** The embeddings are summed in the order ``r = 0, 1, ...`` on either path, so
  the mean is bit-identical (``tests/test_lookahead_mean.py`` checks whole runs with and without).
- **Bounded memory.** Double buffering: before a new variation goes to the background thread,
  the previous one's embedding is waited for, so at most one is pending and at most two
  variations' images are alive (one without overlap).
- **When it pays** (:func:`overlap_lookahead`). Only for an embedding on the CPU: a GPU embedding
  shares its device with a GPU API, and the background thread would not inherit the caller's
  CUDA device. By default (``None``) only when the process has a core that torch's intra-op
  threads leave free: on 2 cores with torch's 2 threads, DrawText's thread team and the
  background embedding competed and the iteration got slower (docs/results.md, Throughput).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from pe_lightning.embeddings.base import Embedding

__all__ = ["LookaheadMean", "overlap_lookahead", "spare_core"]


def spare_core() -> bool:
    """Whether this process may run on more cores than torch's intra-op threads use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores > torch.get_num_threads()


def overlap_lookahead(embedding: Embedding, *, setting: bool | None) -> bool:
    """Whether the lookahead embeds on a background thread.

    Args:
        embedding: the voting embedding; one off the CPU (:attr:`~pe_lightning.embeddings.base.Embedding.compute_device`)
            never overlaps.
        setting: ``overlap_lookahead_embedding``: ``False`` never, ``True`` always (on the CPU),
            ``None`` when :func:`spare_core`.
    """
    if setting is False or embedding.compute_device.type != "cpu":
        return False
    return True if setting else spare_core()


def _timed_embed(embed: Callable[[np.ndarray], torch.Tensor], images: np.ndarray) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    return embed(images), time.perf_counter() - start


class LookaheadMean:
    """Running sum of one chunk's lookahead embeddings, each started as soon as its images are added.

    Args:
        embed: uint8 ``(n, H, W, C)`` -> float32 CPU ``(n, D)``, the same ``n`` for every call. It
            runs on ``pool``'s thread, one call at a time; it must not rely on the caller's
            thread-local state (grad mode: every shipped embedding sets its own ``no_grad``).
        pool: a one-thread executor to embed on, or ``None`` to embed on the caller's thread
            (then :meth:`add` returns once the embedding is done).

    Attributes:
        background_s: seconds the embeddings ran on ``pool``'s thread (0 without a pool).
    """

    def __init__(self, embed: Callable[[np.ndarray], torch.Tensor], *, pool: ThreadPoolExecutor | None) -> None:
        self._embed, self._pool = embed, pool
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._pending: Future | None = None
        self.background_s = 0.0

    def _accumulate(self, embedding: torch.Tensor) -> None:
        self._sum = embedding if self._sum is None else self._sum.add_(embedding)
        self._count += 1

    def _wait(self) -> None:
        if self._pending is not None:
            embedding, seconds = self._pending.result()  # re-raises the embedding's error here
            self._pending = None
            self.background_s += seconds
            self._accumulate(embedding)

    def add(self, images: np.ndarray) -> None:
        """Embed ``images`` (one variation of the chunk; not to be written into afterwards) into the sum.

        With a pool this first waits for the previous variation's embedding, then starts this one.
        """
        if self._pool is None:
            self._accumulate(self._embed(images))
            return
        self._wait()
        self._pending = self._pool.submit(_timed_embed, self._embed, images)

    def mean(self) -> torch.Tensor:
        """float32 ``(n, D)``: the mean of the added variations' embeddings (waits for the last one)."""
        self._wait()
        if self._sum is None:
            raise ValueError("LookaheadMean.mean needs at least one add()")
        return self._sum.div_(self._count)
