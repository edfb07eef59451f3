"""Which heavy modules a plain ``import pe_lightning``, the fast help and the demo load (no timing: see benchmarks/startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Not needed by ``import pe_lightning`` or the help: each costs a second or more to import here.
FRAMEWORKS = ("torch", "lightning", "numpy", "torchvision", "torchmetrics", "transformers", "wandb", "scipy")
#: Not needed by the demo (DrawText, pixel embedding, MNIST, W&B): GPU models, other data sources and simulators.
NOT_FOR_THE_DEMO = ("diffusers", "datasets", "sklearn", "open_clip", "python_avatars", "resvg_py", "litserve", "accelerate")


def _loaded(code: str, tmp_path: Path) -> list[str]:
    """Top-level names of the modules loaded after running ``code`` in a fresh interpreter."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    probe = code + "\nimport sys, json\nprint('MODULES:' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
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
    loaded = _loaded(code, tmp_path)
    assert {"torch", "lightning", "pe_lightning"} <= set(loaded)  # the probe saw the run
    assert not set(NOT_FOR_THE_DEMO) & set(loaded), sorted(set(NOT_FOR_THE_DEMO) & set(loaded))
