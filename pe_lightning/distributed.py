"""Sharding work across ranks and gathering the results, on top of Lightning's strategy.

Work is split into *chunks* whose boundaries and random streams depend only on the
problem (``api_batch_size``), never on the number of processes: rank ``r`` of ``W``
computes chunks ``i`` with ``i % W == r``. Gathering the chunks and ordering them by
index therefore gives bit-identical results on 1 or many processes (DESIGN.md
invariant 3). Process management stays Lightning's (``strategy="ddp"``, SLURM, torchrun);
this module only calls the collective operations of the process group it set up.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch.distributed as dist

__all__ = ["chunk_slices", "my_chunks", "gather_objects", "rank_and_world"]


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


def my_chunks(n: int, chunk_size: int, *, rank: int, world_size: int) -> Iterator[tuple[int, slice]]:
    """``(chunk index, slice)`` of the chunks of ``range(n)`` that ``rank`` computes (round robin)."""
    for i, sl in enumerate(chunk_slices(n, chunk_size)):
        if i % world_size == rank:
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
