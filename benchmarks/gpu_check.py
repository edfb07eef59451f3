"""The GPU figures of the performance issue in one prepared run (about 8 minutes on one GPU).

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


PARTS = {"voting": voting, "pe_iteration": pe_iteration, "shipped_configs": shipped_configs}


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
    parser.add_argument("--part-timeout", type=float, default=300.0, help="seconds per part (each its own process)")
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
        rows, error = run_part(name, device=args.device, quick=args.quick, timeout=args.part_timeout)
        for row in rows:
            record(row)
            if row.get("passed") is False:
                failed.append(f"{name}: {row.get('config')}")
        if error:
            failed.append(name)
            record({"benchmark": f"gpu_check_{name}", "error": error, "seconds": round(time.perf_counter() - start, 1)})
    if failed:
        raise SystemExit(f"gpu_check: parts failed: {failed} (see {args.out})")


if __name__ == "__main__":
    main()
