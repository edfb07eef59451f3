"""The GPU figures of the performance issue in one prepared run (about 8 minutes on one GPU, plus the reproduction smoke).

    python benchmarks/gpu_check.py --out gpu.jsonl                  # on a machine with CUDA
    python benchmarks/gpu_check.py --device cuda:1 --out gpu.jsonl  # another GPU of the machine
    python benchmarks/gpu_check.py --device cpu --quick --out x.jsonl  # smoke run (tests use it)

1. **Voting** at 50,000 private x 50,000 synthetic x 2048-d, 10 classes: the torch backend
   on the GPU, faiss (faiss-gpu's ``knn_gpu`` on the CUDA tensors when it is installed, else
   faiss on the CPU, labelled so) and ``auto`` (what PE picks for CUDA tensors, recorded as
   ``resolved``), each in a fresh process through ``benchmarks/voting.py``.
2. **One PE iteration with a diffusion API** at a realistic batch size:
   ``DiffusionUNetAPI`` on a small ``UNet2DModel`` (random weights built from a config and
   loaded back through ``from_pretrained``, so nothing is downloaded), 32 x 32 RGB, DDIM,
   ``api_batch_size`` 500, N_syn = 2,000 (MNIST's 10 classes x 200), lookahead 4 with
   reuse, 4,000 private MNIST digits, pixel embeddings. The module's ``time/*`` breakdown
   of iterations 1-2, the API's images per second (RANDOM and VARIATION, timed alone),
   and the peak CUDA memory.
3. **Every shipped GPU config** (``trainer.accelerator: gpu``) end to end on the device:
   ``tests/test_shipped_configs.py`` with ``PE_TEST_DEVICE`` set, i.e. the config's classes
   at the test's reduced sizes (T = 2, a few samples per class, tiny random-weight models
   and a random-weight Inception). One row per config: passed or the error, and seconds.
   (``--quick``: the first such config only.)

4. **Reproduction smoke** (docs/reproduction.md): each paper config (``cifar10_adm``, ``camelyon17_adm``,
   ``cat_sd``) with its own API settings and vote embedding, real weights when present (else a random-weight
   full-size ADM, the same work per step; Stable Diffusion is skipped without its weights): RANDOM and VARIATION
   images/s at one API batch, the embedding's images/s, peak CUDA memory, and the full run's projected hours on
   this device; then a markdown table to paste into docs/reproduction.md. Sized for under 10 minutes on one H100
   (one API batch per call type; not yet run on one), alone:
   ``python benchmarks/gpu_check.py --parts reproduction --out repro.jsonl``.

Each part runs in its own process under its own time limit (``--part-timeout``); a part
that fails or times out is recorded as such (with the rows it finished) and the others
still run. ``--device cuda:N`` puts every part on GPU N. Prints and appends one JSON line
per result.
The model is small on purpose: the figures measure the framework's GPU path (batching,
transfers, autocast, search), not a real foundation model (docs/gpu.md gives the cost of
those).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _machine(device: str) -> str:
    import torch

    name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if device.startswith("cuda") and torch.cuda.is_available():
        name += f", {torch.cuda.get_device_name(torch.device(device))}"
    return name


def build_unet(folder: Path, *, image_size: int) -> str:
    """A small random-weight ``UNet2DModel`` + DDIM scheduler saved as a diffusers pipeline folder."""
    import torch
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=image_size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 64),
        norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return str(folder)


def pe_iteration(*, device: str, quick: bool) -> list[dict]:
    """One short PE run with the diffusion API; the breakdown of its iterations and the API throughput."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    import lightning.pytorch as pl
    import torch
    from api_throughput import measure  # benchmarks/ (this script's folder) is on sys.path
    from iteration import mean_iteration_metrics
    from lightning.pytorch.loggers import CSVLogger

    from pe_lightning import MNISTDataModule, PixelEmbedding, PrivateEvolution
    from pe_lightning.apis import DiffusionUNetAPI

    per_class, lookahead, batch, steps, iterations = (1, 1, 8, 2, 2) if quick else (200, 4, 500, 20, 2)

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as private:
        model_dir = build_unet(Path(tmp) / "unet", image_size=32)
        api = DiffusionUNetAPI(model=model_dir, num_inference_steps=steps, image_size=28, channels=1, batch_size=batch,
                               local_files_only=True)
        model = PrivateEvolution(
            api=api, embedding=PixelEmbedding(), iterations=iterations, num_samples_per_class=per_class,
            variation_degrees=0.5, lookahead_degree=lookahead, threshold=1.0, noise_multiplier=5.0, seed=0,
            api_batch_size=batch, output_dir=os.path.join(tmp, "out"), save_png=False, search_backend="torch",
            private_state_dir=private,  # keys and the embedding cache: outside the output root
        )
        dev = torch.device(device)
        accelerator, devices = ("gpu", [dev.index or 0]) if dev.type == "cuda" else ("cpu", 1)
        dm = MNISTDataModule(num_private=100) if quick else MNISTDataModule()
        trainer = pl.Trainer(max_epochs=iterations, accelerator=accelerator, devices=devices,
                             logger=CSVLogger(tmp, name="gpu"), enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp)
        if accelerator == "gpu":
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_s = time.perf_counter() - start
        cuda_peak = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if accelerator == "gpu" else None
        metrics = mean_iteration_metrics(tmp)
        sync = (lambda: torch.cuda.synchronize(dev)) if accelerator == "gpu" else (lambda: None)
        throughput = measure(api, n=8 * batch if not quick else 2 * batch, batch=batch, class_names=model.class_names,
                             repeats=1, degree=0.5, sync=sync)

    def mean(key: str) -> float:
        return round(metrics.get(key, 0.0), 4)

    it = mean("time/iteration_s")
    stages = {k: mean(f"time/{k}_s") for k in ("api", "api_lookahead", "api_variation", "embedding", "voting", "selection")}
    other = round(it - stages["api"] - stages["embedding"] - stages["voting"], 4)
    workload = (f"PE iteration, DiffusionUNetAPI (UNet2DModel 32/64/64 channels, random weights, {steps} DDIM steps, 32x32 RGB "
                f"-> 28x28 gray), api_batch_size {batch}, N_syn={10 * per_class}, lookahead {lookahead} (reuse), "
                f"{len(dm.private_labels) if dm.private_labels is not None else '?'} private MNIST, pixel embedding, torch search")
    out = [{"benchmark": "gpu_pe_iteration", "workload": workload, "device": device, "iteration_s": it, **{f"{k}_s": v for k, v in stages.items()},
            "other_s": other, "overhead_pct": round(100 * other / it, 2) if it else None, "fit_total_s": round(fit_s, 2),
            "cuda_peak_allocated_mib": cuda_peak, "reused_lookahead_fraction": mean("pe/reused_lookahead_fraction")}]
    for t in throughput:
        out.append({"benchmark": "gpu_api_throughput", "api": "DiffusionUNetAPI (small random-weight UNet)", "device": device,
                    "inference_steps": steps, **t})
    return out


def voting(*, device: str, quick: bool) -> list[dict]:
    size, dim = (2000, 64) if quick else (50_000, 2048)
    cmd = [sys.executable, str(HERE / "voting.py"), "--sizes", str(size), "--dim", str(dim), "--classes", "10",
           "--backends", "torch", "faiss", "auto", "--device", device, "--no-append"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def gpu_configs() -> list[str]:
    """Names (stems) of the shipped configs that ask for a GPU (``trainer.accelerator: gpu``)."""
    import yaml

    return sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")
                  if (yaml.safe_load(p.read_text()).get("trainer") or {}).get("accelerator") == "gpu")


def shipped_configs(*, device: str, quick: bool) -> list[dict]:
    """Each shipped GPU config's end-to-end test (tests/test_shipped_configs.py) on ``device``; one row per config."""
    names = gpu_configs()[:1] if quick else gpu_configs()
    test = "tests/test_shipped_configs.py::test_shipped_config_runs_end_to_end"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
               *(f"{test}[{name}]" for name in names)]
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PE_TEST_DEVICE=device), capture_output=True, text=True)
        if not report.is_file():
            raise RuntimeError(f"{' '.join(cmd)} wrote no report: {(proc.stdout + proc.stderr)[-2000:]}")
        cases = {case.get("name"): case for case in ElementTree.parse(report).iter("testcase")}
    rows = []
    for name in names:
        case = cases.get(f"test_shipped_config_runs_end_to_end[{name}]")
        problem = None if case is None else next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        row = {"benchmark": "gpu_shipped_config", "config": f"configs/{name}.yaml", "device": device,
               "passed": case is not None and problem is None,
               "seconds": round(float(case.get("time", 0)), 1) if case is not None else None}
        if not row["passed"]:
            row["error"] = "not run" if case is None else (problem.get("message") or problem.text or "")[-2000:]
        rows.append(row)
    return rows


#: The paper settings (docs/reproduction.md): config stem -> (private images, classes, reference images for FID).
#: Public facts of the data sets (CIFAR-10: 50,000 train / 10,000 test; WILDS Camelyon17: 302,436 train / 85,054 test;
#: Cat Cookie: 100 photos, no FID reference here).
PAPER_RUNS = {"cifar10_adm": (50_000, 10, 10_000), "camelyon17_adm": (302_436, 2, 85_054), "cat_sd": (100, 1, 0)}


def _instantiate(spec: dict, **overrides):
    """The object a config's ``class_path`` / ``init_args`` entry describes, with ``overrides`` applied."""
    import importlib

    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **overrides})


def _api_weights(api_spec: dict, tmp: Path, *, quick: bool) -> tuple[dict, str]:
    """Overrides that point the config's API at its real weights when present, else at stand-ins; and a label.

    ImprovedDiffusionAPI without the checkpoint: the full 270M U-Net with random weights (the same work per step)
    on a GPU, the tests' tiny one with ``--quick``. StableDiffusionAPI without the weights in the Hugging Face cache:
    the tests' tiny pipeline with ``--quick``; on a GPU the config is reported as skipped (no full-size stand-in
    can be built offline).
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_weights

    args = api_spec.get("init_args", {})
    if api_spec["class_path"].endswith("ImprovedDiffusionAPI"):
        from pe_lightning.apis.diffusers.improved_diffusion import config_from
        from pe_lightning.apis.diffusers.improved_diffusion.weights import resolve_checkpoint

        if not quick:
            try:
                return {"checkpoint": resolve_checkpoint(args["checkpoint"])}, "real weights"
            except FileNotFoundError:
                import torch

                path = tmp / "adm_random.pt"
                torch.save(tiny_weights.random_adm_state(config_from(args.get("preset"), args.get("model_config"))), path)
                return {"checkpoint": str(path)}, "random weights, full size"
        return ({"checkpoint": tiny_weights.write_tiny_adm_checkpoint(tmp / "tiny_adm.pt"),
                 "model_config": {k: v for k, v in tiny_weights.TINY_ADM_FLAGS.items()}, "batch_size": 2},
                "tiny random stand-in")
    if not quick:
        return {"local_files_only": True}, "real weights"
    sd = tiny_weights.build_tiny_diffusers_models(tmp / "tiny")["sd"]
    return {"model": sd, "local_files_only": True, "batch_size": 2, "vae_batch_size": 2}, "tiny random stand-in"


def _inception_weights(tmp: Path) -> tuple[str | None, str]:
    """The FID Inception weights if present (None: InceptionEmbedding finds them), else random ones (same work)."""
    from pe_lightning.embeddings.inception import _hub_candidates

    if any(os.path.isfile(p) for p in _hub_candidates()):
        return None, "real weights"
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_weights import write_random_inception_weights

    return write_random_inception_weights(tmp / "inception.pth"), "random weights"


def _steps(api, degree: float) -> int:
    """Denoising steps of one VARIATION at ``degree`` (of a RANDOM when ``degree`` is None)."""
    if hasattr(api, "_schedules"):  # ImprovedDiffusionAPI: R respaced steps, int(R * s) of them per variation
        total = next(iter(api._schedules.values())).num_steps
    else:
        total = api.num_inference_steps
    return total if degree is None else max(1, int(total * degree))


def project_hours(*, name: str, config: dict, random_s_per_step: float, variation_s_per_step: float,
                  embed_per_s: float) -> dict:
    """The full run's API and embedding seconds, linear in sample-steps and embedded images (voting not counted).

    Sample-steps: RANDOM ``N * R``; each iteration ``(k + 1) N int(R s_t)`` (k lookahead variations and N fresh
    children, ``reuse_lookahead: false``). Embedded images: the private set once, ``k N`` per iteration, and the FID
    callback's population at ``T + 1`` evaluations plus its reference set once.
    """
    private, classes, reference = PAPER_RUNS[name]
    model = config["model"]["init_args"]
    n, k, degrees = model["num_samples_per_class"] * classes, model["lookahead_degree"], model["variation_degrees"]
    api = model["api"]["init_args"]
    total = api.get("num_inference_steps") or int(str(api.get("timestep_respacing", "100")).removeprefix("ddim"))
    random_steps = n * total
    variation_steps = sum((k + 1) * n * max(1, int(total * s)) for s in degrees)
    has_fid = any(c["class_path"].endswith("FIDCallback") for c in config["trainer"]["callbacks"])
    embeds = private + len(degrees) * k * n + (((len(degrees) + 1) * n + reference) if has_fid else 0)
    api_s = random_steps * random_s_per_step + variation_steps * variation_s_per_step
    embed_s = embeds / embed_per_s
    return {"sample_steps": random_steps + variation_steps, "embedded_images": embeds, "projected_api_h": round(api_s / 3600, 2),
            "projected_embedding_h": round(embed_s / 3600, 2), "projected_hours": round((api_s + embed_s) / 3600, 2)}


def reproduction(*, device: str, quick: bool) -> Iterator[dict]:
    """Each paper config's API and embedding at reduced N on ``device``: images/s per call type, memory, projected hours.

    A generator: each config's row is printed as soon as it is done, so a part that runs out of time keeps them.

    The config's own API settings (respacing or steps, batch size, dtype, autocast) and vote embedding
    (CleanInceptionEmbedding at its resolution); RANDOM and one VARIATION at the first iteration's strength, one batch
    each after a warm-up batch; the embedding on 4 batches of its own outputs. The projection is linear in
    sample-steps (docs/reproduction.md). Then the config itself for one PE iteration at reduced N
    (:func:`reduced_fit`, random stand-in data; ``--quick``: Camelyon17 only).
    """
    import numpy as np
    import torch
    import yaml

    from pe_lightning.embeddings import CleanInceptionEmbedding
    from pe_lightning.seeding import make_generator

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for name in PAPER_RUNS:
        config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        model = config["model"]["init_args"]
        classes = PAPER_RUNS[name][1]
        with tempfile.TemporaryDirectory() as tmp:
            row = {"benchmark": "gpu_reproduction", "config": f"configs/{name}.yaml", "device": device}
            overrides, row["api_weights"] = _api_weights(model["api"], Path(tmp), quick=quick)
            try:
                api = _instantiate(model["api"], **overrides)
                api.setup(device=dev, class_names=[str(c) for c in range(classes)])
            except OSError as err:  # Stable Diffusion weights not in the cache (offline)
                yield {**row, "skipped": f"weights not found: {str(err)[:300]}"}
                continue
            weights, row["inception_weights"] = _inception_weights(Path(tmp))
            if not quick or name == "camelyon17_adm":  # --quick: one reduced fit (the shipped_configs part runs them all)
                row.update(reduced_fit(name=name, device=device, quick=quick, api_overrides=overrides, inception=weights,
                                       tmp=Path(tmp) / "fit"))
            embedding = CleanInceptionEmbedding(weights_path=weights, **model["embedding"].get("init_args", {}))
            embedding.setup(device=dev)
            batch = api.batch_size
            labels = np.arange(batch, dtype=np.int64) % classes
            degree = model["variation_degrees"][0]
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            warm = api.random(labels=labels, generator=make_generator(0, 0, "warm-up"))
            api.variation(images=warm.images, conditions=warm.conditions, labels=labels, degree=degree,
                          generator=make_generator(0, 1, "warm-up"))
            embedding.embed(warm.images)
            sync()
            start = time.perf_counter()
            out = api.random(labels=labels, generator=make_generator(0, 0, "random"))
            sync()
            random_s = time.perf_counter() - start
            start = time.perf_counter()
            api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=degree,
                          generator=make_generator(0, 1, "variation"))
            sync()
            variation_s = time.perf_counter() - start
            images = np.concatenate([out.images] * 4)
            start = time.perf_counter()
            embedding.embed(images, batch_size=embedding.max_batch_size)
            sync()
            embed_s = time.perf_counter() - start
            row.update({
                "batch": batch, "image_shape": list(out.images.shape[1:]),
                "random_images_per_s": round(batch / random_s, 2), "random_steps": _steps(api, None),
                "variation_images_per_s": round(batch / variation_s, 2), "variation_degree": degree,
                "variation_steps": _steps(api, degree),
                "embedding_images_per_s": round(len(images) / embed_s, 1),
                "cuda_peak_allocated_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
            })
            row.update(project_hours(
                name=name, config=config, random_s_per_step=random_s / (batch * row["random_steps"]),
                variation_s_per_step=variation_s / (batch * row["variation_steps"]), embed_per_s=row["embedding_images_per_s"]))
            del api, embedding
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            yield row


#: Reduced runs of the paper configs (one PE iteration): synthetic samples per class on a GPU / with --quick.
REDUCED_PER_CLASS = {"cifar10_adm": (10, 1), "camelyon17_adm": (50, 2), "cat_sd": (10, 2)}


def _stand_in_data(name: str, folder: Path) -> list[str]:
    """Random private/test images in the config's data layout (the real data sets are not needed for timing)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_weights

    if name == "cifar10_adm":
        root = tiny_weights.write_cifar10_batches(folder / "cifar10", per_batch=20, test=20)
        return [f"--data.init_args.root={root}", "--data.init_args.verify_md5=false"]
    if name == "camelyon17_adm":
        tiny_weights.write_image_folder(folder / "cam" / "train", {"normal": 20, "tumor": 20}, size=96, seed=0)
        tiny_weights.write_image_folder(folder / "cam" / "test", {"normal": 10, "tumor": 10}, size=96, seed=1)
        return [f"--data.init_args.private_dir={folder / 'cam' / 'train'}", f"--data.init_args.test_dir={folder / 'cam' / 'test'}"]
    return [f"--data.init_args.private_dir={tiny_weights.write_image_folder(folder / 'cat', {'cookie': 10}, size=64)}"]


def reduced_fit(*, name: str, device: str, quick: bool, api_overrides: dict, inception: str | None, tmp: Path) -> dict:
    """``python -m pe_lightning fit --config configs/<name>.yaml`` for one PE iteration at reduced N on ``device``.

    The config's classes and settings, its API on the weights ``api_overrides`` names, random stand-in data; the
    row holds the wall seconds of the fit and the iteration's ``time/*`` breakdown from the ``[PE] iteration 1/1`` line.
    """
    import yaml

    config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    per_class = REDUCED_PER_CLASS[name][1 if quick else 0]
    degree = config["model"]["init_args"]["variation_degrees"][0]
    prefix = "--model.init_args.api.init_args."
    args = [f"--model.init_args.iterations=1", "--trainer.max_epochs=1", f"--model.init_args.num_samples_per_class={per_class}",
            f"--model.init_args.variation_degrees=[{degree}]", f"--trainer.default_root_dir={tmp / 'run'}",
            *(f"{prefix}{k}={json.dumps(v) if isinstance(v, (dict, list, bool)) else v}" for k, v in api_overrides.items()),
            *_stand_in_data(name, tmp / "data")]
    dev = device.partition(":")
    args += ["--trainer.accelerator=gpu", f"--trainer.devices=[{dev[2] or 0}]"] if dev[0] == "cuda" else ["--trainer.accelerator=cpu"]
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    if inception is not None:  # random Inception weights where InceptionEmbedding looks for them
        from pe_lightning.embeddings.inception import INCEPTION_WEIGHTS_FILENAME

        hub = tmp / "torch_home" / "hub" / "checkpoints"
        hub.mkdir(parents=True, exist_ok=True)
        (hub / INCEPTION_WEIGHTS_FILENAME).symlink_to(inception)
        env["TORCH_HOME"] = str(tmp / "torch_home")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pe_lightning", "fit", "--config", str(ROOT / "configs" / f"{name}.yaml"), *args],
                          cwd=tmp, env=env, capture_output=True, text=True)
    row = {"fit_seconds": round(time.perf_counter() - start, 1), "fit_samples": per_class * PAPER_RUNS[name][1]}
    line = next((ln for ln in (proc.stdout + proc.stderr).splitlines() if "[PE] iteration 1/1" in ln), None)
    if proc.returncode != 0 or line is None:
        return {**row, "fit_error": (proc.stdout + proc.stderr)[-1500:]}
    for part in line.split("|")[1:]:
        key, _, value = part.strip().partition("=")
        if key.startswith("time/") or key.startswith("fid/"):
            row[f"fit_{key.replace('/', '_')}"] = float(value)
    return row


def reproduction_table(rows: list[dict]) -> str:
    """A markdown table of the reproduction rows, ready to paste into docs/reproduction.md."""
    lines = ["| config | device | weights | RANDOM img/s | VARIATION img/s (s) | embedding img/s | peak MiB | "
             "1 iteration at N (s) | projected h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "random_images_per_s" not in r:
            lines.append(f"| `{r.get('config')}` | {r.get('device')} | {r.get('skipped') or r.get('error', '')[:80]} | | | | | | |")
            continue
        fit = (f"{r['fit_time_iteration_s']:.1f} at {r['fit_samples']}" if "fit_time_iteration_s" in r
               else ("failed" if "fit_error" in r else "not run"))
        lines.append(f"| `{r['config']}` | {r['machine'] if 'machine' in r else r['device']} | {r['api_weights']} / Inception "
                     f"{r['inception_weights']} | {r['random_images_per_s']} | {r['variation_images_per_s']} "
                     f"({r['variation_degree']}) | {r['embedding_images_per_s']} | {r['cuda_peak_allocated_mib']} | "
                     f"{fit} | {r['projected_hours']} |")
    return "\n".join(lines)


PARTS = {"voting": voting, "pe_iteration": pe_iteration, "shipped_configs": shipped_configs, "reproduction": reproduction}
#: Seconds each part may run when --part-timeout is not given (the reproduction smoke is sized for 10 minutes on one H100).
PART_TIMEOUTS = {"reproduction": 570.0}


def run_part(name: str, *, device: str, quick: bool, timeout: float) -> tuple[list[dict], str | None]:
    """Run one part in a fresh process (and process group) under ``timeout`` seconds.

    Returns:
        The rows it printed (also those of a part that failed or timed out half-way) and
        an error message, or ``None`` when it succeeded.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--device", device, *(["--quick"] * quick)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        error = None if proc.returncode == 0 else f"exit status {proc.returncode}: {err[-2000:]}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part and whatever it started
        out, err = proc.communicate()
        error = f"timed out after {timeout:g} s (--part-timeout): {err[-1000:]}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:i], or cpu for a smoke run")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results_gpu.jsonl", help="JSON lines are appended here")
    parser.add_argument("--part-timeout", type=float, default=None,
                        help="seconds per part (each its own process); default 300, reproduction 570")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS), help="parts to run")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # internal: run one part here
    args = parser.parse_args()
    if args.part:  # a child process: print the part's rows
        for row in PARTS[args.part](device=args.device, quick=args.quick):
            print(json.dumps(row), flush=True)
        return

    def record(result: dict) -> None:
        result = {**result, "machine": _machine(args.device)}
        line = json.dumps(result)
        print(line, flush=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")

    failed = []
    for name in args.parts:
        start = time.perf_counter()
        timeout = args.part_timeout if args.part_timeout is not None else PART_TIMEOUTS.get(name, 300.0)
        rows, error = run_part(name, device=args.device, quick=args.quick, timeout=timeout)
        for row in rows:
            record(row)
            if row.get("passed") is False:
                failed.append(f"{name}: {row.get('config')}")
        if error:
            failed.append(name)
            record({"benchmark": f"gpu_check_{name}", "error": error, "seconds": round(time.perf_counter() - start, 1)})
        if name == "reproduction" and rows:
            print("\n" + reproduction_table([{**r, "machine": _machine(args.device)} for r in rows]) + "\n", flush=True)
    if failed:
        raise SystemExit(f"gpu_check: parts failed: {failed} (see {args.out})")


if __name__ == "__main__":
    main()
