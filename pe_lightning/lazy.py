"""Lazy package exports: ``import pe_lightning`` stays cheap, a name is imported when first used.

A package's ``__init__`` lists its public names and the submodule that defines each;
:func:`lazy_exports` returns the module ``__getattr__`` and ``__dir__`` (PEP 562) that import
that submodule on first access. ``python -m pe_lightning --help`` and a plain
``import pe_lightning`` then load neither torch nor Lightning (``tests/test_startup_imports.py``);
config ``class_path`` resolution (``pe_lightning.apis.DrawText``) imports what it names.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` on first access.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it (absolute, or relative to ``package``
            with a leading dot); a module's own name maps to the module itself.

    Returns:
        ``(__getattr__, __dir__)`` to assign at module level.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        value = module if module.__name__.rpartition(".")[2] == name and not hasattr(module, name) else getattr(module, name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later accesses skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
