"""One run per output root: a lock file naming its holder, and a fresh versioned sub-folder on request.

``python -m pe_lightning fit`` takes ``<root>/.pe_lightning.lock`` before it writes anything
(the saved ``config.yaml`` included) and removes it when the run ends, by an error too.
The file holds the holder's pid, host and process start time. A second run on the same root
refuses with one line naming the holder (:class:`OutputRootInUseError`), unless it is asked
for a fresh sub-folder ``<root>/version_<n>`` (:func:`fresh_version`). A lock whose process
is gone (same host, no such pid, or a pid reused by a later process) is stale: it is taken
over. A lock from another host cannot be checked and is always respected.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from pe_lightning.atomic import names_file

__all__ = ["LOCK_FILE", "OutputRootInUseError", "RunLock", "fresh_version"]

#: The lock file's name in the output root.
LOCK_FILE = ".pe_lightning.lock"


class OutputRootInUseError(RuntimeError):
    """Another live run holds the output root."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks after boot, Linux ``/proc``), ``None`` where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` exists on this host and (when known) is the one that started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


class RunLock:
    """The lock on one output root (a file created atomically with ``os.link``).

    Args:
        root: the output root (created if missing).

    Use :meth:`acquire` and :meth:`release`, or ``with RunLock(root):``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.held = False
        self._record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid())}

    def holder(self) -> dict | None:
        """The lock file's content (``pid``, ``host``, ``started``, ``since``), ``None`` when there is none."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written by its holder, or damaged: treated as held

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != self._record["host"] or not isinstance(holder.get("pid"), int):
            return False
        return not _alive(holder["pid"], holder.get("started"))

    def acquire(self) -> "RunLock":
        """Take the lock (a stale one is taken over).

        Raises:
            OutputRootInUseError: another live run holds it (the message names its pid and host).
            OSError: the root cannot be written (named).
        """
        with names_file(self.path):
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f"{LOCK_FILE}-", suffix=".new")  # not a name remove_stale_temporaries takes
            with os.fdopen(fd, "w") as f:
                json.dump({**self._record, "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f)
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # fails if the file exists; the content is complete when it appears
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self.holder()
                    if holder is None:
                        continue
                    if not holder or not self._stale(holder):
                        raise OutputRootInUseError(self._in_use(holder)) from None
                    self._remove_stale(holder)
            raise OutputRootInUseError(self._in_use(self.holder() or {}))
        finally:
            os.unlink(tmp)

    def _remove_stale(self, holder: dict) -> None:
        """Remove the lock file only if it still holds ``holder`` (another run may have taken it over meanwhile)."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if json.loads(aside.read_text()) != holder:  # someone else's fresh lock: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        except (OSError, ValueError):
            pass
        aside.unlink(missing_ok=True)

    def _in_use(self, holder: dict) -> str:
        who = (f"pid {holder.get('pid')} on host {holder.get('host')}" + (f", since {holder['since']}" if holder.get("since") else "")
               if holder else "a run whose lock file is being written")
        return (
            f"output root {str(self.root)!r} is in use by another pe_lightning run ({who}; lock file {str(self.path)!r}). "
            "Wait for it to end, choose another --trainer.default_root_dir, or add --new_version to write this run into "
            f"a fresh {str(self.root / 'version_<n>')!r}. If no run is using it, delete the lock file"
        )

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        holder = self.holder()
        if holder and holder.get("pid") == self._record["pid"] and holder.get("host") == self._record["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def fresh_version(root: str | os.PathLike) -> Path:
    """The first ``<root>/version_<n>`` (``n = 0, 1, ...``) that does not exist yet; it is created, so two runs never share it."""
    root = Path(root)
    n = 0
    while True:
        candidate = root / f"version_{n}"
        try:
            with names_file(candidate):
                candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
