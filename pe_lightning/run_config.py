"""What ``python -m pe_lightning`` derives from a parsed config before it builds anything.

* **T once**: a PE model's ``iterations`` sets ``trainer.max_epochs`` (one epoch is one PE
  iteration); an explicitly different ``max_epochs`` is a :class:`~pe_lightning.errors.ConfigError`.
* **One budget**: the ``PrivacyAccountant``'s ``(epsilon, delta)`` is the run's budget, stated
  once; ``--epsilon``/``--delta`` set it, and a planned model's ``epsilon``/``delta`` are filled
  from it (:func:`link_budget`; one that disagrees is a :class:`~pe_lightning.errors.ConfigError`).
* **One output root**: a logger's unset ``save_dir``, a ``ModelCheckpoint``'s unset
  ``dirpath`` and a remote API's unset ``response_cache`` are derived from
  ``trainer.default_root_dir`` (``<root>``, ``<root>/checkpoints``, ``<root>/api_responses``), like the PE module's ``output_dir`` and the callbacks' folders,
  so ``--trainer.default_root_dir X`` moves everything a run writes that is safe to share.

The functions edit the ``jsonargparse`` namespace of one subcommand in place;
:func:`shipped_config` finds the YAML configs that ship inside the package.
"""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
import os
from pathlib import Path
from typing import Any

from pe_lightning.errors import ConfigError

__all__ = [
    "BUDGET_FIELDS", "fill_output_paths", "is_private_evolution", "link_budget", "link_iterations", "resolve_class",
    "shipped_config", "unlink_budget",
]

#: The budget's fields: the top-level flags ``--epsilon``/``--delta`` and the accountant's init_args.
BUDGET_FIELDS = ("epsilon", "delta")

#: The package the top-level ``configs/`` folder is installed as (pyproject.toml package-dir).
CONFIGS_PACKAGE = "pe_lightning.configs"
#: The folder under the output root where a remote API keeps the answers it received (RemoteImageAPI).
API_RESPONSES = "api_responses"


def shipped_config(name: str) -> Path:
    """The path of a YAML config shipped with the package (``configs/<name>`` of the checkout).

    Resolves through :func:`importlib.resources.files`, so it works from an installed wheel
    and from an editable install alike.

    Args:
        name: the file name, e.g. ``"mnist_drawtext.yaml"`` (no folders).

    Returns:
        The config file's path on disk.

    Raises:
        ValueError: ``name`` is not a bare ``.yaml`` file name.
        FileNotFoundError: no shipped config has that name (the shipped ones are listed), or
            the package's configs are not files on disk (e.g. a zipped install).
    """
    if not isinstance(name, str) or not name.endswith(".yaml") or Path(name).name != name or name.startswith("."):
        raise ValueError(f"shipped_config name must be a bare .yaml file name such as 'mnist_drawtext.yaml', got {name!r}")
    root = importlib.resources.files(CONFIGS_PACKAGE)
    resource = root / name
    if not resource.is_file():
        shipped = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
        raise FileNotFoundError(f"shipped_config: no config {name!r} in {CONFIGS_PACKAGE}; shipped configs: {shipped}")
    if not isinstance(resource, os.PathLike):
        raise FileNotFoundError(
            f"shipped_config: {CONFIGS_PACKAGE} is not installed as files on disk ({type(resource).__name__}); "
            "install pe_lightning unzipped"
        )
    return Path(resource)


def resolve_class(class_path: str) -> type | None:
    """The class named by a config's ``class_path`` (``None`` when it cannot be imported)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _entries(value: Any) -> list:
    """The class entries (namespaces with a ``class_path``) of a logger/callbacks value."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if getattr(v, "class_path", None)]


def is_private_evolution(config: Any) -> bool:
    """Whether ``config.model`` is a :class:`~pe_lightning.PrivateEvolution` (or a subclass)."""
    from pe_lightning.evolution import PrivateEvolution

    cls = resolve_class(getattr(config.get("model"), "class_path", "") or "")
    return isinstance(cls, type) and issubclass(cls, PrivateEvolution)


def _accountants(config: Any) -> list:
    """The config's ``PrivacyAccountant`` entries (or subclasses) in ``trainer.callbacks``."""
    from pe_lightning.callbacks.privacy import PrivacyAccountant

    found = []
    for entry in _entries(config.trainer.get("callbacks") or []):
        cls = resolve_class(entry.class_path)
        if isinstance(cls, type) and issubclass(cls, PrivacyAccountant):
            found.append(entry)
    return found


def _plans_from_budget(config: Any) -> bool:
    """Whether the model reads the budget (it has ``epsilon``/``delta`` arguments and plans, e.g. PlannedPrivateEvolution)."""
    cls = resolve_class(getattr(config.get("model"), "class_path", "") or "")
    return hasattr(cls, "planned_iterations")


def link_budget(config: Any) -> list[str]:
    """State the budget once: the flags set the accountant, the accountant fills a planned model.

    ``--epsilon``/``--delta`` (top-level keys ``epsilon``/``delta``) set the one
    ``PrivacyAccountant``'s init_args and are cleared again. A model that plans from the
    budget (``PlannedPrivateEvolution``) gets the accountant's values in its unset
    ``epsilon``/``delta``; :func:`unlink_budget` clears them after the classes are built, so
    the run's saved ``config.yaml`` states the budget once too.

    Returns:
        The model fields filled here (for :func:`unlink_budget`).

    Raises:
        ConfigError: a flag without exactly one accountant to set, or a model value that
            contradicts the accountant's.
    """
    accountants = _accountants(config)
    flags = {f: config.get(f) for f in BUDGET_FIELDS if config.get(f) is not None}
    if flags:
        if len(accountants) != 1:
            raise ConfigError(
                f"--{'/--'.join(flags)} set the budget of the run's PrivacyAccountant, and this config has "
                f"{len(accountants)}: add pe_lightning.callbacks.PrivacyAccountant to trainer.callbacks"
            )
        for field, value in flags.items():
            accountants[0].init_args[field] = float(value)
            config[field] = None
    if not (is_private_evolution(config) and _plans_from_budget(config)) or len(accountants) != 1:
        return []
    init_args, filled = config.model.init_args, []
    for field in BUDGET_FIELDS:
        theirs = accountants[0].init_args.get(field)
        mine = init_args.get(field)
        if mine is None:
            init_args[field] = theirs
            filled.append(field)
        elif theirs is not None and float(mine) != float(theirs):
            raise ConfigError(
                f"model.init_args.{field}={mine:g} contradicts the PrivacyAccountant's {field}={theirs:g}: the budget "
                f"is stated once, on the accountant (or with --{field}); remove model.init_args.{field}, the planner "
                "reads the accountant's"
            )
    return filled


def unlink_budget(config: Any, filled: list[str]) -> None:
    """Clear the model fields :func:`link_budget` filled (the saved config states the budget once)."""
    for field in filled:
        config.model.init_args[field] = None


def link_iterations(config: Any) -> None:
    """Set ``trainer.max_epochs`` from a PE model's ``iterations``.

    Raises:
        ConfigError: ``trainer.max_epochs`` is set to another number.
    """
    if not is_private_evolution(config):
        return
    cls = resolve_class(config.model.class_path)
    if hasattr(cls, "planned_iterations"):  # e.g. PlannedPrivateEvolution: T comes from its plan
        iterations = cls.planned_iterations(config.model.init_args)
        source, fix = f"the T={iterations} that {cls.__name__} plans", "leave trainer.max_epochs unset"
    else:
        iterations = config.model.init_args.iterations
        source = f"model.init_args.iterations={iterations}"
        fix = "set only --model.init_args.iterations, which sets max_epochs"
    max_epochs = config.trainer.get("max_epochs")
    if max_epochs is None:
        config.trainer.max_epochs = iterations
    elif max_epochs != iterations:
        raise ConfigError(f"trainer.max_epochs={max_epochs} contradicts {source} (one epoch is one PE iteration): {fix}")


def _unset(entry: Any, arg: str) -> bool:
    """Whether ``entry.init_args.<arg>`` exists and still has its class's default (or ``None``)."""
    init_args = getattr(entry, "init_args", None)
    if init_args is None or arg not in init_args:
        return False
    value = init_args[arg]
    if value is None:
        return True
    cls = resolve_class(entry.class_path)
    try:
        default = inspect.signature(cls).parameters[arg].default if cls is not None else inspect.Parameter.empty
    except (KeyError, TypeError, ValueError):
        return False
    return default is not inspect.Parameter.empty and value == default


def fill_output_paths(config: Any) -> Path:
    """Derive unset logger ``save_dir``, checkpoint ``dirpath``, API ``response_cache`` from ``trainer.default_root_dir``.

    Also an API's unset ``response_cache`` (:class:`~pe_lightning.apis.RemoteImageAPI`):
    ``<root>/api_responses``.

    Returns:
        The output root (``trainer.default_root_dir``, or the working directory when unset).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = config.trainer
    root = Path(trainer.get("default_root_dir") or os.getcwd())
    for logger in _entries(trainer.get("logger")):
        if _unset(logger, "save_dir"):
            logger.init_args.save_dir = str(root)
    for callback in _entries(trainer.get("callbacks") or []):
        cls = resolve_class(callback.class_path)
        if isinstance(cls, type) and issubclass(cls, ModelCheckpoint) and _unset(callback, "dirpath"):
            callback.init_args.dirpath = str(root / "checkpoints")
    api = getattr(getattr(config.get("model"), "init_args", None), "api", None)
    if getattr(api, "class_path", None) and _unset(api, "response_cache"):  # APIs behind HTTP (RemoteImageAPI)
        api.init_args.response_cache = str(root / API_RESPONSES)
    return root
