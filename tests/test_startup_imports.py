"""Which heavy modules a plain ``import pe_lightning``, the fast help and the demo load (no timing: see benchmarks/startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Not needed by ``import pe_lightning`` or the help: each costs a second or more to import here.
FRAMEWORKS = ("torch", "lightning", "numpy", "torchvision", "torchmetrics", "transformers", "wandb", "scipy")
#: Not needed by the demo (DrawText, pixel embedding, MNIST, W&B): GPU models, other data sources and simulators.
NOT_FOR_THE_DEMO = ("diffusers", "datasets", "sklearn", "open_clip", "python_avatars", "resvg_py", "litserve", "accelerate")
#: Nor what ``import torchmetrics`` would import for metrics the demo does not use (pe_lightning/lazy_torchmetrics.py):
#: torchvision's models, transformers, scipy.signal, torch-fidelity, torchmetrics' own metric packages.
NOT_FOR_THE_DEMO_MODULES = ("torchvision", "transformers", "scipy.signal", "torch_fidelity", "torchmetrics.functional",
                            "torchmetrics.image", "torchmetrics.classification", "torchmetrics.text")


def _loaded(code: str, tmp_path: Path, *, full_names: bool = False) -> list[str]:
    """Top-level names (or, with ``full_names``, the full names) of the modules loaded after running ``code`` in a fresh interpreter."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    names = "set(sys.modules)" if full_names else "{m.split('.')[0] for m in sys.modules}"
    probe = code + f"\nimport sys, json\nprint('MODULES:' + json.dumps(sorted({names})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("MODULES:")]
    return json.loads(line[len("MODULES:"):])


def test_a_plain_import_loads_no_framework(tmp_path):
    loaded = _loaded("import pe_lightning, pe_lightning.callbacks, pe_lightning.apis, pe_lightning.data", tmp_path)
    assert not set(FRAMEWORKS) & set(loaded)


def test_the_help_of_every_config_loads_no_framework(tmp_path):
    code = (
        "import io, glob\nfrom pe_lightning.help import print_help\n"
        f"for c in sorted(glob.glob({str(ROOT / 'configs' / '*.yaml')!r})):\n"
        "    assert print_help(['fit', '--config', c], out=io.StringIO()) == 0\n"
    )
    assert not set(FRAMEWORKS) & set(_loaded(code, tmp_path))


def test_the_demo_loads_no_gpu_model_or_other_data_source(tmp_path):
    code = (
        "from pe_lightning.cli import main\n"
        f"main(['fit', '--config', {str(ROOT / 'configs' / 'mnist_drawtext.yaml')!r}, '--trainer.enable_progress_bar=false',"
        f" '--trainer.default_root_dir={tmp_path / 'out'}', '--model.init_args.final_samples_per_class=10',"
        " '--model.init_args.approx_private_size=120', '--model.init_args.lookahead_degree=2',"
        " '--data.init_args.num_private=120'])\n"
    )
    loaded = _loaded(code, tmp_path, full_names=True)
    assert {"torch", "lightning", "pe_lightning", "torchmetrics", "pe_lightning.callbacks.fid"} <= set(loaded)  # the probe saw the run
    top = {m.split(".")[0] for m in loaded}
    assert not set(NOT_FOR_THE_DEMO) & top, sorted(set(NOT_FOR_THE_DEMO) & top)
    assert not set(NOT_FOR_THE_DEMO_MODULES) & set(loaded), sorted(set(NOT_FOR_THE_DEMO_MODULES) & set(loaded))


def test_the_cli_imports_torchmetrics_light_and_completes_it_on_first_use(tmp_path):
    """Lightning gets torchmetrics' Metric classes; any other name runs the package's whole __init__, as a plain import."""
    code = (
        "import sys, logging\nimport pe_lightning.cli\nimport torchmetrics\n"
        "from lightning.pytorch.core.module import Metric, MetricCollection\n"
        "assert Metric is torchmetrics.Metric and MetricCollection is torchmetrics.MetricCollection\n"
        "assert 'torchmetrics.functional' not in sys.modules and 'torchvision' not in sys.modules\n"
        "from torchmetrics.classification import MulticlassAccuracy\n"  # a submodule imports as usual meanwhile
        "from pe_lightning.lazy_torchmetrics import is_complete\nassert not is_complete()\n"
        "assert torchmetrics.Accuracy.__name__ == 'Accuracy' and is_complete()\n"
        "assert torchmetrics.classification.MulticlassAccuracy is MulticlassAccuracy\n"
        "assert len(logging.getLogger('torchmetrics').handlers) == 1\n"
        "print('NAMES:' + ','.join(sorted(n for n in vars(torchmetrics) if not n.startswith('__'))))\n"
    )
    plain = "import torchmetrics\nprint('NAMES:' + ','.join(sorted(n for n in vars(torchmetrics) if not n.startswith('__'))))\n"

    def names(source: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        (line,) = [x for x in out.stdout.splitlines() if x.startswith("NAMES:")]
        return line[len("NAMES:"):].split(",")

    assert names(code) == names(plain)


def _preloaded(argv: list[str], tmp_path: Path, **env: str) -> tuple[bool, list[str]]:
    """``preload_wandb(argv)``'s answer and the modules loaded after it, in a fresh interpreter."""
    code = ("import sys, json\nfrom pe_lightning.preload import preload_wandb\n"
            f"done = preload_wandb({argv!r})\nprint('PRELOAD:' + json.dumps([done, sorted(sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **env})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("PRELOAD:")]
    done, loaded = json.loads(line[len("PRELOAD:"):])
    return done, loaded


def test_a_wandb_config_preloads_wandb_without_torch(tmp_path):
    """The demo names a WandbLogger: W&B's modules (the one wandb.init imports included) load, torch and Lightning do not."""
    from pe_lightning.preload import WANDB_MODULES

    done, loaded = _preloaded(["fit", "--config", str(ROOT / "configs" / "mnist_drawtext.yaml")], tmp_path)
    assert done and set(WANDB_MODULES) <= set(loaded)
    assert not {"torch", "lightning", "torchmetrics", "matplotlib"} & {m.split(".")[0] for m in loaded}


@pytest.mark.parametrize("case", ["csv_logger_config", "logger_off", "logger_replaced", "wandb_disabled", "no_config"])
def test_no_wandb_run_preloads_nothing(tmp_path, case):
    demo, csv = str(ROOT / "configs" / "mnist_drawtext.yaml"), str(ROOT / "configs" / "mnist_classifier.yaml")
    argv, env = {
        "csv_logger_config": (["fit", "--config", csv], {}),
        "logger_off": (["fit", "--config", demo, "--trainer.logger=false"], {}),
        "logger_replaced": (["fit", "--config", demo, "--trainer.logger", "pe_lightning.loggers.CSVLogger"], {}),
        "wandb_disabled": (["fit", "--config", demo], {"WANDB_MODE": "disabled"}),
        "no_config": (["fit", "--config", str(tmp_path / "missing.yaml")], {}),
    }[case]
    done, loaded = _preloaded(argv, tmp_path, **env)
    assert not done and "wandb" not in {m.split(".")[0] for m in loaded}


def test_a_wandb_logger_given_on_the_command_line_preloads(tmp_path):
    from pe_lightning.preload import names_wandb_logger

    csv = str(ROOT / "configs" / "mnist_classifier.yaml")
    assert names_wandb_logger(["fit", "--config", csv, "--trainer.logger=pe_lightning.loggers.WandbLogger"])
    nested = tmp_path / "nested.yaml"  # a config whose sections sit under the subcommand, and a list of loggers
    nested.write_text("fit:\n  trainer:\n    logger:\n      - class_path: lightning.pytorch.loggers.WandbLogger\n")
    assert names_wandb_logger(["-c", str(nested), "fit"]) and names_wandb_logger([f"--config={nested}", "fit"])
    assert not names_wandb_logger(["fit", "--config", csv])


def test_python_m_imports_wandb_before_torch(tmp_path):
    """``python -m pe_lightning`` preloads before its first torch import (import order from ``-X importtime``).

    importtime names the modules that ``import`` statements load (not the ones ``importlib.import_module``
    loads itself): ``wandb.sdk`` and ``wandb.sdk.launch.*`` stand for the two preloaded modules.
    """
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pe_lightning", "fit", "--config",
         str(ROOT / "configs" / "mnist_drawtext.yaml"), "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline"))
    assert out.returncode == 0, out.stderr[-3000:]
    finished = [line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    launch = next(i for i, name in enumerate(finished) if name.startswith("wandb.sdk.launch"))
    assert finished.index("wandb.sdk") < finished.index("torch") and launch < finished.index("torch")
