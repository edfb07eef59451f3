"""The life cycle of a run's noise key: created once, read back on resume, shared by every rank.

The DP noise of iteration ``t`` is ``standard_normal(key, t, ...)`` (:mod:`pe_lightning.noise`).
A ``secret`` key comes from the operating system's CSPRNG at the run's first start and
lives in a file on the private side (never in the output root, a checkpoint or a log);
rank 0 reads or creates it and broadcasts it, so every rank draws the same noise even
when the file exists only on rank 0's machine. A ``seeded`` key is derived from the public
seed (reproducible tests and artefacts; private only while the seed stays secret).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pe_lightning.engine.sharding import Collective
from pe_lightning.noise import NoiseKey, NoiseKeyStore, seeded_noise_warning

__all__ = ["NoiseKeyLostWarning", "obtain_noise_key", "recorded_secret_key_id"]


class NoiseKeyLostWarning(UserWarning):
    """A resumed run could not read its noise key: it goes on with a fresh (still secret) key."""


def recorded_secret_key_id(noise_record: Sequence[Mapping[str, Any]]) -> str | None:
    """The public id of the secret key the run used last (its noise record), ``None`` before any secret release."""
    return next((r["key_id"] for r in reversed(noise_record) if r["noise_mode"] == "secret"), None)


def obtain_noise_key(
    *,
    mode: str,
    seed: int,
    path: Path,
    run_id: str,
    recorded_key_id: str | None,
    collective: Collective,
    info: Callable[[str], None] = print,
) -> NoiseKey:
    """The run's noise key, identical on every rank.

    Args:
        mode: ``"secret"`` or ``"seeded"``.
        seed: the public seed (``seeded`` mode only).
        path: the secret key's file (read on rank 0; created there when missing).
        run_id: the run's public id (for messages).
        recorded_key_id: public id of the secret key the run used so far (``None`` at the
            first start): a missing or different key on resume is warned about
            (:class:`NoiseKeyLostWarning`), and the run goes on with the key found or a new one.
        collective: the ranks' collective (rank 0 decides and broadcasts).
        info: where console messages go.
    """
    if mode == "seeded":
        info("!" * 80 + "\n" + seeded_noise_warning(seed) + "\n" + "!" * 80)
        return NoiseKey.from_seed(seed)
    secret = None
    if collective.rank == 0:
        key = NoiseKeyStore.load_file(path)
        if key is None:
            key = NoiseKey.generate()
            NoiseKeyStore.save_file(path, key)
            if recorded_key_id is not None:
                warnings.warn(
                    f"the noise key of run {run_id} ({path}) is missing: continuing with a fresh secret key "
                    f"({key.key_id}). The output stays private, but this run is no longer bit-reproducible "
                    "(an uninterrupted run would have drawn other noise); the ledger records the new key.",
                    NoiseKeyLostWarning, stacklevel=2,
                )
            else:
                info(f"[PE] new secret noise key {key.key_id} written to {path} (keep it private)")
        elif recorded_key_id is not None and key.key_id != recorded_key_id:
            warnings.warn(
                f"{path} holds noise key {key.key_id}, not the key {recorded_key_id} this run used so far: the output "
                "stays private but is no longer bit-reproducible; the ledger records the new key.",
                NoiseKeyLostWarning, stacklevel=2,
            )
        secret = key.secret
    return NoiseKey(secret=collective.broadcast(secret, src=0), mode="secret")
