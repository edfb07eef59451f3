"""Work sharded over ranks, and the results gathered back (docs/design.md §3, invariant 3).

Work is split into *chunks* whose boundaries and random streams depend only on the
problem (``api_batch_size``), never on the number of processes: rank ``r`` of ``W``
computes chunks ``i`` with ``i % W == r``. Gathering the chunks and ordering them by
index therefore gives bit-identical results on 1 or many processes. Process management is
not done here (Lightning's ``strategy="ddp"``, SLURM, torchrun); a :class:`Collective`
only calls the collective operations of a process group someone else set up.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist

from pe_lightning.apis.base import APIOutput
from pe_lightning.engine.scratch import ScratchSpace

__all__ = [
    "Collective",
    "ProcessGroupCollective",
    "assemble",
    "chunk_slices",
    "gather_objects",
    "my_chunks",
    "made_by",
    "owner_of_chunk",
    "rank_and_world",
    "reported_chunks",
    "sharded_rows",
]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def chunk_slices(n: int, chunk_size: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` with at most ``chunk_size`` elements each."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [slice(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def owner_of_chunk(index: int | np.ndarray, *, world_size: int) -> int | np.ndarray:
    """The rank that computes chunk ``index`` (round robin): the one rule of who makes what."""
    return index % world_size


def made_by(rows: np.ndarray, *, chunk_size: int, rank: int, world_size: int) -> np.ndarray:
    """Boolean mask of ``rows`` (indices into ``range(n)``) whose chunk ``rank`` computed."""
    return owner_of_chunk(np.asarray(rows) // chunk_size, world_size=world_size) == rank


def my_chunks(n: int, chunk_size: int, *, rank: int, world_size: int) -> Iterator[tuple[int, slice]]:
    """``(chunk index, slice)`` of the chunks of ``range(n)`` that ``rank`` computes (:func:`owner_of_chunk`)."""
    for i, sl in enumerate(chunk_slices(n, chunk_size)):
        if owner_of_chunk(i, world_size=world_size) == rank:
            yield i, sl


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` on a single process).

    Objects are pickled (numpy arrays, CPU tensors, dicts of them); tensors should be on
    the CPU so that the gather works with both gloo and NCCL process groups.
    """
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


@runtime_checkable
class Collective(Protocol):
    """The collective operations the engine needs: who am I, gather to all, broadcast from one."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order, on every rank."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank."""


class ProcessGroupCollective:
    """:class:`Collective` over ``torch.distributed``'s default process group (one process without one).

    Lightning's DDP strategy initialises that group, so the module and a plain script use
    the same collective.
    """

    @property
    def rank(self) -> int:
        return rank_and_world()[0]

    @property
    def world_size(self) -> int:
        return rank_and_world()[1]

    def gather(self, obj: Any) -> list[Any]:
        return gather_objects(obj)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]


#: ``report(done, total)``: progress of one stage, in rows.
Report = Callable[[int, int], None]


def reported_chunks(n: int, chunk_size: int, *, collective: Collective, report: Report | None = None) -> Iterator[tuple[int, slice]]:
    """This rank's ``(chunk index, slice)`` of ``range(n)``, calling ``report(done, total)`` after each chunk."""
    chunks = list(my_chunks(n, chunk_size, rank=collective.rank, world_size=collective.world_size))
    total, done = sum(sl.stop - sl.start for _, sl in chunks), 0
    if report is not None:
        report(0, total)
    for i, sl in chunks:
        yield i, sl
        done += sl.stop - sl.start
        if report is not None:
            report(done, total)


def sharded_rows(
    n: int,
    rows_of_chunk: Callable[[int, slice], torch.Tensor],
    *,
    chunk_size: int,
    collective: Collective,
    out: Callable[[int], np.ndarray] | None = None,
    report: Report | None = None,
) -> torch.Tensor:
    """One float32 ``(n, D)`` tensor from ``rows_of_chunk(i, slice)`` computed for this rank's chunks.

    Each chunk's rows go straight into one array (no list of parts, no concatenation
    copy); the other ranks' chunks are gathered into it.

    Args:
        n: rows in all.
        rows_of_chunk: ``(chunk index, slice) -> (len(slice), D)`` float32 CPU tensor.
        chunk_size: rows per chunk (the API batch size).
        collective: the ranks' collective.
        out: ``out(D) -> (n, D)`` float32 array to fill (e.g. a buffer reused every
            iteration); default: a new array.
        report: progress callback ``(done, total)`` in this rank's rows.
    """
    allocate = out or (lambda dim: np.empty((n, dim), dtype=np.float32))
    full: np.ndarray | None = None
    mine: list[slice] = []
    for i, sl in reported_chunks(n, chunk_size, collective=collective, report=report):
        rows = rows_of_chunk(i, sl)
        if full is None:
            full = allocate(rows.shape[1])
        full[sl] = rows.numpy()
        mine.append(sl)
    if collective.world_size > 1:
        for rank_parts in collective.gather([(sl.start, sl.stop, full[sl]) for sl in mine]):
            for start, stop, part in rank_parts:
                if full is None:
                    full = allocate(part.shape[1])
                full[start:stop] = part
    return torch.from_numpy(full)


def assemble(
    parts: Sequence[tuple[np.ndarray, APIOutput]],
    *,
    n: int,
    collective: Collective,
    scratch: ScratchSpace,
    name: str,
    api_name: str = "the API",
) -> APIOutput:
    """Gather ``(positions, output)`` parts from all ranks into one ``n``-sample output.

    Every position must be covered exactly once; large image arrays are memory-mapped
    (``scratch``).

    Raises:
        ValueError: when two calls of the API returned different condition keys.
        RuntimeError: when nothing was produced or a position is not covered exactly once.
    """
    parts = [p for rank_parts in collective.gather(list(parts)) for p in rank_parts]
    if not parts:
        raise RuntimeError(f"no {name} samples were produced")
    first = parts[0][1]
    images = scratch.allocate((n, *first.images.shape[1:]), np.uint8, name=name)
    conditions = {k: np.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in first.conditions.items()}
    covered = np.zeros(n, dtype=np.int64)
    for positions, out in parts:
        images[positions] = out.images
        if set(out.conditions) != set(conditions):
            raise ValueError(
                f"{api_name} returned condition keys {sorted(out.conditions)} in one call and "
                f"{sorted(conditions)} in another; an API must return the same keys every call"
            )
        for k, v in out.conditions.items():
            conditions[k][positions] = v
        covered[positions] += 1
    if (covered != 1).any():
        raise RuntimeError(f"internal error: {name} positions covered {covered.min()}..{covered.max()} times")
    return APIOutput(images=images, conditions=conditions)
