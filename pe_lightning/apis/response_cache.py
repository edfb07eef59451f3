"""Responses of remote API requests kept on disk, so that a resumed run re-issues none it already received.

A request is keyed by everything that determines its answer: the call, the served config's
fingerprint, the iteration, the labels, the random stream (generator state or seed) and, for
VARIATION, the input images, conditions and degree (:func:`request_key`). Because PE derives
every generator from ``(seed, iteration, stream, chunk)`` (:mod:`pe_lightning.seeding`), a run
resumed from a checkpoint sends the same requests again, and finds their answers here.

Everything stored is public-side: synthetic images and public labels (the same bytes that
travelled to and from the model). Files are written temp-then-rename, one folder per
iteration; folders more than ``keep_iterations`` iterations old are removed when a new
iteration starts (a resume starts at most from the last checkpoint).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from pe_lightning.atomic import atomic_write

__all__ = ["ResponseCache", "request_key"]

_FOLDER = re.compile(r"^iteration_(\d+)$")


def request_key(*, call: str, fingerprint: str, iteration: int, arrays: Mapping[str, np.ndarray | None], extra: str = "") -> str:
    """A sha256 hex key over the call, the served config, the iteration and the request's arrays.

    Args:
        call: the endpoint (e.g. ``"random"``).
        fingerprint: the served API's config fingerprint (another model, another key).
        iteration: the PE iteration.
        arrays: the request's arrays by name (dtype, shape and bytes enter the key; ``None`` skipped).
        extra: any other text that changes the answer (e.g. a degree, a prompt).
    """
    h = hashlib.sha256(f"{call}|{fingerprint}|{int(iteration)}|{extra}".encode())
    for name in sorted(arrays):
        value = arrays[name]
        if value is None:
            continue
        value = np.ascontiguousarray(value)
        h.update(f"|{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.data)
    return h.hexdigest()


class ResponseCache:
    """Raw response bodies on disk, one folder per PE iteration.

    Args:
        directory: the cache folder (created when first written).
        keep_iterations: iterations kept behind the current one when :meth:`start_iteration` prunes.
    """

    def __init__(self, directory: str | Path, *, keep_iterations: int = 1) -> None:
        self.directory = Path(directory)
        self.keep_iterations = keep_iterations

    def _path(self, iteration: int, key: str) -> Path:
        return self.directory / f"iteration_{int(iteration)}" / f"{key}.npz"

    def get(self, iteration: int, key: str) -> bytes | None:
        """The stored body of request ``key`` of ``iteration``, ``None`` when there is none."""
        path = self._path(iteration, key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, iteration: int, key: str, body: bytes) -> None:
        """Store ``body`` (temp-then-rename: a crash never leaves half a file)."""
        atomic_write(self._path(iteration, key), lambda tmp: Path(tmp).write_bytes(body))

    def start_iteration(self, iteration: int) -> None:
        """Remove the folders of iterations before ``iteration - keep_iterations`` (only this cache's folders)."""
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            match = _FOLDER.match(child.name)
            if match and child.is_dir() and int(match.group(1)) < iteration - self.keep_iterations:
                shutil.rmtree(child, ignore_errors=True)
