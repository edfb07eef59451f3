"""The GPU figures of the performance issue in one prepared run (about 5 minutes on one GPU).

    python benchmarks/gpu_check.py --out gpu.jsonl                  # on a machine with CUDA
    python benchmarks/gpu_check.py --device cpu --quick --out x.jsonl  # smoke run (tests use it)

1. **Voting** at 50,000 private x 50,000 synthetic x 2048-d, 10 classes: the torch backend
   on the GPU, and faiss (faiss-gpu when it is installed, else faiss on the CPU, labelled
   so), each in a fresh process through ``benchmarks/voting.py``.
2. **One PE iteration with a diffusion API** at a realistic batch size:
   ``DiffusionUNetAPI`` on a small ``UNet2DModel`` (random weights built from a config and
   loaded back through ``from_pretrained``, so nothing is downloaded), 32 x 32 RGB, DDIM,
   ``api_batch_size`` 500, N_syn = 2,000 (MNIST's 10 classes x 200), lookahead 4 with
   reuse, 4,000 private MNIST digits, pixel embeddings. The module's ``time/*`` breakdown
   of iterations 1-2, the API's images per second (RANDOM and VARIATION, timed alone),
   and the peak CUDA memory.

Each part has its own time limit (``--part-timeout``); a part that fails or times out is
recorded as such and the others still run. Prints and appends one JSON line per result.
The model is small on purpose: the figures measure the framework's GPU path (batching,
transfers, autocast, search), not a real foundation model (docs/gpu.md gives the cost of
those).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


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

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_unet(Path(tmp) / "unet", image_size=32)
        api = DiffusionUNetAPI(model=model_dir, num_inference_steps=steps, image_size=28, channels=1, batch_size=batch,
                               local_files_only=True)
        model = PrivateEvolution(
            api=api, embedding=PixelEmbedding(), iterations=iterations, num_samples_per_class=per_class,
            variation_degrees=0.5, lookahead_degree=lookahead, threshold=1.0, noise_multiplier=5.0, seed=0,
            api_batch_size=batch, output_dir=os.path.join(tmp, "out"), save_png=False, search_backend="torch",
            embedding_cache_dir=os.path.join(tmp, "cache"),
        )
        accelerator = "gpu" if device.startswith("cuda") else "cpu"
        dm = MNISTDataModule(num_private=100) if quick else MNISTDataModule()
        trainer = pl.Trainer(max_epochs=iterations, accelerator=accelerator, devices=1, logger=CSVLogger(tmp, name="gpu"),
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp)
        if accelerator == "gpu":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_s = time.perf_counter() - start
        cuda_peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if accelerator == "gpu" else None
        metrics = mean_iteration_metrics(tmp)
        sync = torch.cuda.synchronize if accelerator == "gpu" else (lambda: None)
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


def voting(*, device: str, quick: bool, timeout: float) -> list[dict]:
    size, dim = (2000, 64) if quick else (50_000, 2048)
    cmd = [sys.executable, str(HERE / "voting.py"), "--sizes", str(size), "--dim", str(dim), "--classes", "10",
           "--backends", "torch", "faiss", "--device", device, "--no-append"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:i], or cpu for a smoke run")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results_gpu.jsonl", help="JSON lines are appended here")
    parser.add_argument("--part-timeout", type=float, default=240.0, help="seconds per part")
    args = parser.parse_args()

    def record(result: dict) -> None:
        result = {**result, "machine": _machine(args.device)}
        line = json.dumps(result)
        print(line, flush=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")

    parts = [("voting", lambda: voting(device=args.device, quick=args.quick, timeout=args.part_timeout)),
             ("pe_iteration", lambda: pe_iteration(device=args.device, quick=args.quick))]
    failed = []
    for name, fn in parts:
        start = time.perf_counter()
        try:
            for result in fn():
                record(result)
        except Exception as err:  # noqa: BLE001 - record it and go on with the next part
            failed.append(name)
            record({"benchmark": f"gpu_check_{name}", "error": f"{type(err).__name__}: {err}"[-2000:],
                    "seconds": round(time.perf_counter() - start, 1)})
    if failed:
        raise SystemExit(f"gpu_check: parts failed: {failed} (see {args.out})")


if __name__ == "__main__":
    main()
