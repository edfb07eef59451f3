"""The session's CLI process (tests/cli_worker.py) reports what ``python -m pe_lightning`` would: exit status and output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "mnist_drawtext.yaml")
pytestmark = pytest.mark.slow  # starts the worker process (one interpreter start-up, shared with the other slow tests)


def test_a_refused_command_fails_with_its_one_line_error_and_the_next_one_runs_clean(cli_worker, tmp_path):
    bad = cli_worker.run(["fit", "--config", DEMO, "--model.init_args.iteratons=3"], cwd=tmp_path,
                         env={"PE_CLI_WORKER_PROBE": "1", "PE_LIGHTNING_TRACEBACK": "0"})
    assert bad.returncode == 2, bad.stdout[-3000:]
    assert "python -m pe_lightning: error" in bad.stdout and "iteratons" in bad.stdout
    with pytest.raises(AssertionError, match="iteratons"):  # check=True names the command and shows its output
        cli_worker.run(["fit", "--config", DEMO, "--model.init_args.iteratons=3"], cwd=tmp_path, check=True)
    helped = cli_worker.run(["fit", "--config", DEMO, "--help"], cwd=tmp_path, check=True)  # the fast help, as __main__
    assert "--model.init_args" in helped.stdout and "iteratons" not in helped.stdout  # each command has its own log
    assert "PE_CLI_WORKER_PROBE" not in os.environ


def test_a_dead_worker_is_replaced_by_a_fresh_one(tmp_path):
    from cli_worker import CLIWorker

    worker = CLIWorker(env=dict(os.environ, OMP_NUM_THREADS="1"), log_dir=tmp_path / "logs")
    try:
        first = worker.run(["fit", "--config", DEMO, "--help"], cwd=tmp_path, check=True)
        pid = worker.process.pid
        worker.process.kill()
        worker.process.wait()
        again = worker.run(["fit", "--config", DEMO, "--help"], cwd=tmp_path, check=True)
        assert worker.process.pid != pid and again.stdout == first.stdout
    finally:
        worker.close()
