"""W&B's modules imported before torch when the command will start a W&B run (start-up, issue 25).

``wandb.init`` imports ``wandb.sdk.launch.inputs.internal``, whose import defines about 80
pydantic models with ``use_attribute_docstrings``. On Python < 3.13 pydantic finds each model's
source through :func:`inspect.getmodule`, which walks every module in ``sys.modules``: after torch,
Lightning and the config's classes (about 3,600 modules loaded) ``import wandb`` and that module
cost about 1.0 CPU s on the project machine, before torch (90 modules loaded, 800 after them)
about 0.55 s (``docs/performance.md``, start-up). ``python -m pe_lightning`` therefore calls
:func:`preload_wandb` before it imports Lightning. It only changes *when* those modules are
imported, not what they are: the same W&B run starts later, from the logger, as before.

It imports nothing unless the command line or its ``--config`` files name a ``WandbLogger``,
W&B is installed and ``WANDB_MODE`` is not ``disabled``; a command that turns the logger off
(``--trainer.logger false``) or names another one imports nothing either.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

from pe_lightning.help import option_values

__all__ = ["WANDB_MODULES", "names_wandb_logger", "preload_wandb"]

#: Imported in this order by :func:`preload_wandb` (the second is what ``wandb.init`` imports).
WANDB_MODULES = ("wandb", "wandb.sdk.launch.inputs.internal")
_LOGGER_OPTION = "--trainer.logger"
_CONFIG_OPTIONS = ("--config", "-c")
_WANDB_LOGGER = "WandbLogger"


def _mentions_wandb_logger(node: Any) -> bool:
    """Whether a parsed config names a ``...WandbLogger`` class anywhere (e.g. ``trainer.logger``, or under ``fit:``)."""
    if isinstance(node, dict):
        return any(_mentions_wandb_logger(v) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_wandb_logger(v) for v in node)
    return isinstance(node, str) and node.rpartition(".")[2] == _WANDB_LOGGER


def names_wandb_logger(argv: Sequence[str]) -> bool:
    """Whether the command ``argv`` (without the program name) will use a W&B logger.

    A ``--trainer.logger`` value on the command line decides alone (it replaces the config's
    logger); otherwise the ``--config`` files decide. A file that cannot be read or parsed
    counts as not naming one: the CLI reports it.
    """
    given = option_values(argv, (_LOGGER_OPTION,))
    if given:
        return _WANDB_LOGGER in given[-1]
    import yaml

    for file in option_values(argv, _CONFIG_OPTIONS):
        try:
            config = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if _mentions_wandb_logger(config):
            return True
    return False


def preload_wandb(argv: Sequence[str]) -> bool:
    """Import :data:`WANDB_MODULES` now if ``argv`` will start a W&B run (see the module docstring).

    Call it before torch and Lightning are imported; later it saves nothing (and costs nothing
    more than the import the run would make anyway).

    Returns:
        Whether the modules were imported.
    """
    if os.environ.get("WANDB_MODE", "").lower() == "disabled" or importlib.util.find_spec("wandb") is None:
        return False
    if not names_wandb_logger(argv):
        return False
    for name in WANDB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # another W&B layout: the run imports what it needs itself
            return False
    return True
