"""Errors a user can fix, and how the command line reports them: one message, no traceback.

``python -m pe_lightning`` prints a config, data, budget or checkpoint error as one line
(``pe_lightning: error: ...``) and exits non-zero. The traceback is printed when asked for
with ``--traceback`` or ``PE_LIGHTNING_TRACEBACK=1``, and always for errors that look like
bugs (anything else raised outside pe_lightning's own code).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

__all__ = [
    "ConfigError", "TRACEBACK_ENV", "TRACEBACK_FLAG", "is_user_error", "parser_error_line", "report", "traceback_requested",
]

TRACEBACK_ENV = "PE_LIGHTNING_TRACEBACK"
TRACEBACK_FLAG = "--traceback"

_PACKAGE_DIRS = tuple(str(Path(p).resolve()) for p in (Path(__file__).parent, Path(__file__).parents[1] / "callbacks"))


class ConfigError(ValueError):
    """Two settings contradict each other (found before anything runs)."""


_STRUCTURE = re.compile(
    r"(Does not validate against|Subtypes:|Errors:|Given value type:|Expected a <class 'NoneType'>|tip: )"
)


def parser_error_line(message: str) -> str:
    """One line from a jsonargparse error (which nests a union's every branch over ~20 lines): the field and why.

    ``Parser key "model": ... class_path 'X': ... Option 'iteratons' is not accepted`` becomes
    ``--model.init_args.iteratons: Option 'iteratons' is not accepted (pe_lightning...X)``.
    """
    keys: list[str] = []
    cls = leaf = given = None
    for raw in message.splitlines():
        line = raw.strip().lstrip("-").strip()
        if line.startswith("error: "):
            line = line[len("error: "):]
        key = re.match(r'Parser key "([^"]+)":?\s*(.*)', line)
        if key and leaf is None:
            keys.append(key.group(1))
            line = key.group(2)
        path = re.match(r"Problem with given class_path '([^']+)':", line)
        if path and leaf is None:
            keys.append("init_args")
            cls = path.group(1)
            continue
        value = re.match(r"Given value: (.*)", line)
        if value:
            given = given or value.group(1)
            continue
        if line and leaf is None and not _STRUCTURE.match(line):
            leaf = line
    option = re.match(r"Option '([^']+)' is not accepted", leaf or "")
    if option:
        keys.append(option.group(1))
    if keys and keys[-1] == "init_args":
        keys.pop()
    field = "--" + ".".join(keys) if keys else ""
    why = leaf or " ".join(message.split())
    if given and "Got value" not in why and "NestedArg" not in given:
        why += f" (given: {given})"
    if cls:
        why += f" [{cls}]"
    return f"{field}: {why}" if field else why


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    # Wrong values and types, missing or unreadable files, missing optional packages.
    return (ValueError, TypeError, OSError, ImportError, MisconfigurationException)


def _raised_in(err: BaseException, folders: tuple[str, ...]) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(folders)


def _raised_by_pe_lightning(err: BaseException) -> bool:
    return _raised_in(err, _PACKAGE_DIRS)


def _unwrap(err: BaseException) -> BaseException:
    """The error a class raised while jsonargparse built it (jsonargparse re-raises it inside a summary of the config)."""
    import jsonargparse

    wrapper = (str(Path(jsonargparse.__file__).parent.resolve()),)
    while err.__cause__ is not None and _raised_in(err, wrapper):
        err = err.__cause__
    return err


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is reported as one line: a config/data/file error, or raised by pe_lightning itself."""
    err = _unwrap(err)
    return isinstance(err, _user_error_types()) or _raised_by_pe_lightning(err)


def traceback_requested() -> bool:
    """Whether ``PE_LIGHTNING_TRACEBACK`` is set to a true value (``--traceback`` sets it)."""
    return os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "yes")


def report(err: BaseException, *, prog: str = "pe_lightning") -> int:
    """Print ``err`` as one message on standard error; return the exit status (2: config, 1: other)."""
    err = _unwrap(err)
    name = type(err).__name__
    message = str(err).strip() or name
    kind = "" if name in ("ValueError", "ConfigError") else f" ({name})"
    print(f"{prog}: error{kind}: {message}", file=sys.stderr)
    print(f"{prog}: (run with {TRACEBACK_FLAG} or {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
    return 2 if isinstance(err, ConfigError) else 1
