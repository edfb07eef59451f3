"""``import torchmetrics`` without the metric modules Lightning never uses (start-up, issue 25).

Lightning imports ``torchmetrics`` for two classes, ``Metric`` and ``MetricCollection``, but the
package's ``__init__`` imports every metric module, and with them torchvision's models,
transformers and ``scipy.signal`` when they are installed: about 2.4 of the CLI's 6 CPU seconds
of imports on the project machine (``python -X importtime -c "import lightning.pytorch"``).

:func:`install` (the CLI calls it before it imports Lightning) makes the next ``import
torchmetrics`` run only the package's preamble (its ``__about__`` names, its logger and its
numpy/PIL compatibility patches) and import ``torchmetrics.metric`` and
``torchmetrics.collections``. The rest of the package's own ``__init__`` runs, unchanged, the
first time the package is asked for a name it does not have yet (``torchmetrics.Accuracy``,
``from torchmetrics import Accuracy``); from then on the module is the one a plain import gives.
A submodule (``from torchmetrics.classification import MulticlassAccuracy``) imports as usual
meanwhile: the preamble's patches are in place and the metric modules patch what they need
themselves. Where the light path fails (another torchmetrics layout), the plain ``__init__``
runs at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import os
import sys
import threading
import types
from importlib.machinery import ModuleSpec
from typing import Any, Optional, Sequence

__all__ = ["install", "is_complete"]

_NAME = "torchmetrics"


class _LightTorchmetrics(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The meta-path finder and loader of the light ``torchmetrics`` (one per process, see :func:`install`)."""

    def __init__(self) -> None:
        self._loader: Any = None  # torchmetrics' own loader
        self._module: Optional[types.ModuleType] = None
        self._handler: Optional[logging.Handler] = None
        self._lock = threading.RLock()
        self._busy = False  # the full __init__ is running

    # ---------------------------------------------------------------- finder

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Any = None) -> Optional[ModuleSpec]:
        if fullname != _NAME:
            return None
        self._uninstall()  # one import to serve
        spec = None
        for finder in sys.meta_path:
            if hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
            return spec  # not a plain source package: imported as usual
        self._loader, spec.loader = spec.loader, self
        return spec

    # ---------------------------------------------------------------- loader

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # looks like a plain import from here on
        try:
            self._exec_light(module)
        except Exception:  # noqa: BLE001 - not the layout this was written for: the plain __init__
            self._remove_handler()
            self._exec_full(module)
            return
        module.__getattr__ = self._getattr  # PEP 562: called only for names the module lacks
        self._module = module

    def _exec_light(self, module: types.ModuleType) -> None:
        """The preamble of torchmetrics' ``__init__`` and the two classes Lightning imports."""
        about = importlib.import_module(f"{_NAME}.__about__")
        module.__dict__.update({name: getattr(about, name) for name in about.__all__})
        logger = logging.getLogger(_NAME)
        self._handler = logging.StreamHandler()
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        module._logger = logger
        module._PACKAGE_ROOT = os.path.dirname(module.__file__)
        module._PROJECT_ROOT = os.path.dirname(module._PACKAGE_ROOT)
        from lightning_utilities.core.imports import package_available

        if package_available("numpy"):
            import numpy

            numpy.Inf = numpy.inf  # torchmetrics' own compatibility patch
        if package_available("PIL"):
            import PIL

            if not hasattr(PIL, "PILLOW_VERSION"):
                PIL.PILLOW_VERSION = PIL.__version__
        importlib.import_module(f"{_NAME}.utilities")  # first, as the full __init__ does (circular imports)
        module.Metric = importlib.import_module(f"{_NAME}.metric").Metric
        module.MetricCollection = importlib.import_module(f"{_NAME}.collections").MetricCollection

    def _exec_full(self, module: types.ModuleType) -> None:
        exec(self._loader.get_code(_NAME), module.__dict__)  # noqa: S102 - the package's own __init__

    def _complete(self) -> None:
        """Run torchmetrics' own ``__init__`` in the light module (once)."""
        with self._lock:
            module = self._module
            if module is None or self._busy:
                return
            self._busy = True
            try:
                del module.__getattr__
                self._remove_handler()  # the full __init__ adds its own
                self._exec_full(module)
            finally:
                self._busy = False
                self._module = None

    def _remove_handler(self) -> None:
        if self._handler is not None:
            logging.getLogger(_NAME).removeHandler(self._handler)
            self._handler = None

    def _getattr(self, name: str) -> Any:
        module = self._module
        self._complete()
        if module is None or name not in module.__dict__:
            raise AttributeError(f"module {_NAME!r} has no attribute {name!r}")
        return module.__dict__[name]

    def _uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> bool:
    """Make the next ``import torchmetrics`` light (see the module docstring); call before importing Lightning.

    Returns:
        ``True`` when installed; ``False`` when torchmetrics is already imported (nothing to do)
        or :func:`install` already ran.
    """
    if _NAME in sys.modules or any(isinstance(f, _LightTorchmetrics) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _LightTorchmetrics())
    return True


def is_complete() -> bool:
    """Whether torchmetrics is imported with its whole ``__init__`` run (``False`` while light or not imported)."""
    module = sys.modules.get(_NAME)
    return module is not None and "__getattr__" not in module.__dict__
