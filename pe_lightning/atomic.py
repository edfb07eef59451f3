"""Atomic file and folder writes: a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_directory", "atomic_write", "check_writable"]


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
