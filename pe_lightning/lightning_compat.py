"""The two places where PE works around Lightning's assumptions about gradient training.

Both touch Lightning internals, so both live here, each with a test
(``tests/test_lightning_compat.py``) that fails loudly when a Lightning upgrade changes
what they rely on:

1. :func:`skip_ddp_wrapping`: PE trains no parameters, so ``DistributedDataParallel`` (a
   gradient all-reduce) has nothing to do and refuses the module. Under
   ``strategy="ddp"`` the process group, launch and sampler stay Lightning's; the module
   is just not wrapped. Relies on ``DDPStrategy.configure_ddp`` being the method that
   wraps the model.
2. :func:`count_iteration_as_step`: no optimizer ever steps, so ``trainer.global_step``
   would stay 0, ``ModelCheckpoint`` would never save and ``max_steps`` would never stop.
   Each completed PE iteration is counted as one step. Relies on
   ``trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress`` being what
   ``global_step`` counts under manual optimization.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy

__all__ = ["count_iteration_as_step", "skip_ddp_wrapping"]


def skip_ddp_wrapping(strategy: pl.strategies.Strategy) -> None:
    """Under a :class:`DDPStrategy`, leave the module unwrapped (call from ``configure_model``)."""
    if isinstance(strategy, DDPStrategy):
        strategy.configure_ddp = lambda: None


def count_iteration_as_step(trainer: pl.Trainer) -> None:
    """Advance ``trainer.global_step`` by one (call once per completed PE iteration)."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()
