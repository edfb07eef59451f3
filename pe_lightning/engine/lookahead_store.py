"""The ``k`` lookahead variations of one iteration, kept for reuse as the next population.

With ``reuse_lookahead`` the ``m``-th selection of a parent becomes its ``m``-th lookahead
variation, so the variations made for voting must outlive the vote. The API returns them
chunk by chunk (``api_batch_size`` samples per call); :class:`LookaheadStore` keeps those
outputs as they are, without copying, when they fit in memory, and copies them into one
memory-mapped ``(k, N, H, W, C)`` scratch array (evicted from resident memory after each
chunk) when they are larger than the scratch space's limit. :meth:`take` gathers any
``(variation, sample)`` pairs from either form.

Only synthetic images pass through here: the store holds no private data.
"""

from __future__ import annotations

import numpy as np

from pe_lightning.apis.base import APIOutput
from pe_lightning.engine.scratch import ScratchSpace

__all__ = ["LookaheadStore"]


class LookaheadStore:
    """Holds the lookahead variations ``(r, i)`` for ``r < k`` of a population of ``n`` samples.

    Args:
        scratch: where spilled arrays are allocated (and its ``limit_bytes`` decides when).
        k: number of lookahead variations per sample (``lookahead_degree``), ``>= 1``.
        n: population size ``N``.
        chunk_size: samples per API call; chunk ``i`` covers samples
            ``[i * chunk_size, (i + 1) * chunk_size)``.
        image_shape: ``(H, W, C)`` of one image.
    """

    def __init__(self, *, scratch: ScratchSpace, k: int, n: int, chunk_size: int, image_shape: tuple[int, ...]) -> None:
        if k < 1 or n < 1 or chunk_size < 1:
            raise ValueError(f"k, n and chunk_size must be >= 1, got k={k}, n={n}, chunk_size={chunk_size}")
        self.k, self.n, self.chunk_size = k, n, chunk_size
        self.image_shape = tuple(image_shape)
        nbytes = k * n * int(np.prod(self.image_shape))
        self.spilled = scratch.limit_bytes is not None and nbytes > scratch.limit_bytes
        # Spilled: one memmap for the images; conditions (small) in memory.
        self._images = scratch.allocate((k, n, *self.image_shape), np.uint8, name="lookahead") if self.spilled else None
        self._conditions: dict[str, np.ndarray] = {}
        # In memory: the API's own outputs, keyed by (r, chunk index).
        self._parts: dict[tuple[int, int], APIOutput] = {}

    def matches(self, *, k: int, n: int, chunk_size: int, image_shape: tuple[int, ...]) -> bool:
        """Whether this store can hold an iteration of that shape (and so be reused)."""
        return (k, n, chunk_size, tuple(image_shape)) == (self.k, self.n, self.chunk_size, self.image_shape)

    def put(self, r: int, chunk: int, out: APIOutput) -> None:
        """Keep variation ``r`` of chunk ``chunk`` (``out`` must not be modified afterwards)."""
        start = chunk * self.chunk_size
        stop = min(start + self.chunk_size, self.n)
        if len(out.images) != stop - start or out.images.shape[1:] != self.image_shape:
            raise ValueError(
                f"lookahead variation {r} of chunk {chunk} has images {out.images.shape}, expected "
                f"({stop - start}, {', '.join(map(str, self.image_shape))})"
            )
        if not self.spilled:
            self._parts[(r, chunk)] = out
            return
        self._images[r, start:stop] = out.images
        for key, v in out.conditions.items():
            store = self._conditions.get(key)
            if store is None or store.shape[2:] != v.shape[1:] or store.dtype != v.dtype:
                store = self._conditions[key] = np.zeros((self.k, self.n, *v.shape[1:]), dtype=v.dtype)
            store[r, start:stop] = v

    def take(self, r: np.ndarray, p: np.ndarray) -> APIOutput:
        """Variation ``r[j]`` of sample ``p[j]`` for every ``j``, as one output in that order.

        Raises:
            KeyError: naming the first ``(r, chunk)`` that was never :meth:`put`.
        """
        r, p = np.asarray(r, dtype=np.int64), np.asarray(p, dtype=np.int64)
        if self.spilled:
            return APIOutput(images=self._images[r, p], conditions={k: v[r, p] for k, v in self._conditions.items()})
        m = len(p)
        chunk = p // self.chunk_size
        group = r * (self.n // self.chunk_size + 1) + chunk
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        images = np.empty((m, *self.image_shape), dtype=np.uint8)
        conditions: dict[str, np.ndarray] = {}
        for rows in np.split(order, bounds) if m else []:
            key = (int(r[rows[0]]), int(chunk[rows[0]]))
            part = self._parts.get(key)
            if part is None:
                raise KeyError(f"lookahead variation {key[0]} of chunk {key[1]} is not in this rank's store")
            local = p[rows] - key[1] * self.chunk_size
            images[rows] = part.images[local]
            for name, v in part.conditions.items():
                if name not in conditions:
                    conditions[name] = np.empty((m, *v.shape[1:]), dtype=v.dtype)
                conditions[name][rows] = v[local]
        return APIOutput(images=images, conditions=conditions)

    def evict(self) -> None:
        """Write spilled variations to their file and drop them from resident memory."""
        ScratchSpace.evict(self._images)

    def clear(self) -> None:
        """Drop the in-memory variations (a spilled array is kept for the next iteration)."""
        self._parts.clear()
