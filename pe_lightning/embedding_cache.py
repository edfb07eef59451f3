"""On-disk cache of private embeddings, named by a keyed digest of the data and the embedding.

Embedding the private set is the same work in every run on the same data with the same
embedding network (e.g. 50,000 CIFAR10 images through Inception). An entry is named by an
HMAC-SHA256, under a secret kept in the cache folder (``cache.key``: 256 bits from
``secrets``, owner-only, created temp-then-link so that ranks racing to create it agree),
of :attr:`PrivateImageDataModule.fingerprint` (the private images and labels) and
:attr:`Embedding.fingerprint` (the embedding's class and configuration): a change of
either is a miss, never a stale hit, and a file name tells nobody without the key which
data set was used (an unsalted digest would: hash two candidate data sets and compare).

The cached files are derived from private data (with pixel embeddings they *are* the
private images): the folder is on the private side (docs/privacy.md), and neither a file
name nor a hit or miss is printed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

import numpy as np

from pe_lightning.population import atomic_write

__all__ = ["EmbeddingCache", "KEY_FILE"]

#: The cache's secret key, in the cache folder.
KEY_FILE = "cache.key"
_KEY_HEADER = "pe_lightning embedding-cache key v1 (secret: keep private)"


def _read_key(path: Path) -> bytes:
    lines = path.read_text().splitlines()
    try:
        if len(lines) != 2 or lines[0] != _KEY_HEADER or len(lines[1]) != 64:
            raise ValueError("bad layout")
        return bytes.fromhex(lines[1])
    except ValueError as err:
        raise ValueError(
            f"{path} is not a pe_lightning embedding-cache key file ({err}); remove it (the cache is recomputed)"
        ) from err


def _create_key(path: Path) -> bytes:
    """A new key at ``path``, or the one another process created first (never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # owner-only (0600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{_KEY_HEADER}\n{secrets.token_bytes(32).hex()}\n")
        try:
            os.link(tmp, path)  # atomic, and fails when the key exists: every process reads the same key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


class EmbeddingCache:
    """``.npy`` files of float32 ``(N, D)`` private embeddings in ``directory``.

    Args:
        directory: the cache folder (created on first use); on the private side.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._secret: bytes | None = None

    @property
    def key_path(self) -> Path:
        """The secret key's file (:data:`KEY_FILE` in the cache folder)."""
        return self.directory / KEY_FILE

    def _key_bytes(self) -> bytes:
        if self._secret is None:
            self._secret = _read_key(self.key_path) if self.key_path.is_file() else _create_key(self.key_path)
        return self._secret

    def key(self, *, data_fingerprint: str, embedding_fingerprint: str) -> str:
        """The entry name of a (private data, embedding) pair: 32 hex digits of an HMAC under the cache's key.

        Creates the key on first use.
        """
        message = f"pe_lightning/embedding-cache/v2\x00{data_fingerprint}\x00{embedding_fingerprint}".encode()
        return hmac.new(self._key_bytes(), message, hashlib.sha256).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.directory / f"private-{key}.npy"

    def load(self, key: str, *, num_rows: int) -> np.ndarray | None:
        """The cached ``(num_rows, D)`` array, or ``None`` on a miss or an unreadable / wrongly shaped file."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != num_rows or not np.isfinite(array).all():
            return None
        return array

    def save(self, key: str, array: np.ndarray) -> Path:
        """Write ``array`` atomically (a crash never leaves a half-written cache entry), owner-only."""
        array = np.ascontiguousarray(array, dtype=np.float32)

        def write(tmp: str) -> None:
            os.chmod(tmp, 0o600)
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)

        return atomic_write(self.path(key), write)
