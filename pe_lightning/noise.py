"""The DP noise stream: Gaussian noise keyed by a secret nobody who reads the run can know.

The Gaussian mechanism is private only if the adversary cannot predict its noise. Every
other random stream of a PE run (RANDOM and VARIATION calls, lookahead, selection) is
post-processing or public and may come from the public ``seed``; the noise must not: a
reader of the config who knows the seed could regenerate the noise and subtract it.

* **Secret mode** (the default): a :class:`NoiseKey` of 256 bits from the operating
  system's CSPRNG (:mod:`secrets`), created at a run's first start and kept on the private
  side (:class:`NoiseKeyStore`, outside the output root; never in checkpoints,
  hyperparameters, logs or W&B). Only its public :attr:`NoiseKey.key_id` (a one-way
  digest) is recorded.
* **Seeded mode** (explicit opt-in, for tests, debugging and artefacts that must be
  bit-reproducible): the key is derived from the public seed. The output is then private
  only while the seed stays secret; :func:`seeded_noise_warning` says so loudly.

Both modes use the same sampler, :func:`standard_normal`: SHAKE-256 (a cryptographic
extendable-output function) of the key, a domain tag, the iteration and the draw's shape
gives uniform 53-bit floats, which the Box-Muller transform turns into float64 standard
normals. Given the key, a draw is a pure function of ``(iteration, size)``, so every DDP
rank draws the same noise and a resumed run draws what the uninterrupted one would have.

Known limit (not covered by any test): floating-point attacks on the Gaussian sampler
(Mironov 2012: the set of float64 values a sampler can produce leaks information about
the un-noised value). The noise is also truncated at about 8.6 sigma by the 53-bit
uniforms (probability about 1e-17 per bin, far below any delta used here).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pe_lightning.population import atomic_write

__all__ = [
    "NOISE_MODES",
    "NoiseKey",
    "NoiseKeyStore",
    "SeededNoiseWarning",
    "seeded_noise_warning",
    "standard_normal",
]

NOISE_MODES = ("secret", "seeded")
KEY_BYTES = 32  # 256 bits (the issue asks for at least 128)
_DOMAIN = b"pe_lightning/gaussian-noise/v1\x00"
_FILE_HEADER = "pe_lightning noise key v1"


class SeededNoiseWarning(UserWarning):
    """The DP noise is derived from the public seed: private only while the seed is secret."""


def seeded_noise_warning(seed: int) -> str:
    """Emit (and return) the loud warning for ``noise: seeded``."""
    msg = (
        f"noise='seeded': the DP Gaussian noise is derived from seed={seed}. Anyone who knows the seed (it is in the "
        "config, the checkpoint's hyperparameters and the logs) can regenerate the noise and remove it: the output is "
        "differentially private ONLY while the seed stays secret. Use noise='secret' (the default) for real releases."
    )
    warnings.warn(msg, SeededNoiseWarning, stacklevel=3)
    return msg


@dataclass(frozen=True, repr=False)
class NoiseKey:
    """The key of a run's DP noise stream.

    Args:
        secret: the key bytes (secret mode: 32 bytes from :func:`secrets.token_bytes`).
        mode: ``"secret"`` or ``"seeded"`` (derived from the public seed).
    """

    secret: bytes
    mode: Literal["secret", "seeded"] = "secret"

    def __post_init__(self) -> None:
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {self.mode!r}")
        if not isinstance(self.secret, bytes) or len(self.secret) < 16:
            raise ValueError("a noise key must be at least 16 bytes (128 bits)")

    @classmethod
    def generate(cls) -> "NoiseKey":
        """A fresh secret key from the operating system's CSPRNG."""
        return cls(secret=secrets.token_bytes(KEY_BYTES), mode="secret")

    @classmethod
    def from_seed(cls, seed: int) -> "NoiseKey":
        """The reproducible (NOT secret) key of ``noise='seeded'``."""
        return cls(secret=hashlib.sha256(f"pe_lightning/seeded-noise/v1/{int(seed)}".encode()).digest(), mode="seeded")

    @property
    def key_id(self) -> str:
        """A public, one-way identifier of the key (16 hex digits); safe to log and checkpoint."""
        return hashlib.sha256(b"pe_lightning/noise-key-id/v1\x00" + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:  # never print the secret
        return f"NoiseKey(mode={self.mode!r}, key_id={self.key_id!r})"


def standard_normal(key: NoiseKey, *, iteration: int, shape: tuple[int, ...] | int, stream: str = "") -> np.ndarray:
    """Float64 standard normals of ``shape``, a pure function of ``(key, iteration, shape, stream)``.

    Args:
        key: the run's noise key.
        iteration: the PE iteration (``>= 0``) the noise belongs to; different iterations
            draw independent noise.
        shape: the shape of the draw (e.g. ``(N,)`` for one histogram of ``N`` bins).
        stream: names a further independent draw of the same iteration (``"tone"``: the
            peak-level counts of :mod:`pe_lightning.engine.tone`); ``""`` (the vote histogram's)
            draws what it always drew.

    Returns:
        ``np.ndarray`` of float64, each entry N(0, 1), independent across entries.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if iteration < 0 or any(s < 0 for s in shape):
        raise ValueError(f"iteration and shape must be >= 0, got iteration={iteration}, shape={shape}")
    size = math.prod(shape)
    pairs = (size + 1) // 2
    xof = hashlib.shake_256()
    xof.update(_DOMAIN + len(key.secret).to_bytes(2, "little") + key.secret)
    xof.update(int(iteration).to_bytes(8, "little") + len(shape).to_bytes(2, "little"))
    xof.update(b"".join(int(s).to_bytes(8, "little") for s in shape))
    if stream:
        xof.update(b"\x00stream:" + stream.encode())
    bits = np.frombuffer(xof.digest(16 * pairs), dtype="<u8")
    # 53-bit uniforms in the open interval (0, 1): log never sees 0.
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0**-53)
    radius = np.sqrt(-2.0 * np.log(u[:pairs]))
    angle = (2.0 * math.pi) * u[pairs:]
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out[:size].reshape(shape)


class NoiseKeyStore:
    """Noise keys on the private side: ``<directory>/<run_id>.key``, owner-only permissions.

    Args:
        directory: the folder of key files (e.g. ``<private_state_dir>/noise_keys``); it must
            not be inside a folder that is shared (the output root).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, run_id: str) -> Path:
        if not run_id or not all(c in "0123456789abcdef" for c in run_id):
            raise ValueError(f"run_id must be a hex string, got {run_id!r}")
        return self.directory / f"{run_id}.key"

    @staticmethod
    def save_file(path: str | os.PathLike, key: NoiseKey) -> Path:
        """Write ``key`` to ``path`` atomically, readable by its owner only."""
        if key.mode != "secret":
            raise ValueError("only secret keys are stored; a seeded key is derived from the seed")
        text = f"{_FILE_HEADER}\n{key.secret.hex()}\n"

        def write(tmp: str) -> None:  # atomic_write's temp file is created 0600 (mkstemp); the rename keeps it
            os.chmod(tmp, 0o600)
            Path(tmp).write_text(text)

        return atomic_write(path, write)

    @staticmethod
    def load_file(path: str | os.PathLike) -> NoiseKey | None:
        """The key in ``path``; ``None`` when the file does not exist.

        Raises:
            ValueError: naming the file when it exists but is not a noise key file.
        """
        path = Path(path)
        if not path.is_file():
            return None
        lines = path.read_text().split()
        try:
            if " ".join(lines[:-1]) != _FILE_HEADER:
                raise ValueError("bad header")
            return NoiseKey(secret=bytes.fromhex(lines[-1]), mode="secret")
        except (ValueError, IndexError) as err:
            raise ValueError(f"{path} is not a pe_lightning noise key file ({err}); expected '{_FILE_HEADER}' then hex") from err

    def save(self, run_id: str, key: NoiseKey) -> Path:
        return self.save_file(self.path(run_id), key)

    def load(self, run_id: str) -> NoiseKey | None:
        return self.load_file(self.path(run_id))
