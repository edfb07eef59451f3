"""One long-lived ``python -m pe_lightning`` process that runs many CLI commands, one after another.

Most of a tiny CLI run is the interpreter's start-up (torch, Lightning, jsonargparse: several
seconds each on 2 cores). Tests whose subject is what a command does (a shipped config runs end to
end, a README command works), not the process around it, send their commands here instead of
starting one process per command. Tests about signals, process isolation, locks held by another
process or DDP keep their own subprocesses.

Each command runs through :func:`pe_lightning.cli.console_main`, the function behind
``python -m pe_lightning``, with ``sys.argv`` set as the command line would set it, in its own
working folder, with its environment applied (and the previous environment, ``sys.argv``, the
working folder and ``sys.path`` restored afterwards), its stdout and stderr (file descriptors 1
and 2, so C-level output too) written to its log file, and its exit status reported back.

Protocol (one JSON object per line): the test writes ``{"id": int, "argv": [...], "cwd": str,
"env": {...}, "log": str}`` to the worker's stdin; the worker answers ``{"id": int, "returncode": int}``
on its own answer channel (the stdout it started with). Run as ``python tests/cli_worker.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

PROG = "python -m pe_lightning"


def _run_one(job: dict) -> int:
    """Runs one command as ``python -m pe_lightning <argv>`` would; returns its exit status."""
    from pe_lightning.help import print_help, wants_fast_help

    saved_env, saved_argv, saved_cwd, saved_path = dict(os.environ), list(sys.argv), os.getcwd(), list(sys.path)
    os.environ.update(job.get("env", {}))
    sys.argv = [PROG, *job["argv"]]
    os.chdir(job["cwd"])
    try:
        if wants_fast_help(sys.argv[1:]):  # as pe_lightning/__main__.py: answered without torch or Lightning
            code = print_help(sys.argv[1:]) or 0
        else:
            from pe_lightning.cli import console_main

            code = console_main()
    except SystemExit as done:  # e.g. --help, or a parser error with exit_on_error
        if done.code is not None and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)  # as the interpreter does with a message
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - an uncaught error ends `python -m` with status 1 and its traceback
        traceback.print_exc()
        code = 1
    finally:
        _finish_wandb_run()
        sys.stdout.flush()
        sys.stderr.flush()
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
    return code


def _finish_wandb_run() -> None:
    """Ends a W&B run the command left open, as the exit of ``python -m`` does (wandb's exit hook)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception:  # noqa: BLE001 - reported in the command's log, as an exit hook's error would be
            traceback.print_exc()


def serve() -> None:
    """Reads jobs from stdin until it closes; answers each on the original stdout."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed between two commands goes to the worker's log, never the answer channel
    original_out, original_err = os.dup(1), os.dup(2)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        with open(job["log"], "ab") as log:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                code = _run_one(job)
            finally:
                os.dup2(original_out, 1)
                os.dup2(original_err, 2)
        answers.write(json.dumps({"id": job.get("id"), "returncode": code}) + "\n")


class CLIWorker:
    """The test side: starts ``tests/cli_worker.py`` and sends it commands (restarted if it died).

    Args:
        env: the worker's environment (also the base of every command's).
        log_dir: where the worker's own start-up output and each command's log go.
    """

    def __init__(self, *, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.count = 0
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=open(self.log_dir / "worker.log", "ab"),
                                            text=True, env=self.env)
        return self.process

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, check: bool = False,
            timeout: float = 900) -> subprocess.CompletedProcess:
        """Runs ``python -m pe_lightning <argv>`` in the worker; stdout holds the command's stdout and stderr together.

        ``check``: assert that it exited with status 0 (the message ends with its output). A worker that
        dies (or does not answer within ``timeout`` seconds) is killed and counts as a failed command
        (returncode -9 or its own), and the next command starts a fresh one.
        """
        with self.lock:
            self.count += 1
            log = self.log_dir / f"{self.count:03d}.log"
            process = self._start()
            job = {"id": self.count, "argv": [str(a) for a in argv], "cwd": str(cwd), "env": dict(env or {}),
                   "log": str(log)}
            answer: list[str] = []

            def read_answer() -> None:  # skips the answer to an earlier command whose caller gave up (a test timeout)
                while True:
                    line = process.stdout.readline()
                    if not line.strip() or json.loads(line).get("id") == job["id"]:
                        answer.append(line)
                        return

            try:
                process.stdin.write(json.dumps(job) + "\n")
                process.stdin.flush()
                reader = threading.Thread(target=read_answer, daemon=True)
                reader.start()
                reader.join(timeout)
            except BrokenPipeError:
                pass
            except BaseException:  # the test gave up (a pytest timeout, ^C): no worker left busy with its command
                process.kill()
                process.wait()
                raise
            if answer and answer[0].strip():
                code = json.loads(answer[0])["returncode"]
            else:  # died or hung: not a usable worker any more
                process.kill()
                code = process.wait()
                code = code if code else -9
            text = log.read_text(errors="replace") if log.is_file() else ""
            if not answer or not answer[0].strip():
                text += (self.log_dir / "worker.log").read_text(errors="replace")[-4000:]
        if check:
            assert code == 0, f"{PROG} {' '.join(job['argv'])} exited with {code}:\n{text[-5000:]}"
        return subprocess.CompletedProcess([PROG, *job["argv"]], code, stdout=text, stderr="")

    def close(self) -> None:
        """Ends the worker: every command has answered, so nothing is lost by not waiting for its interpreter's exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    serve()
