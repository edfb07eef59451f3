"""Atomic file and folder writes: a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_directory", "atomic_write", "check_writable", "names_file", "remove_stale_temporaries"]

#: The names :func:`atomic_write` and :func:`atomic_directory` give their temporaries
#: (``.<name>.<8 random characters>.tmp``, from :mod:`tempfile`) and the replaced folder (``.<name>.old``).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|^\..+\.old$")


@contextmanager
def names_file(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (e.g. ``ENOSPC`` from a write) as one naming ``path``.

    The error keeps its ``errno`` (so its class: ``ENOSPC`` stays an ``OSError`` with
    ``errno 28``) and its reason; ``filename`` becomes ``path``. An error that already
    names a file passes unchanged.
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        reason = err.strerror or str(err) or type(err).__name__
        if err.errno is None:
            raise OSError(f"{reason}: {str(path)!r}") from err
        raise OSError(err.errno, reason, str(path)) from err


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what a killed :func:`atomic_write` / :func:`atomic_directory` left in ``folder``.

    Only entries named like their temporaries (``.<name>.<8 characters>.tmp``) or a replaced
    folder (``.<name>.old``) are removed; call it only while no other process writes there
    (the run holds its output root's lock, :mod:`pe_lightning.run_lock`).

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if not _TEMPORARY.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _unwritable(path: Path, err: OSError) -> OSError:
    """An ``OSError`` of the same kind as ``err`` whose message names ``path`` and its folder."""
    reason = err.strerror or str(err)
    msg = (
        f"cannot write {str(path)!r}: its folder {str(path.parent)!r} could not be created or is not writable "
        f"({reason}{': ' + repr(err.filename) if err.filename else ''}); choose a writable output folder"
    )
    return OSError(err.errno, msg) if err.errno is not None else OSError(msg)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], object]) -> Path:
    """Write a file atomically: ``write_fn(tmp_path)`` then rename over ``path``.

    A crash leaves either the old file or the new one, never a half-written file.

    Raises:
        OSError: (same kind as the underlying error) naming ``path`` when its folder cannot
            be created or written to; whatever ``write_fn`` raises, after removing the
            temporary file (an existing file at ``path`` is left untouched).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _unwritable(path, err) from err
    os.close(fd)
    try:
        with names_file(path):
            write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_directory(path: str | os.PathLike, fill_fn: Callable[[Path], object]) -> Path:
    """Create directory ``path`` atomically: ``fill_fn(tmp_dir)`` then rename it into place.

    An existing directory at ``path`` is replaced only after the new one is complete.

    Raises:
        OSError: naming ``path`` when its parent folder cannot be created or written to;
            whatever ``fill_fn`` raises, after removing the temporary folder (an existing
            directory at ``path`` is left untouched).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise _unwritable(path, err) from err
    try:
        with names_file(path):
            fill_fn(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_writable(folder: str | os.PathLike, *, field: str, tag: str = "") -> Path:
    """Create ``folder`` and write and remove a probe file in it, so a run fails before any work.

    Raises:
        PermissionError: naming ``field`` and the folder.
    """
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{tag}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{field} {str(out)!r} is not writable: {err}") from err
    return out
