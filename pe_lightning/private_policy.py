"""The private-side policy of one run: where its secrets go, what is refused, what the private data must hold.

The private side (:mod:`pe_lightning.private_dir`, docs/design.md §2.5) holds the run's
noise key and the private-embedding cache; neither may sit inside an output root. This
module turns a run's configuration into those paths, checks them, and checks the private
data module before any spend. Nothing here reads a private image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pe_lightning.embedding_cache import EmbeddingCache
from pe_lightning.noise import NoiseKey, NoiseKeyStore
from pe_lightning.private_dir import check_private_side, resolve_private_dir

__all__ = ["PrivateSidePolicy", "check_private_data"]


@dataclass(frozen=True)
class PrivateSidePolicy:
    """Where one run keeps what derives from, or protects, the private data.

    Attributes:
        private_state_dir: the private-side folder (default: :func:`~pe_lightning.private_dir.default_private_dir`).
        noise_key_file: the secret key's file (default ``<private dir>/noise_keys/<run id>.key``).
        cache_private_embeddings: keep the private embeddings on disk.
        embedding_cache_dir: that cache's folder (default ``<private dir>/embedding_cache``).
    """

    private_state_dir: str | None = None
    noise_key_file: str | None = None
    cache_private_embeddings: bool = True
    embedding_cache_dir: str | None = None

    @property
    def private_dir(self) -> Path:
        """The private-side folder, resolved."""
        return resolve_private_dir(self.private_state_dir)

    def noise_key_path(self, run_id: str) -> Path:
        """The file of run ``run_id``'s secret noise key."""
        if self.noise_key_file:
            return Path(self.noise_key_file).expanduser()
        return NoiseKeyStore(self.private_dir / "noise_keys").path(run_id)

    def noise_key(
        self, *, mode: str, seed: int, run_id: str, recorded_key_id: str | None, output_roots: Iterable[str | Path],
        check_location: bool, collective: Any, info: Callable[[str], None] = print,
    ) -> NoiseKey:
        """Run ``run_id``'s noise key (:func:`~pe_lightning.engine.noise_keys.obtain_noise_key`), every rank calls it.

        Args:
            mode: ``"secret"`` or ``"seeded"`` (:data:`~pe_lightning.noise.NOISE_MODES`).
            seed: the public seed (the ``seeded`` mode's key).
            run_id: the run's public id (names the key file).
            recorded_key_id: the id of the secret key the run's noise record used last (resume).
            output_roots: where the key file must not be.
            check_location: refuse a ``secret`` key file inside an output root (rank 0).
            collective: shares rank 0's key with every rank.
            info: where the lines saying what happened go.
        """
        from pe_lightning.engine.noise_keys import obtain_noise_key

        path = self.noise_key_path(run_id)
        if mode == "secret" and check_location:
            check_private_side(path, output_roots=output_roots, what="noise_key_file")
        return obtain_noise_key(mode=mode, seed=seed, path=path, run_id=run_id, recorded_key_id=recorded_key_id,
                                collective=collective, info=info)

    def embedding_cache(self, *, output_roots: Iterable[str | Path]) -> EmbeddingCache | None:
        """The private-embedding cache (``None`` when off), refused inside an output root."""
        if not self.cache_private_embeddings:
            return None
        folder = Path(self.embedding_cache_dir) if self.embedding_cache_dir else self.private_dir / "embedding_cache"
        check_private_side(folder, output_roots=output_roots, what="the private-embedding cache folder")
        return EmbeddingCache(folder)


def check_private_data(datamodule: Any, *, class_names: Sequence[str], privacy_unit: str) -> np.ndarray:
    """Refuse private data PE cannot run on, before any spend; return the private samples per class.

    The counts stay inside the run (class sizes opt into them only with
    ``counts_from_private_labels``); they are never printed or logged.

    Raises:
        ValueError: a class without private samples (nobody would vote for it), or
            ``privacy_unit='client'`` without client ids.
    """
    present = np.bincount(datamodule.private_labels, minlength=len(class_names))
    empty = [name for name, n in zip(class_names, present) if n == 0]
    if empty:
        raise ValueError(
            f"classes {empty} have no private samples; remove them from the data module's classes "
            "(PE cannot evolve a class nobody votes for)"
        )
    if privacy_unit == "client" and getattr(datamodule, "private_clients", None) is None:
        raise ValueError(
            f"privacy_unit='client' needs client ids, but {type(datamodule).__name__} gives no private_clients "
            "(image folders: clients='subfolder' or a CSV; npz: a 'clients' array)"
        )
    return present
