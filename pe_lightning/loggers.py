"""Lightning's W&B and CSV loggers with ``save_dir`` defaulting to the run's output root.

``python -m pe_lightning`` fills an unset ``save_dir`` with ``trainer.default_root_dir``
(:func:`pe_lightning.run_config.fill_output_paths`), so a config names one folder and
``--trainer.default_root_dir X`` moves the logs with everything else. Used from Python
without the CLI, an unset ``save_dir`` means the working directory, as in Lightning.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import WandbLogger as _WandbLogger

__all__ = ["CSVLogger", "WandbLogger"]


class WandbLogger(_WandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger` that starts quietly.

    Two of W&B's start-up warnings are fixed where they arise: ``save_dir`` is created
    before W&B starts (W&B warns "git root ... does not exist" when it is missing), and
    ``anonymous`` is passed to ``wandb.init`` only when set (Lightning always passes it,
    and W&B warns that the setting has no effect).

    Args:
        save_dir: the folder of the ``wandb/`` run directory (default: the output root
            under the CLI, the working directory otherwise).
        anonymous: passed to ``wandb.init`` only when not ``None``.
        **kwargs: every other :class:`lightning.pytorch.loggers.WandbLogger` argument.
    """

    def __init__(self, *, save_dir: str | None = None, anonymous: bool | None = None, **kwargs: Any) -> None:
        save_dir = os.fspath(save_dir) if save_dir is not None else "."
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(save_dir=save_dir, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)


class CSVLogger(_CSVLogger):
    """:class:`lightning.pytorch.loggers.CSVLogger` whose ``save_dir`` may be left unset.

    Args:
        save_dir: the logs' root folder (default: the output root under the CLI, the
            working directory otherwise).
        **kwargs: every other :class:`lightning.pytorch.loggers.CSVLogger` argument.
    """

    def __init__(self, *, save_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir=os.fspath(save_dir) if save_dir is not None else ".", **kwargs)
