"""LightningCLI: every config parses, a tiny fit runs from the demo config, users can build their own CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from lightning.pytorch.cli import LightningCLI

import pe_lightning
from pe_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def tiny_overrides(tmp_path: Path) -> list[str]:
    return [
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.iterations=2",
        "--model.init_args.num_samples_per_class=6",
        "--model.init_args.variation_degrees=[0.5,0.3]",
        "--model.init_args.lookahead_degree=2",
        "--data.init_args.num_private=120",
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    parsed = yaml.safe_load(capsys.readouterr().out)
    assert parsed["model"]["class_path"].startswith("pe_lightning.")
    assert "class_path" in parsed["data"]


def test_config_typo_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/mnist_drawtext.yaml"), "--model.init_args.iteratons=3"])
    assert exit_info.value.code != 0
    assert "iteratons" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_fit_through_python_m_with_wandb_offline(tmp_path):
    """The real entry point, the demo config (W&B offline logger included), a tiny run."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    out = subprocess.run(
        [sys.executable, "-m", "pe_lightning", "fit", "--config", str(ROOT / "configs/mnist_drawtext.yaml"), *tiny_overrides(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,  # the config's relative paths land in tmp_path
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "[PE] iteration 2/2" in log and "privacy/epsilon=" in log and "fid/pixel=" in log
    assert "final population" in log
    out_dir = tmp_path / "outputs" / "mnist_drawtext"
    pop = np.load(out_dir / "final" / "population.npz")
    assert pop["images"].shape == (60, 28, 28, 1) and pop["images"].dtype == np.uint8
    assert pop["labels"].dtype == np.int64
    assert (out_dir / "grids" / "grid_iteration_002.png").is_file()
    assert list((out_dir / "wandb").glob("offline-run-*")), "W&B offline run directory missing"
    assert (out_dir / "checkpoints" / "last.ckpt").is_file(), "ModelCheckpoint did not save"


def test_users_can_build_their_own_lightning_cli(tmp_path):
    """The public classes plug into a plain LightningCLI (no pe_lightning CLI code involved)."""
    config = {
        "trainer": {
            "max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "default_root_dir": str(tmp_path),
            "callbacks": [{"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": 2.0, "delta": 1e-5}}],
        },
        "model": {
            "iterations": 1, "num_samples_per_class": 5, "variation_degrees": 0.4, "lookahead_degree": 1,
            "output_dir": str(tmp_path / "out"), "save_png": False,
            "api": {"class_path": "pe_lightning.DrawText"},
            "embedding": {"class_path": "pe_lightning.PixelEmbedding", "init_args": {"size": 14}},
        },
        "data": {"num_private": 100},
    }
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = LightningCLI(
        pe_lightning.PrivateEvolution, pe_lightning.MNISTDataModule, args=["fit", "--config", str(path)],
        save_config_kwargs={"overwrite": True},
    )
    assert cli.model.iteration == 1
    assert cli.trainer.callback_metrics["privacy/epsilon"].item() <= 2.0
