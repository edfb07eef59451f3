"""The PE-focused help (pe_lightning.help) and one-line parser errors of ``python -m pe_lightning``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pe_lightning.errors import parser_error_line
from pe_lightning.help import class_options, print_help

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pe_lightning", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_the_help_of_a_config_lists_its_pe_options_first_with_docs(config):
    out = io.StringIO()
    assert print_help(["fit", "--config", str(config), "--help"], out=out) == 0
    text = out.getvalue()
    parsed = yaml.safe_load(config.read_text())
    model = parsed["model"]["class_path"]
    lines = text.splitlines()
    assert lines[0].startswith("PE options of --config") and "--help-all" in lines[1]
    assert f"model: {model}" in text and f"data: {parsed['data']['class_path']}" in text
    assert text.index(f"model: {model}") < text.index("common Trainer and run options")
    for key, value in parsed["model"].get("init_args", {}).items():  # every model option the config sets, with its value
        if not (isinstance(value, dict) and "class_path" in value):
            assert f"--model.init_args.{key} = " in text, key
    assert "(options: --help-all" not in text  # every class was found in the source


def test_options_follow_kwargs_to_the_base_class_and_carry_docs():
    planned = {o.name: o for o in class_options("pe_lightning.planner.PlannedPrivateEvolution").options}
    assert "population_path" in planned and "saved" in planned["population_path"].doc  # from PrivateEvolution
    assert planned["approx_private_size"].default is None and planned["approx_private_size"].doc
    accountant = {o.name: o for o in class_options("pe_lightning.callbacks.PrivacyAccountant").options}
    assert accountant["delta"].default == "1e-05" and "delta" in accountant["delta"].doc
    assert class_options("pe_lightning.nothing.Here") is None


def test_help_and_help_all_through_the_entry_point(tmp_path):
    top = _cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and "fit --config X --help" in top.stdout
    fit = _cli("fit", "--config", str(ROOT / "configs" / "mnist_drawtext.yaml"), "--help", cwd=tmp_path)
    assert fit.returncode == 0 and "--model.init_args.approx_private_size = 4000  (config)" in fit.stdout
    full = _cli("fit", "--config", str(ROOT / "configs" / "mnist_drawtext.yaml"), "--help-all", cwd=tmp_path)
    assert full.returncode == 0 and "--trainer.max_epochs" in full.stdout  # LightningCLI's every option


def test_a_parser_error_is_one_line_with_the_field(tmp_path):
    demo = str(ROOT / "configs" / "mnist_drawtext.yaml")
    typo = _cli("fit", "--config", demo, "--model.init_args.iteratons=3", cwd=tmp_path)
    lines = typo.stderr.strip().splitlines()
    assert typo.returncode == 2 and len(lines) == 2, typo.stderr
    assert "error: --model.init_args.iteratons: Option 'iteratons' is not accepted" in lines[0]
    wrong = _cli("fit", "--config", demo, "--data.init_args.num_private=x", cwd=tmp_path)
    assert wrong.returncode == 2 and "--data.init_args.num_private: Expected a <class 'int'> (given: x)" in wrong.stderr
    full = _cli("fit", "--config", demo, "--model.init_args.iteratons=3", "--traceback", cwd=tmp_path)
    assert full.returncode != 0 and len(full.stderr.strip().splitlines()) > 5  # the whole message on request


def test_parser_error_line_keeps_the_deepest_field():
    message = """Parser key "model":
  Does not validate against any of the Union subtypes
  Errors:
    - Problem with given class_path 'pe_lightning.planner.PlannedPrivateEvolution':
        Parser key "api":
          Problem with given class_path 'pe_lightning.apis.DrawText':
            Parser key "image_size":
              Expected a <class 'int'>. Got value: q
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>"""
    assert parser_error_line(message) == (
        "--model.init_args.api.init_args.image_size: Expected a <class 'int'>. Got value: q [pe_lightning.apis.DrawText]"
    )
