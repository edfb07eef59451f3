"""``python -m pe_lightning fit --config configs/X.yaml``: LightningCLI over every pe_lightning module.

The model and data module are chosen by ``class_path`` in the config, so the PE module,
the downstream classifier and user modules share one entry point. For a PE model the CLI
also derives what a config should not have to repeat (:mod:`pe_lightning.run_config`):
``trainer.max_epochs`` from ``iterations``, and every output path from
``trainer.default_root_dir``; it shows the PE progress display instead of Lightning's
per-batch bar and model summary, and ends with the run summary. A PE ``fit`` holds its output
root for the whole run (:mod:`pe_lightning.run_lock`; ``--new_version`` writes into a fresh
``<root>/version_<n>`` instead), writes checkpoints atomically (:mod:`pe_lightning.checkpoint_io`)
and, resuming a finished run, does nothing (:mod:`pe_lightning.resume`; docs/resume.md).
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional, Sequence

from pe_lightning.lazy_torchmetrics import install as _install_light_torchmetrics

_install_light_torchmetrics()  # before Lightning imports torchmetrics: its metric modules load on first use

from jsonargparse import ArgumentError  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

import pe_lightning  # noqa: F401  - registers the classes for class_path resolution
from pe_lightning.atomic import remove_stale_temporaries
from pe_lightning.checkpoints import check_checkpoint, resolve_last
from pe_lightning.errors import (TRACEBACK_ENV, TRACEBACK_FLAG, ConfigError, is_user_error, parser_error_line, report,
                                 traceback_requested)
from pe_lightning.help import HELP_ALL_FLAG
from pe_lightning.quiet import silence_start_up_notices
from pe_lightning.resume import finished_run, move_to_fresh_version
from pe_lightning.run_config import fill_output_paths, is_private_evolution, link_budget, link_iterations, unlink_budget
from pe_lightning.run_lock import RunLock

__all__ = ["main", "console_main", "PECLI", "PROG"]

PROG = "python -m pe_lightning"
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc")
SERVE = "serve"  # python -m pe_lightning serve --config api.yaml (pe_lightning.serving.server)


class PECLI(LightningCLI):
    """LightningCLI with pe_lightning's defaults (see the module docstring)."""

    _budget_filled: list[str] = []

    def parse_arguments(self, parser, args) -> None:  # noqa: D102 - LightningCLI hook
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in _SPECIAL_CKPT_PATHS and not str(ckpt).startswith("registry"):
            check_checkpoint(ckpt)  # before Lightning reads its hyperparameters

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102 - LightningCLI hook
        from jsonargparse import ActionYesNo

        parser.add_argument("--epsilon", type=Optional[float], default=None,
                            help="The run's privacy budget epsilon: sets the PrivacyAccountant's (the planner reads it).")
        parser.add_argument("--delta", type=Optional[float], default=None,
                            help="The run's privacy budget delta: sets the PrivacyAccountant's (the planner reads it).")
        parser.add_argument(
            "--new_version", action=ActionYesNo, default=False,
            help="fit: write this run into a fresh <default_root_dir>/version_<n> (with every output folder set inside "
                 "the root), e.g. while another run holds the root",
        )

    def before_instantiate_classes(self) -> None:  # noqa: D102 - LightningCLI hook
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._budget_filled = link_budget(config)
        link_iterations(config)
        if self.subcommand == "fit" and config.get("new_version") and is_private_evolution(config):
            if config.get("ckpt_path"):
                raise ConfigError("--new_version starts a new run in a fresh folder; it cannot resume (--ckpt_path)")
            move_to_fresh_version(config)
        fill_output_paths(config)

    def after_instantiate_classes(self) -> None:  # noqa: D102 - LightningCLI hook
        config = self.config[self.subcommand] if self.subcommand else self.config
        unlink_budget(config, self._budget_filled)  # the saved config.yaml states the budget once

    def instantiate_trainer(self, **kwargs: Any):  # noqa: D102 - LightningCLI hook
        from pe_lightning.evolution import PrivateEvolution

        if isinstance(self.model, PrivateEvolution):
            kwargs = {**_pe_trainer_defaults(self._get(self.config_init, "trainer", default={})), **kwargs}
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:  # noqa: D102 - LightningCLI hook
        if self.config_init[self.subcommand].get("ckpt_path") == "last":
            last = resolve_last([getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks])
            if last is not None:
                check_checkpoint(last)

    def fit(self, model, datamodule=None, ckpt_path=None, **kwargs: Any) -> None:
        """``trainer.fit``; for a PE model (rank 0) holding the output root, and not at all when the run is finished."""
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        from pe_lightning.evolution import PrivateEvolution

        if not isinstance(model, PrivateEvolution) or rank_zero_only.rank != 0:  # DDP workers: rank 0 holds the root
            return self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
        root = Path(self.trainer.default_root_dir)
        output_dir = Path(model.output_dir) if model.output_dir else root
        with ExitStack() as held:
            for folder in dict.fromkeys([root.absolute(), output_dir.absolute()]):
                held.enter_context(RunLock(folder))
            for folder in [root, *(getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks)]:
                if folder:  # what a killed write (summary, checkpoint) left
                    remove_stale_temporaries(folder)
            resumed = resolve_last([getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]) \
                if ckpt_path == "last" else ckpt_path
            if resumed and datamodule is not None:
                done = finished_run(model=model, datamodule=datamodule, ckpt_path=resumed, output_dir=output_dir)
                if done:
                    print(done, flush=True)
                    return None
            return self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)


def _pe_trainer_defaults(trainer_config: dict) -> dict[str, Any]:
    """No model summary (PE has no parameters), the PE progress display, the run summary, no batch logging notice."""
    from lightning.fabric.plugins import CheckpointIO
    from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

    from pe_lightning.callbacks import PEProgressBar, RunSummary
    from pe_lightning.checkpoint_io import AtomicCheckpointIO

    callbacks = list(trainer_config.get("callbacks") or [])
    if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(PEProgressBar())
    if not any(isinstance(c, RunSummary) for c in callbacks):
        callbacks.append(RunSummary())
    defaults: dict[str, Any] = {"callbacks": callbacks}
    plugins = trainer_config.get("plugins")
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins] if plugins is not None else []
    if not any(isinstance(p, CheckpointIO) for p in plugins):  # atomic checkpoint writes that name the file on error
        defaults["plugins"] = [*plugins, AtomicCheckpointIO()]
    if trainer_config.get("enable_model_summary") is None:
        defaults["enable_model_summary"] = False
    if trainer_config.get("log_every_n_steps") is None:  # the module logs each iteration itself
        defaults["log_every_n_steps"] = 1
    return defaults


def main(args: Sequence[str] | None = None, *, run: bool = True, exit_on_error: bool = True) -> PECLI:
    """Run the CLI. ``args`` as on the command line (default ``sys.argv[1:]``); errors are raised.

    ``exit_on_error=False``: a parser error raises jsonargparse's ``ArgumentError`` instead of
    printing the usage and exiting (:func:`console_main` reports it in one line).
    """
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; `wandb sync` later
    silence_start_up_notices()
    if args is None:
        sys.argv = [a if a != HELP_ALL_FLAG else "--help" for a in sys.argv]  # LightningCLI's full help
    else:
        args = ["--help" if a == HELP_ALL_FLAG else a for a in args]
    return PECLI(
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": PROG, "description": "Private Evolution (DP synthetic images) on PyTorch Lightning",
                       "exit_on_error": exit_on_error},
    )


def console_main() -> int:
    """The command line: like :func:`main`, but a user error is one message and a non-zero exit.

    ``--traceback`` (removed before parsing) or ``PE_LIGHTNING_TRACEBACK=1`` shows the
    traceback instead; it is passed on to processes the run starts (DDP).
    """
    if TRACEBACK_FLAG in sys.argv[1:]:
        sys.argv = [a for a in sys.argv if a != TRACEBACK_FLAG]
        os.environ[TRACEBACK_ENV] = "1"
    try:
        if sys.argv[1:2] == [SERVE]:  # not a Lightning subcommand: serve an ImageAPI over HTTP (docs/serving.md)
            from pe_lightning.serving.server import serve_main

            serve_main(sys.argv[2:])
            return 0
        main(exit_on_error=traceback_requested())
    except ArgumentError as err:  # a config or command-line value the parser refuses: the field and why
        print(f"{PROG}: error: {parser_error_line(str(err))}", file=sys.stderr)
        print(f"{PROG}: (the options of a config: {PROG} fit --config X --help; {TRACEBACK_FLAG} for the full "
              "message)", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - reported, or re-raised with its traceback
        if traceback_requested() or not is_user_error(err):
            raise
        return report(err, prog=PROG)
    return 0
