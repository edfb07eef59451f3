"""Where a run keeps what must stay on the private side: never inside the output root.

Two things a PE run writes are derived from, or protect, the private data:

* the private-embedding cache (with pixel embeddings it *is* the private images), and
* the secret noise key of each run (whoever holds it can subtract the DP noise).

Neither may sit in the output root (``trainer.default_root_dir``), which holds what is
safe to share: synthetic populations, grids, checkpoints, logs, the W&B run. Both live
in a per-user folder outside it, by default the usual XDG cache location
``$XDG_CACHE_HOME/pe_lightning`` (``~/.cache/pe_lightning`` when unset), overridable
with the ``PE_LIGHTNING_PRIVATE_DIR`` environment variable or a module argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

__all__ = ["ENV_VAR", "check_private_side", "default_private_dir", "resolve_private_dir"]

ENV_VAR = "PE_LIGHTNING_PRIVATE_DIR"


def default_private_dir() -> Path:
    """``$PE_LIGHTNING_PRIVATE_DIR``, else ``$XDG_CACHE_HOME/pe_lightning``, else ``~/.cache/pe_lightning``."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pe_lightning"


def resolve_private_dir(configured: str | os.PathLike | None = None) -> Path:
    """The private-side folder: ``configured`` when given, else :func:`default_private_dir`."""
    return Path(configured).expanduser() if configured else default_private_dir()


def check_private_side(path: str | os.PathLike, *, output_roots: Iterable[str | os.PathLike], what: str) -> None:
    """Refuse a secret or private-derived file ``path`` inside an output root (what users share).

    Raises:
        ValueError: naming ``what`` and the root, when ``path`` is a root or lies inside one.
    """
    resolved = Path(path).resolve()
    for root in {Path(r).resolve() for r in output_roots}:
        if resolved == root or root in resolved.parents:
            raise ValueError(
                f"{what} {str(path)!r} is inside the output root {str(root)!r}, which holds what is safe to share; "
                "keep it on the private side (see private_state_dir)"
            )
