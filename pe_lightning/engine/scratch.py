"""Large arrays that spill to memory-mapped files instead of living in RAM.

A PE iteration at the paper's scale holds the population, ``k`` lookahead variations of
it and their embeddings: ``(k + 1) x N`` images. :func:`allocate` returns a plain numpy
array when the request is small and a ``numpy.memmap`` backed by a scratch file when it
is larger than ``limit_bytes``, so peak resident memory stays bounded; callers treat both
as ``np.ndarray``. Scratch files are working state, never results: they are deleted when
the :class:`ScratchSpace` is closed and a crash leaves nothing that a resume reads.
"""

from __future__ import annotations

import itertools
import mmap
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ScratchSpace"]


class ScratchSpace:
    """Allocates arrays in memory or, above ``limit_bytes``, as memory-mapped scratch files.

    Args:
        directory: parent folder for the scratch folder (created on first spill).
        limit_bytes: arrays larger than this are memory-mapped; ``None`` never spills.
    """

    @classmethod
    def for_run(cls, output_dir: str | os.PathLike, *, spill_to_disk_mb: float | None) -> "ScratchSpace":
        """A run's scratch space: ``<output_dir>/.scratch``, spilling arrays above ``spill_to_disk_mb`` MiB."""
        limit = None if spill_to_disk_mb is None else int(spill_to_disk_mb * 2**20)
        return cls(directory=Path(output_dir) / ".scratch", limit_bytes=limit)

    def __init__(self, *, directory: str | os.PathLike, limit_bytes: int | None) -> None:
        if limit_bytes is not None and limit_bytes < 0:
            raise ValueError(f"limit_bytes must be >= 0 or None, got {limit_bytes}")
        self.directory = Path(directory)
        self.limit_bytes = limit_bytes
        self._folder: Path | None = None
        self._counter = itertools.count()

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype | str, *, name: str) -> np.ndarray:
        """An uninitialised array of ``shape``/``dtype``; memory-mapped when it is large."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.limit_bytes is None or nbytes <= self.limit_bytes:
            return np.empty(shape, dtype=dtype)
        if self._folder is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.directory))
        path = self._folder / f"{next(self._counter):04d}-{name}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    @staticmethod
    def evict(array: np.ndarray | None) -> None:
        """Write a memory-mapped array's dirty pages to its file and drop them from this
        process's resident memory (they are read back from the page cache or the file when
        next touched). No-op for in-memory arrays."""
        mm = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
        if mm is None:
            return
        array.flush()
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    @staticmethod
    def release(array: np.ndarray | None) -> None:
        """Delete the scratch file behind ``array`` (no-op for in-memory arrays)."""
        if isinstance(array, np.memmap) and array.filename:
            path = array.filename
            del array
            Path(path).unlink(missing_ok=True)

    def close(self) -> None:
        """Remove every scratch file (arrays that still map them must not be used afterwards)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
