"""Start and stop ``python -m pe_lightning serve`` on this machine (loopback), for tests, benchmarks and scripts.

:class:`LocalServer` runs the ``serve`` subcommand in a subprocess of its own session bound
to ``127.0.0.1`` on a free port, waits (bounded) until ``GET /health`` answers, and on exit
stops the whole process group (LitServe's HTTP and inference workers included).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """``python -m pe_lightning serve --config CONFIG`` on ``127.0.0.1:<free port>`` while in a ``with`` block.

    Args:
        config: the serve config (YAML).
        args: more ``serve`` arguments (e.g. ``["--record_requests", "dir"]``).
        port: the port (default: a free one).
        start_timeout_s: longest wait for ``/health`` before :meth:`start` raises.
        log: file that receives the server's output (default: a temporary file, removed by :meth:`stop`).
        env: the server's environment (default: this process's, one OpenMP thread).
    """

    def __init__(
        self,
        config: str | os.PathLike,
        *,
        args: Sequence[str] = (),
        port: int | None = None,
        start_timeout_s: float = 300.0,
        log: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config, self.args = str(config), list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self._own_log = log is None
        if log is None:
            fd, log = tempfile.mkstemp(prefix=f"pe_serve_{self.port}_", suffix=".log")
            os.close(fd)
        self.log = Path(log)
        self.env = env if env is not None else dict(os.environ, OMP_NUM_THREADS="1")
        self.process: subprocess.Popen | None = None

    def start(self) -> "LocalServer":
        """Start the server and wait until it is healthy.

        Raises:
            RuntimeError: the server exited, or was not healthy within ``start_timeout_s`` (its output is quoted).
        """
        command = [sys.executable, "-m", "pe_lightning", "serve", "--config", self.config, "--host", "127.0.0.1",
                   "--port", str(self.port), *self.args]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server on port {self.port} exited with code {self.process.returncode}:\n{self.output()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        output = self.output()
        self.stop()
        raise RuntimeError(f"the server on port {self.port} was not healthy within {self.start_timeout_s:g} s:\n{output}")

    def healthy(self) -> bool:
        """Whether ``GET /health`` answers 200 now."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        """The end of what the server printed so far."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server's whole process group at once (a crash, for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server (a graceful LitServe shutdown), SIGKILL its process group after ``timeout_s``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # leftover workers of the group
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=timeout_s)
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
