"""A run that explains itself: T set once, one output root, the PE progress display, the run
summary, one-line errors, start-up without sklearn (issue 15)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pe_lightning.callbacks import FIDCallback, PEProgressBar, PopulationCallback, PrivacyAccountant, RunSummary
from pe_lightning.checkpoints import CorruptCheckpointError, check_checkpoint
from pe_lightning.cli import console_main, main
from pe_lightning.data.splits import sklearn_stratified_train_test
from pe_lightning.embeddings import PixelEmbedding
from pe_lightning.errors import TRACEBACK_ENV
from pe_lightning.schedules import resolve_schedule
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
#: A PE config in the shipped configs' style (one root, no other path, no max_epochs), T = 4.
CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu", "devices": 1, "default_root_dir": "outputs/pe",
        "logger": {"class_path": "pe_lightning.loggers.WandbLogger", "init_args": {"project": "pe_lightning", "offline": True}},
        "callbacks": [
            {"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": 1.0, "delta": 1e-5}},
            {"class_path": "pe_lightning.callbacks.FIDCallback",
             "init_args": {"feature": {"class_path": "pe_lightning.embeddings.PixelEmbedding"}, "name": "pixel"}},
            {"class_path": "pe_lightning.callbacks.SampleGrid"},
            {"class_path": "pe_lightning.callbacks.PopulationSnapshot"},
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True, "every_n_epochs": 1}},
        ],
    },
    "model": {
        "class_path": "pe_lightning.PrivateEvolution",
        "init_args": {
            "iterations": 4, "num_samples_per_class": 6, "variation_degrees": {"points": [0.6, 0.45, 0.3, 0.2]},
            "lookahead_degree": 2, "threshold": 1.0,
            "api": {"class_path": "pe_lightning.apis.DrawText", "init_args": {"image_size": 28}},
            "embedding": {"class_path": "pe_lightning.embeddings.PixelEmbedding"},
        },
    },
    "data": {"class_path": "pe_lightning.data.MNISTDataModule", "init_args": {"num_private": 120}},
}
TINY = ["--model.init_args.iterations=2"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "pe.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def run_console(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``python -m pe_lightning ARGS`` in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pe_lightning", *args])
    try:
        code = console_main()
    except SystemExit as exit_info:  # argument errors exit from jsonargparse
        code = exit_info.code
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------- T once
def test_schedule_forms():
    assert resolve_schedule("d", 0.5, iterations=3) == [0.5, 0.5, 0.5]
    assert resolve_schedule("d", [0.6, 0.4], iterations=2) == [0.6, 0.4]
    assert resolve_schedule("d", {"start": 0.6, "end": 0.2}, iterations=3) == pytest.approx([0.6, 0.4, 0.2])
    assert resolve_schedule("d", {"start": 0.6, "end": 0.2}, iterations=1) == [0.6]
    points = [0.6, 0.45, 0.3, 0.2]
    assert resolve_schedule("d", {"points": points}, iterations=4) == points  # exactly the list at T = len
    assert resolve_schedule("d", {"points": points}, iterations=7) == pytest.approx([0.6, 0.525, 0.45, 0.375, 0.3, 0.25, 0.2])
    with pytest.raises(ValueError, match=r"one entry per iteration \(iterations=3\), got 2.*start: a, end: b"):
        resolve_schedule("d", [0.6, 0.4], iterations=3)
    with pytest.raises(ValueError, match=r"either \{start, end\} or \{points\}"):
        resolve_schedule("d", {"start": 0.6}, iterations=3)
    with pytest.raises(ValueError, match="must be numbers"):
        resolve_schedule("d", {"start": "a", "end": 0.2}, iterations=3)


def test_iterations_alone_set_max_epochs_and_the_schedule(config, tmp_path):
    root = tmp_path / "root"
    cli = main(["--config", str(config), f"--trainer.default_root_dir={root}", "--model.init_args.iterations=6"], run=False)
    assert cli.trainer.max_epochs == 6
    assert len(cli.model.variation_degrees) == 6
    assert cli.model.variation_degrees[0] == 0.6 and cli.model.variation_degrees[-1] == pytest.approx(0.2)
    default = main(["--config", str(config), f"--trainer.default_root_dir={root}"], run=False)
    assert default.trainer.max_epochs == 4 and default.model.variation_degrees == [0.6, 0.45, 0.3, 0.2]
    # One output root: the logger and the checkpoints follow trainer.default_root_dir.
    assert default.trainer.logger.save_dir == str(root)
    assert default.trainer.checkpoint_callback.dirpath == str(root / "checkpoints")


def test_conflicting_max_epochs_is_a_one_line_error(config, monkeypatch, capsys, tmp_path):
    root = tmp_path / "root"
    code, err = run_console(monkeypatch, capsys, "fit", "--config", str(config), f"--trainer.default_root_dir={root}",
                            "--trainer.max_epochs=6")
    assert code == 2
    assert "trainer.max_epochs=6 contradicts model.init_args.iterations=4" in err
    assert "Traceback" not in err and not root.exists(), "nothing may run before the check"


@pytest.mark.parametrize("path", CONFIGS, ids=[c.name for c in CONFIGS])
def test_shipped_configs_name_one_output_root(path):
    """No config repeats the root in another path field, and no PE config sets max_epochs."""
    config = yaml.safe_load(path.read_text())
    trainer = config["trainer"]
    assert trainer.get("default_root_dir"), "the output root"
    loggers = trainer.get("logger") or []
    for entry in (loggers if isinstance(loggers, list) else [loggers]):
        assert "save_dir" not in (entry.get("init_args") or {}), "logger save_dir: derived from the root"
    for entry in trainer.get("callbacks") or []:
        assert "dirpath" not in (entry.get("init_args") or {}), f"{entry['class_path']} dirpath: derived from the root"
    model = config["model"]
    assert "output_dir" not in (model.get("init_args") or {}), "model output_dir: the root"
    if "PrivateEvolution" in model["class_path"]:
        assert "max_epochs" not in trainer, "T is set once, by the model"


# ---------------------------------------------------------------------------- errors
def test_config_errors_are_one_message_without_traceback(config, monkeypatch, capsys, tmp_path):
    code, err = run_console(monkeypatch, capsys, "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
                            "--model.init_args.variation_degrees=[0.5,0.4]")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("python -m pe_lightning: error")]
    assert len(lines) == 1 and "variation_degrees must have one entry per iteration (iterations=4), got 2" in lines[0]
    assert "Traceback" not in err and "Namespace(" not in err and "--traceback" in err


def test_traceback_when_asked_for(config, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    monkeypatch.setattr(sys, "argv", ["pe_lightning", "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
                                      "--trainer.max_epochs=6"])
    with pytest.raises(ValueError, match="contradicts"):
        console_main()
    monkeypatch.setenv(TRACEBACK_ENV, "")  # restored after the test: --traceback sets it for child processes
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--traceback"])
    with pytest.raises(ValueError, match="contradicts"):
        console_main()


def test_privacy_setting_error_is_one_message(config, monkeypatch, capsys, tmp_path):
    code, err = run_console(monkeypatch, capsys, "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
                            "--model.init_args.noise_multiplier=1.0", "--trainer.logger=false", *TINY)
    assert code == 1 and "Traceback" not in err
    assert "noise_multiplier is set (1.0) and the PrivacyAccountant callback would calibrate it too" in err


def _save_tiny_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {}, "epoch": 0}, path)
    return path


def test_corrupt_checkpoint_names_the_file_and_the_last_good_one(config, monkeypatch, capsys, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    good = _save_tiny_checkpoint(folder / "epoch=1-step=2.ckpt")
    bad = folder / "last.ckpt"
    data = _save_tiny_checkpoint(tmp_path / "whole.ckpt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated mid-write
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(good))):
        check_checkpoint(bad)
    code, err = run_console(monkeypatch, capsys, "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
                            f"--ckpt_path={bad}")
    assert code == 1 and "Traceback" not in err
    assert f"checkpoint '{bad}' cannot be read" in err and f"--ckpt_path {good}" in err
    # --ckpt_path last resolves to <root>/checkpoints/last.ckpt: checked before the fit too.
    code, err = run_console(monkeypatch, capsys, "fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}",
                            "--trainer.logger=false", "--ckpt_path=last")
    assert code == 1 and f"checkpoint '{bad}' cannot be read" in err and f"--ckpt_path {good}" in err
    good.unlink()
    with pytest.raises(CorruptCheckpointError, match="no other readable checkpoint"):
        check_checkpoint(bad)


# ---------------------------------------------------------------------------- CLI looks
def test_help_is_named_pe_lightning(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pe_lightning") and "__main__" not in out


# ----------------------------------------------------------------------- the display
class StageSpy(PopulationCallback):
    """Records every ``on_stage`` report and the progress display's stage line at that moment."""

    def __init__(self, bar: PEProgressBar) -> None:
        self.bar = bar
        self.reports: list[tuple[str, int, int]] = []
        self.lines: list[str] = []

    def on_stage(self, trainer, pl_module, *, stage, done, total) -> None:
        self.reports.append((stage, done, total))
        if self.bar.is_live:
            self.lines += [t.description for t in self.bar._progress.tasks[1:] if t.visible]  # the stage line


def test_progress_display_shows_iterations_epsilon_fid_time_and_stages(tmp_path):
    out = io.StringIO()
    bar = PEProgressBar(console_kwargs={"file": out, "force_terminal": False, "width": 160})
    spy = StageSpy(bar)
    model = tiny_model(api_batch_size=16, cache_private_embeddings=False)  # embedded here, so the stage is reported
    fid = FIDCallback(feature=PixelEmbedding(size=14), name="pixel")
    trainer = tiny_trainer(tmp_path, enable_progress_bar=True, callbacks=[PrivacyAccountant(epsilon=2.0), fid, bar, spy])
    trainer.fit(model, datamodule=tiny_datamodule(120))
    text = ANSI.sub("", out.getvalue())
    # One final frame (not a terminal): iterations, epsilon spent of the budget, FID, s/iteration, ETA.
    assert re.search(r"PE iteration 2/2 .* ε 2/2 · FID \d+(\.\d+)? · \d+(\.\d+)? s/it · ETA 0:00:00", text), text
    assert "Epoch" not in text and "it/s" not in text  # not Lightning's per-batch bar
    stages = {s for s, _, _ in spy.reports}
    assert {"private embedding", "random", "lookahead", "voting", "callbacks"} <= stages
    assert ("lookahead", 80, 80) in spy.reports  # 10 classes x 8 samples, in chunks of 16
    assert any(line == "  iteration 2: voting" for line in spy.lines)
    assert any(line == "  start-up: random" for line in spy.lines)
    # Private-side work is reported without counts (docs/privacy.md) and drawn without numbers.
    assert {(d, t) for s, d, t in spy.reports if s in ("private embedding", "voting")} == {(0, 0)}
    assert "/120" not in text and "120/" not in text
    assert not bar.is_live


def test_pe_runs_get_the_display_and_no_model_summary(config, tmp_path):
    cli = main(["--config", str(config), f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, PEProgressBar)
    assert any(isinstance(cb, RunSummary) for cb in cli.trainer.callbacks)
    assert not any(type(cb).__name__ == "ModelSummary" for cb in cli.trainer.callbacks)
    quiet = main(["--config", str(config), f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false",
                  "--trainer.enable_progress_bar=false"], run=False)
    assert quiet.trainer.progress_bar_callback is None


# ------------------------------------------------------------------------ the summary
class FakeWandbRun:
    """What WandbLogger touches of a wandb Run."""

    def __init__(self, folder: Path) -> None:
        self.dir = str(folder / "offline-run-x" / "files")
        self.summary: dict = {}
        self.config = type("Config", (), {"update": lambda *a, **k: None})()
        self.logged: list[dict] = []

    def log(self, metrics: dict) -> None:
        self.logged.append(metrics)


def test_run_summary_prints_writes_json_and_plot_and_fills_wandb(tmp_path, caplog):
    from pe_lightning.loggers import WandbLogger

    run = FakeWandbRun(tmp_path)
    logger = WandbLogger(experiment=run, save_dir=str(tmp_path))
    summary = RunSummary()
    fid = FIDCallback(feature=PixelEmbedding(size=14), name="pixel")
    model = tiny_model()
    trainer = tiny_trainer(tmp_path / "root", logger=logger, log_every_n_steps=1, callbacks=[PrivacyAccountant(epsilon=2.0), fid, summary])
    with caplog.at_level("INFO"):
        trainer.fit(model, datamodule=tiny_datamodule(120))
    data = json.loads((tmp_path / "root" / "summary.json").read_text())
    assert data["privacy"]["epsilon"] <= 2.0 and data["privacy"]["epsilon_budget"] == 2.0 and data["privacy"]["delta"] == 1e-5
    assert data["privacy"]["noise_multiplier"] == pytest.approx(model.noise_multiplier)
    assert (data["T"], data["N"], data["iterations_completed"]) == (2, 80, 2)
    assert data["fid"]["key"] == "fid/pixel" and data["fid"]["iteration_0"] > 0 and data["fid"]["final"] > 0
    assert [r["iteration"] for r in data["per_iteration"]] == [0, 1, 2]
    assert data["per_iteration"][2]["epsilon"] == pytest.approx(data["privacy"]["epsilon"], rel=1e-6)
    assert data["time"]["wall_s"] > 0 and data["time"]["iterations_s"] > 0
    assert data["outputs"]["final_population"].endswith("final/population.npz")
    assert data["private_dir"] == str(model.resolved_private_dir)
    png = tmp_path / "root" / "run.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = caplog.text
    assert "[PE] run summary: epsilon" in printed and "fid/pixel:" in printed and "summary.json" in printed
    assert run.summary["privacy/epsilon_spent"] == data["privacy"]["epsilon"]
    assert run.summary["pe/T"] == 2 and run.summary["fid/pixel_final"] == data["fid"]["final"]


def test_run_summary_history_survives_a_checkpoint():
    summary = RunSummary()
    summary.history = {0: {"epsilon": 0.0}, 1: {"epsilon": 0.5, "fid/pixel": 3.0}}
    restored = RunSummary()
    restored.load_state_dict(summary.state_dict())
    assert restored.history == summary.history
    with pytest.warns(UserWarning, match="history is unreadable"):  # forgiving: warns, starts empty
        restored.load_state_dict({"history": "garbage"})
    assert restored.history == {}


# ------------------------------------------------------------------------ start-up
@pytest.mark.parametrize("test_size,seed", [(1000, 0), (10, 3), (1234, 7)])
def test_copied_split_equals_sklearn(test_size, seed):
    from sklearn.model_selection import train_test_split

    labels = np.random.default_rng(seed).integers(0, 10, size=5000)
    labels[:20] = np.arange(20) % 10  # every class at least twice
    rows = np.arange(len(labels))
    want_train, want_test = train_test_split(rows, test_size=test_size, stratify=labels, random_state=seed)
    train, test = sklearn_stratified_train_test(labels, test_size, random_state=seed)
    np.testing.assert_array_equal(train, want_train)
    np.testing.assert_array_equal(test, want_test)


def test_start_up_imports_no_heavy_optional_stack():
    code = "import sys; from pe_lightning.cli import main; print(sorted(m for m in ('diffusers', 'sklearn', 'datasets', 'wandb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------- one output root (slow)
#: Library caches a run may write outside the root: matplotlib's font list and W&B's own
#: service logs (no run data; W&B keeps the run itself under the root).
LIBRARY_CACHES = (re.compile(r"\.cache/matplotlib/fontlist-.*\.json"), re.compile(r"\.cache/wandb/logs/(core|symon)-debug-.*\.log"))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _contents(path: Path) -> list[bytes]:
    """The file's bytes, and the members of zip files (npz, checkpoints), decompressed."""
    data = path.read_bytes()
    parts = [data]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            parts += [z.read(name) for name in z.namelist()]
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            parts.append(np.asarray(img).tobytes())
    return parts


@pytest.mark.slow
def test_one_output_root_and_nothing_private_inside_it(config, tmp_path):
    cwd, root, home, tmp = (tmp_path / name for name in ("cwd", "root", "home", "tmp"))
    for folder in (cwd, home, tmp):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PE_LIGHTNING_PRIVATE_DIR", "XDG_CACHE_HOME", "WANDB_DIR")}
    env.update(HOME=str(home), TMPDIR=str(tmp), WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pe_lightning", "fit", "--config", str(config), f"--trainer.default_root_dir={root}", *TINY],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    private = home / ".cache" / "pe_lightning"
    assert f"private side (derived from private data, keep private): {private}" in log
    # The console: PE's display and summary, none of Lightning's training display or start-up notices.
    assert "PE iteration 2/2" in log and "[PE] run summary: epsilon" in log
    for noise in ("Tip:", "LeafSpec", "git root", "anonymous setting", "Total params", "Epoch ", "it/s"):
        assert noise not in log, noise

    # Everything the run wrote is under the root, except the private side and library caches.
    assert not list(cwd.iterdir()), f"written to the working directory: {list(cwd.iterdir())}"
    outside = [p.relative_to(home).as_posix() for p in _files(home) if private not in p.parents]
    assert all(any(c.fullmatch(p) for c in LIBRARY_CACHES) for p in outside), outside
    assert not _files(tmp), _files(tmp)
    for part in ("final/population.npz", "grids/grid_iteration_002.png", "iterations/iteration_002/population.npz",
                 "checkpoints/last.ckpt", "summary.json", "run.png", "config.yaml"):
        assert (root / part).is_file(), part
    assert list((root / "wandb").glob("offline-run-*/run-*.wandb"))
    summary = json.loads((root / "summary.json").read_text())
    assert summary["outputs"]["checkpoints"] == str(root / "checkpoints") and summary["private_dir"] == str(private)

    # Nothing derived from the private images inside the root: neither their pixels nor their embeddings.
    dm = tiny_datamodule(120)
    dm.setup("fit")
    embedding = PixelEmbedding()
    embedding.setup(device="cpu")
    needles = [img.tobytes() for img in dm.private_images]
    needles += [row.tobytes() for row in embedding.embed(dm.private_images).float().numpy()]
    found_in_private = any(n in part for p in _files(private) for part in _contents(p) for n in needles)
    assert found_in_private, "the scan must find the private embeddings in the private-side cache"
    for path in _files(root):
        for part in _contents(path):
            hits = sum(n in part for n in needles)
            assert hits == 0, f"{path.relative_to(root)} holds {hits} private images or embeddings"


@pytest.mark.slow
def test_startup_benchmark_reports_the_time_to_iteration_0(config):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--repeats", "1", "--config", str(config), *TINY,
         "--trainer.logger=false"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if '"benchmark": "startup"' in line]
    assert 0 < row["to_callbacks_s"] <= row["to_fit_setup_s"] <= row["to_iteration_0_s"] <= row["total_s"]
    assert row["pe_s"] > 0
