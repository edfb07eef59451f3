"""``python -m pe_lightning fit --config configs/X.yaml``: LightningCLI over every pe_lightning module.

The model and data module are chosen by ``class_path`` in the config, so the PE module,
the downstream classifier and user modules share one entry point.
"""

from __future__ import annotations

import os
from typing import Sequence

from lightning.pytorch.cli import LightningCLI

import pe_lightning  # noqa: F401  - registers the classes for class_path resolution

__all__ = ["main", "PECLI"]


class PECLI(LightningCLI):
    """LightningCLI with pe_lightning's defaults (config saved next to the logs, overwritten)."""


def main(args: Sequence[str] | None = None, *, run: bool = True) -> PECLI:
    """Run the CLI. ``args`` as on the command line (default ``sys.argv[1:]``)."""
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; `wandb sync` later
    return PECLI(
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
    )
