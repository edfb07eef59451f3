"""A run's public identity: its id and its output folder (docs/design.md §2.5: both are public)."""

from __future__ import annotations

import secrets
from pathlib import Path

from pe_lightning.engine.sharding import Collective

__all__ = ["agree_run_id", "resolve_output_dir"]


def agree_run_id(run_id: str | None, *, collective: Collective) -> str:
    """The run's id on every rank: the restored one (resume), else 16 random hex digits from rank 0.

    The id is public (it names the run's key file on the private side and travels in the
    checkpoint); it is random so that two runs never share a key file by accident.
    """
    return collective.broadcast(run_id or secrets.token_hex(8), src=0)


def resolve_output_dir(output_dir: str | None, *, default_root_dir: str | Path) -> Path:
    """``output_dir``, or the output root ``default_root_dir`` when unset."""
    return Path(output_dir) if output_dir else Path(default_root_dir)
