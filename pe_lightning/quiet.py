"""Start-up notices that mean nothing for a PE run, each silenced where it arises (no blanket filter).

* Lightning's "💡 Tip: ... litlogger / litmodels" advertisements, logged by its logger and
  checkpoint connectors: dropped by a logging filter matching exactly those messages.
* torch's ``FutureWarning`` about ``LeafSpec``, raised by Lightning's own
  ``lightning/pytorch/utilities/_pytree.py`` (its copy of a torch helper) whenever the
  training data loader is set up: ignored for that message from that module only, as torch
  does for its own use of the class.

W&B's start-up warnings are fixed in :class:`pe_lightning.loggers.WandbLogger`, and
Lightning's empty model summary and per-batch bar are switched off for PE runs by the CLI.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["silence_start_up_notices"]

_TIP_PREFIXES = ("💡 Tip: For seamless cloud logging", "💡 Tip: For seamless cloud uploads")
_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _LightningTips(logging.Filter):
    """Drops Lightning's product tips (and nothing else)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIXES)


def silence_start_up_notices() -> None:
    """Install the two targeted filters (idempotent)."""
    logger = logging.getLogger(_RANK_ZERO_LOGGER)
    if not any(isinstance(f, _LightningTips) for f in logger.filters):
        logger.addFilter(_LightningTips())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
