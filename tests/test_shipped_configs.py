"""Every shipped config runs end to end: ``python -m pe_lightning fit --config configs/<name>`` (in the session's
CLI process, tests/cli_worker.py),
then ``test`` evaluates what it saved (a PE config: ``--model.init_args.population_path <final>/population.npz``;
a classifier config: its checkpoint).

Each run uses the config's own classes and code paths, on the CPU, with the overrides in
:data:`SHRINK`, which may only shrink sizes (T, N, lookahead, steps, private set, image
size, network width) and swap weights and data for stand-ins the test makes (a tiny
random-weight model of the same class saved with ``save_pretrained``, CIFAR-10-format
files of random images, image folders, an input population). The FID Inception weights
are swapped where the real run finds them: a random-weight state dict under the file name
``InceptionEmbedding`` looks for in the torch hub cache (``$TORCH_HOME``).

A config without an entry in :data:`SHRINK` fails the suite. ``{name}`` in an override is
replaced by the path of the stand-in :func:`stand_in_makers` makes under that name (made only
when an entry uses it). ``PE_TEST_DEVICE=cuda:N`` runs the same jobs on that GPU
(``benchmarks/gpu_check.py`` does, on a GPU machine).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _pe(*, iterations: int, per_class: int, degrees: list[float], lookahead: int = 2) -> list[str]:
    """Sizes of a PE run: T (and max_epochs, which must equal it), N per class, its variation schedule, lookahead."""
    assert len(degrees) == iterations
    return [
        f"--model.init_args.iterations={iterations}", f"--trainer.max_epochs={iterations}",
        f"--model.init_args.num_samples_per_class={per_class}",
        f"--model.init_args.variation_degrees=[{','.join(map(str, degrees))}]",
        f"--model.init_args.lookahead_degree={lookahead}",
    ]


#: The width flags of the tiny improved-diffusion stand-in (tiny_weights.TINY_ADM_FLAGS; the rest is the preset's), in
#: braces escaped for str.format_map.
_TINY_ADM = ("{{image_size: 16, num_channels: 32, num_res_blocks: 1, channel_mult: [1, 2], attention_resolutions: [8], "
             "num_heads: 2}}")

#: Overrides per shipped config: sizes only, weights and data swapped for stand-ins ({name}: stand_in_makers).
SHRINK: dict[str, list[str]] = {
    "mnist_drawtext.yaml": [
        *_pe(iterations=2, per_class=6, degrees=[0.5, 0.3]), "--data.init_args.num_private=120",
    ],
    "mnist_drawtext_fitted.yaml": [
        *_pe(iterations=2, per_class=6, degrees=[0.5, 0.3]), "--data.init_args.num_private=120",
    ],
    "mnist_drawtext_served.yaml": [  # against `python -m pe_lightning serve` on loopback (the served_drawtext fixture)
        *_pe(iterations=2, per_class=6, degrees=[0.5, 0.3]), "--data.init_args.num_private=120",
        "--model.init_args.api.init_args.urls=[{served_drawtext}]",
    ],
    "mnist_nearest_image.yaml": [
        *_pe(iterations=2, per_class=6, degrees=[32, 16]), "--data.init_args.num_private=120",
    ],
    "mnist_classifier.yaml": [
        "--trainer.max_epochs=1", "--data.init_args.population={mnist_population}",
    ],
    "cifar10_dit.yaml": [
        *_pe(iterations=2, per_class=1, degrees=[0.98, 0.96]),
        "--model.init_args.api.init_args.model={tiny_dit}",
        "--data.init_args.root={cifar10}", "--data.init_args.verify_md5=false",
    ],
    "camelyon17_dit.yaml": [
        *_pe(iterations=2, per_class=2, degrees=[1.0, 0.9]),
        "--model.init_args.api.init_args.model={tiny_dit}",
        "--data.init_args.private_dir={camelyon17}/train", "--data.init_args.test_dir={camelyon17}/test",
    ],
    "cifar10_adm.yaml": [  # the paper's settings: 64 px population, fresh variations, clean-fid Inception, float32
        *_pe(iterations=2, per_class=1, degrees=[0.98, 0.96]),
        "--model.init_args.api.init_args.checkpoint={tiny_adm}", f"--model.init_args.api.init_args.model_config={_TINY_ADM}",
        "--data.init_args.root={cifar10}", "--data.init_args.verify_md5=false",
    ],
    "cifar10_adm_fast.yaml": [
        *_pe(iterations=2, per_class=1, degrees=[0.98, 0.96]),
        "--model.init_args.api.init_args.checkpoint={tiny_adm}", f"--model.init_args.api.init_args.model_config={_TINY_ADM}",
        "--data.init_args.root={cifar10}", "--data.init_args.verify_md5=false",
    ],
    "camelyon17_adm.yaml": [
        *_pe(iterations=2, per_class=2, degrees=[1.0, 0.9]),
        "--model.init_args.api.init_args.checkpoint={tiny_adm}", f"--model.init_args.api.init_args.model_config={_TINY_ADM}",
        "--data.init_args.private_dir={camelyon17}/train", "--data.init_args.test_dir={camelyon17}/test",
    ],
    "camelyon17_adm_fast.yaml": [
        *_pe(iterations=2, per_class=2, degrees=[1.0, 0.9]),
        "--model.init_args.api.init_args.checkpoint={tiny_adm}", f"--model.init_args.api.init_args.model_config={_TINY_ADM}",
        "--data.init_args.private_dir={camelyon17}/train", "--data.init_args.test_dir={camelyon17}/test",
    ],
    "cat_sd.yaml": [  # the paper's settings: every photo votes, delta = 1e-3, clean-fid Inception at 512 px
        *_pe(iterations=2, per_class=2, degrees=[0.98, 0.96]),
        "--model.init_args.api.init_args.model={tiny_sd}",
        "--data.init_args.private_dir={cat_photos}",
    ],
    "cat_sd_fast.yaml": [
        *_pe(iterations=2, per_class=2, degrees=[0.98, 0.96]),
        "--model.init_args.api.init_args.model={tiny_sd}",
        "--data.init_args.private_dir={cat_photos}",
    ],
    "cifar10_classifier.yaml": [
        "--trainer.max_epochs=1", "--model.init_args.network_kwargs={{depth: 10, widen_factor: 1, dropout: 0.3}}",
        "--data.init_args.population={cifar10_population}",
        "--data.init_args.real.init_args.root={cifar10}", "--data.init_args.real.init_args.verify_md5=false",
    ],
}

#: The last part of every override key SHRINK may use: sizes, and the paths/flags of stand-ins.
ALLOWED_KEYS = {
    "iterations", "max_epochs", "num_samples_per_class", "variation_degrees", "lookahead_degree", "num_inference_steps",
    "num_private", "num_test", "image_size", "network_kwargs", "batch_size", "model_config",  # sizes
    "model", "checkpoint", "weights_path", "root", "private_dir", "test_dir", "population", "verify_md5",  # stand-ins
    "urls",  # a local server instead of the user's
}


def _population(path: Path, *, shape: tuple[int, int, int], per_class: int = 10) -> str:
    """An input population (random images, every one of 10 classes) for a classifier config."""
    from pe_lightning.population import Population

    labels = np.arange(10 * per_class, dtype=np.int64) % 10
    images = np.random.default_rng(0).integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    Population(images=images, labels=labels).save_npz(path)
    return str(path)


def _train_and_test_folders(folder: Path, classes: dict[str, int]) -> str:
    """``folder/train`` and ``folder/test`` image folders with the same classes."""
    from tiny_weights import write_image_folder

    write_image_folder(folder / "train", classes, size=96, seed=0)
    write_image_folder(folder / "test", classes, size=96, seed=1)
    return str(folder)


def stand_in_makers(request: pytest.FixtureRequest, folder: Path) -> dict[str, Callable[[], str]]:
    """The stand-ins by the names SHRINK uses (``{name}``); each maker writes under ``folder`` and returns a path."""
    from tiny_weights import write_cifar10_batches, write_image_folder

    models = lambda: request.getfixturevalue("tiny_diffusers_models")  # noqa: E731 - built once per session
    return {
        "tiny_dit": lambda: models()["dit"],
        "tiny_sd": lambda: models()["sd"],
        "tiny_unet": lambda: models()["unet"],
        "tiny_adm": lambda: request.getfixturevalue("tiny_adm_checkpoint"),
        "cifar10": lambda: str(write_cifar10_batches(folder / "cifar10", per_batch=2, test=10)),
        "camelyon17": lambda: _train_and_test_folders(folder / "camelyon17", {"normal": 2, "tumor": 2}),
        "cat_photos": lambda: str(write_image_folder(folder / "cat_photos", {"cookie": 6}, size=64)),
        "mnist_population": lambda: _population(folder / "mnist_population.npz", shape=(28, 28, 1)),
        "cifar10_population": lambda: _population(folder / "cifar10_population.npz", shape=(32, 32, 3)),
        "served_drawtext": lambda: request.getfixturevalue("served_drawtext").url,  # configs/serve/mnist_drawtext.yaml
    }


class _Lazy(dict):
    """``str.format_map`` mapping that makes a stand-in the first time an override names it."""

    def __init__(self, makers: dict[str, Callable[[], str]]) -> None:
        super().__init__()
        self.makers = makers

    def __missing__(self, name: str) -> str:
        if name not in self.makers:
            raise KeyError(f"SHRINK names the stand-in {{{name}}}, which stand_in_makers does not make: add a maker")
        self[name] = self.makers[name]()
        return self[name]


def _device_overrides() -> list[str]:
    device = os.environ.get("PE_TEST_DEVICE", "cpu")
    if device == "cpu":
        return ["--trainer.accelerator=cpu", "--trainer.devices=1"]
    index = device.partition(":")[2] or "0"
    return ["--trainer.accelerator=gpu", f"--trainer.devices=[{index}]"]


def test_every_shipped_config_has_a_shrink_entry_that_only_shrinks() -> None:
    names = {c.name for c in CONFIGS}
    assert not names - set(SHRINK), f"configs without an end-to-end run: add them to SHRINK: {sorted(names - set(SHRINK))}"
    assert not set(SHRINK) - names, f"SHRINK entries for configs that do not exist: {sorted(set(SHRINK) - names)}"
    for name, overrides in SHRINK.items():
        for override in overrides:
            key = re.match(r"--([\w.]+)=", override)
            assert key, f"{name}: write overrides as --key=value, got {override!r}"
            assert key.group(1).rsplit(".", 1)[-1] in ALLOWED_KEYS, (
                f"{name}: {override!r} is neither a size nor a stand-in's path; the run must keep the config's classes "
                f"and code paths (allowed: {sorted(ALLOWED_KEYS)})"
            )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two CLI runs (fit, then test on what it saved); a loaded 2-core machine needs the room
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_config_runs_end_to_end(config: Path, random_inception_weights: str, request, tmp_path: Path,
                                        cli_worker) -> None:
    """The real entry point, the shipped config, its classes; sizes shrunk, random weights (2-40 s each).

    ``python -m pe_lightning fit``, then ``test``, each through the CLI's entry point in the session's
    long-lived CLI process (tests/cli_worker.py: one interpreter start-up for every config).
    """
    from pe_lightning.embeddings.inception import INCEPTION_WEIGHTS_FILENAME

    assert config.name in SHRINK, f"{config.name} has no SHRINK entry"
    stand_ins = _Lazy(stand_in_makers(request, tmp_path / "inputs"))
    overrides = [o.format_map(stand_ins) for o in SHRINK[config.name]]
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"  # where InceptionEmbedding finds its weights
    hub.mkdir(parents=True)
    (hub / INCEPTION_WEIGHTS_FILENAME).symlink_to(random_inception_weights)
    env = {"TORCH_HOME": str(tmp_path / "torch_home")}  # the worker runs on one thread, W&B off, offline
    run = tmp_path / "run"  # the config's relative paths (outputs/..., data/...) land here
    run.mkdir()
    proc = cli_worker.run(["fit", "--config", str(config), *overrides, *_device_overrides()], cwd=run, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert list(run.glob("**/last.ckpt")), f"no checkpoint written under {run}"
    model = yaml.safe_load(config.read_text())["model"]["class_path"]
    if model.endswith("PrivateEvolution"):  # a PE run: every iteration ran, the final population is complete
        iterations, per_class = _override(overrides, "iterations"), _override(overrides, "num_samples_per_class")
        if iterations is not None:
            assert f"[PE] iteration {iterations}/{iterations}" in log, log[-3000:]
        (final,) = run.glob("**/final/population.npz")
        with np.load(final) as pop:
            images, labels = pop["images"], pop["labels"]
        assert images.dtype == np.uint8 and images.ndim == 4
        counts = np.bincount(labels).tolist()
        assert counts == [int(per_class or counts[0])] * len(counts)  # every class at its (public) size
        evaluate = ["--model.init_args.population_path", str(final)]  # README: "evaluate a saved run"
    else:  # a classifier config: its saved input population was trained on; test the checkpoint
        evaluate = ["--ckpt_path", str(next(run.glob("**/last.ckpt")))]
    proc = cli_worker.run(["test", "--config", str(config), *overrides, *_device_overrides(), *evaluate], cwd=run, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    if model.endswith("PrivateEvolution"):
        assert "[PE] evaluation of the population" in log and "[PE] iteration" not in log, log[-3000:]


def _override(overrides: list[str], name: str) -> str | None:
    """The value of ``--model.init_args.<name>=...`` among ``overrides`` (``None`` when absent)."""
    prefix = f"--model.init_args.{name}="
    return next((o[len(prefix):] for o in overrides if o.startswith(prefix)), None)
