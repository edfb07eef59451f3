"""The built wheel ships every module (callbacks/ as pe_lightning.callbacks) and each imports, and the
YAML configs (configs/ as pe_lightning.configs), found through shipped_config."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pe_lightning.run_config import shipped_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_finds_the_demo_config():
    path = shipped_config("mnist_drawtext.yaml")
    assert path.is_file() and path.read_bytes() == (ROOT / "configs" / "mnist_drawtext.yaml").read_bytes()
    with pytest.raises(FileNotFoundError, match="mnist_drawtext.yaml"):
        shipped_config("no_such_config.yaml")  # the message lists the shipped ones
    with pytest.raises(ValueError, match="bare .yaml file name"):
        shipped_config("configs/mnist_drawtext.yaml")


@pytest.mark.slow
def test_wheel_installs_and_every_module_imports(tmp_path):
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheel_dir.glob("pe_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT / "callbacks").as_posix() for p in (ROOT / "callbacks").rglob("*.py")}
    assert {f"pe_lightning/callbacks/{s}" for s in sources} <= names
    assert not any(n.startswith("callbacks/") for n in names), "callbacks/ must ship as pe_lightning/callbacks/"
    configs = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert configs and {f"pe_lightning/configs/{c}" for c in configs} <= names
    assert "pe_lightning/configs/serve/mnist_drawtext.yaml" in names  # the serve configs (docs/serving.md)
    assert not any(n.startswith("configs/") for n in names), "configs/ must ship as pe_lightning/configs/"

    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    script = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(site)!r})
import pe_lightning
assert pe_lightning.__file__.startswith({str(site)!r}), pe_lightning.__file__
mods = [m.name for m in pkgutil.walk_packages(pe_lightning.__path__, 'pe_lightning.')]
for name in mods:
    mod = importlib.import_module(name)
    assert mod.__file__.startswith({str(site)!r}), (name, mod.__file__)
import pe_lightning.callbacks as cb
for name in cb.__all__:
    getattr(cb, name)
for name in pe_lightning.__all__:
    getattr(pe_lightning, name)
from pe_lightning.run_config import shipped_config
demo = shipped_config('mnist_drawtext.yaml')
assert str(demo).startswith({str(site)!r}) and demo.is_file(), demo
print(len(mods), 'modules')
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.split()[0]) >= 15
    # the console script is python -m pe_lightning: the fast help answers without Lightning
    console = site / "bin" / "pe-lightning"
    assert console.is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    helped = subprocess.run([sys.executable, str(console), "fit", "--config", str(ROOT / "configs" / "mnist_drawtext.yaml"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert helped.stdout.startswith("PE options of --config"), helped.stdout[:500]
