"""Run integrity through the CLI (real processes): a final write cut short by SIGKILL or a full disk, the
finished-run resume, two runs on one output root, a resume with other data (docs/resume.md).

A run that is killed, given a fault or holds a root while another starts has its own process; the
runs that only complete or are refused (the reference, the resumes) go through the CLI's entry point
in the session's long-lived CLI process (tests/cli_worker.py), which saves an interpreter start-up each.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_distributed_and_resume import cli_env, fit, run_cli, write_config

pytestmark = pytest.mark.slow

SEEDED_PNG = {"noise": "seeded", "save_png": True}
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|^\..+\.old$")


def fault(point: str, action: str = "kill", n: int = 5) -> dict:
    return {"class_path": "pe_testing.FinalWriteFault", "init_args": {"point": point, "action": action, "n": n}}


def config(tmp_path: Path, name: str, *, out: Path, callbacks=(), **kwargs) -> Path:
    return write_config(tmp_path / f"{name}.yaml", out=out, iterations=2, callbacks=list(callbacks),
                        model_args=SEEDED_PNG, **kwargs)


def tree_bytes(folder: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), except those under a ``skip`` folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part in skip for part in p.relative_to(folder).parts)}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.match(p.name)]


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("python -m pe_lightning: error")]



@pytest.fixture(scope="module")
def reference(tmp_path_factory, cli_worker) -> Path:
    """An uninterrupted seeded run (2 iterations, PNG tree): the bytes every interrupted run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    fit(cli_worker, config(tmp, "ref", out=out), cwd=tmp)
    return out


def test_sigkill_at_each_point_of_the_final_write_then_resume_writes_the_same_bytes(tmp_path, reference, cli_worker):
    out = tmp_path / "out"
    expected = tree_bytes(reference / "final")
    assert {"population.npz", "manifest.json"} <= set(expected) and any(k.startswith("images/") for k in expected)
    # Killed before population.npz, then (each resume cut short again) mid-PNG tree, then after population.npz.
    for i, point in enumerate(("before_npz", "mid_png", "after_npz")):
        killed = run_cli(config(tmp_path, point, out=out, callbacks=[fault(point)]), *(["--ckpt_path=last"] if i else []),
                         cwd=tmp_path, fault=True, check=False)
        assert killed.returncode == -9, (killed.stdout + killed.stderr)[-3000:]
        assert not (out / "final").exists()  # the folder appears whole or not at all
        assert len(temporaries(out)) == 1  # this kill's temporary; the previous one was removed
    (out / ".summary.json.k1ll3d_x.tmp").write_text("{")  # as a kill in the middle of the summary's write leaves it
    (out / "checkpoints" / ".last.ckpt.k1ll3d_x.tmp").write_bytes(b"PK")
    resumed = fit(cli_worker, config(tmp_path, "resume", out=out), "--ckpt_path=last", cwd=tmp_path)
    assert "[PE] iteration" not in resumed.stdout + resumed.stderr  # nothing spent again
    assert tree_bytes(out / "final") == expected
    assert temporaries(out) == []
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert {"final_population", "final_images"} <= set(summary["outputs"])
    assert summary["iterations_completed"] == 2 and summary["privacy"]["epsilon"] == pytest.approx(2.0)

    # Resuming the finished run: one line, nothing written (summary.json, run.png, config.yaml, population, images).
    before = tree_bytes(out)
    again = fit(cli_worker, config(tmp_path, "resume", out=out), "--ckpt_path=last", cwd=tmp_path)
    said = [line for line in (again.stdout + again.stderr).splitlines() if line.startswith("[PE]")]
    assert len(said) == 1 and said[0].startswith("[PE] nothing to do"), said
    assert tree_bytes(out) == before


def test_full_disk_during_the_final_write_names_the_file_and_the_resume_completes(tmp_path, reference, cli_worker):
    out = tmp_path / "out"
    full = run_cli(config(tmp_path, "full", out=out, callbacks=[fault("mid_png", "enospc", n=3)]), cwd=tmp_path, fault=True,
                   check=False)
    assert full.returncode == 1, (full.stdout + full.stderr)[-3000:]
    (line,) = error_lines(full)
    assert "No space left on device" in line and re.search(r"images/\d+/\d{6}\.png'", line), line
    assert "Traceback" not in full.stderr
    assert not (out / "final").exists() and temporaries(out) == []
    fit(cli_worker, config(tmp_path, "resume", out=out), "--ckpt_path=last", cwd=tmp_path)  # space "freed"
    assert tree_bytes(out / "final") == tree_bytes(reference / "final")


def test_a_second_run_on_a_held_root_refuses_and_the_first_ends_intact(tmp_path, cli_worker):
    out, gate = tmp_path / "out", tmp_path / "gate"
    wait = {"class_path": "pe_testing.WaitForFile", "init_args": {"directory": str(gate)}}
    first = subprocess.Popen([sys.executable, "-m", "pe_lightning", "fit", "--config", str(config(tmp_path, "a", out=out, callbacks=[wait]))],
                             cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not (gate / "waiting").exists():
            assert first.poll() is None, first.communicate()[0][-3000:]
            time.sleep(0.2)
        held = tree_bytes(out)
        assert "config.yaml" in held
        second = fit(cli_worker, config(tmp_path, "b", out=out, num_private=120), cwd=tmp_path, check=False)  # another process
        assert second.returncode == 1
        (line,) = error_lines(second)
        assert f"pid {first.pid} on host" in line and "in use by another pe_lightning run" in line and "--new_version" in line
        assert tree_bytes(out) == held  # the refused run wrote nothing
        # Asked for a fresh sub-folder, it runs beside the first one.
        fit(cli_worker, config(tmp_path, "b", out=out, num_private=120), "--new_version", cwd=tmp_path)
        assert (out / "version_0" / "final" / "population.npz").is_file()
        assert (out / "version_0" / "checkpoints" / "last.ckpt").is_file()
        assert tree_bytes(out, skip=("version_0",)) == held
    finally:
        (gate / "go").touch()
        log = first.communicate(timeout=600)[0]
    assert first.returncode == 0, log[-3000:]
    assert (out / "final" / "manifest.json").is_file() and not (out / ".pe_lightning.lock").exists()
    assert tree_bytes(out)["config.yaml"] == held["config.yaml"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["private_evolution"]["run_fingerprint"]["data"]["args"]["num_private"] == 151


def test_a_resume_with_other_data_or_sizes_is_refused_naming_the_field(tmp_path, reference, cli_worker):
    before = tree_bytes(reference)
    for change, field in (("--data.init_args.num_private=120", "data.num_private"),
                          ("--model.init_args.num_samples_per_class=8", "num_samples.per_class")):
        refused = fit(cli_worker, config(tmp_path, "changed", out=reference), "--ckpt_path=last", change, cwd=tmp_path,
                      check=False)
        assert refused.returncode == 1, (refused.stdout + refused.stderr)[-3000:]
        (line,) = error_lines(refused)
        assert f"different {field} " in line and "accept_changed_resume" in line, line
    assert tree_bytes(reference) == before
