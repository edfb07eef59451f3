"""Peak memory of a large PE run: N_syn = 50,000 at 32x32 with DrawText and pixel embeddings.

    python benchmarks/memory.py --num-per-class 5000 --iterations 2 [--spill-mb 256]

Private data: the 4,000 private MNIST digits of docs/benchmark.md, zero-padded to 32x32 (the
DrawText canvas is 32x32 too). Lookahead 8 with ``reuse_lookahead`` (so 8 variations of
every synthetic sample are kept for reuse: the largest working set). Prints one JSON line
with the process's peak RSS (``ru_maxrss``: resident pages, memory-mapped file pages that
were resident included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")

import lightning.pytorch as pl  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pe_lightning import DrawText, MNISTDataModule, PixelEmbedding, PrivateEvolution  # noqa: E402


class PaddedMNIST(MNISTDataModule):
    """docs/benchmark.md's MNIST split, zero-padded from 28x28 to 32x32 (and repeated to ``channels``)."""

    def __init__(self, *, channels: int = 1) -> None:
        super().__init__()
        self.channels = channels

    def load(self):
        p_img, p_lab, t_img, t_lab, names = super().load()
        pad = ((0, 0), (2, 2), (2, 2), (0, 0))
        p_img, t_img = (np.repeat(np.pad(x, pad), self.channels, axis=3) for x in (p_img, t_img))
        return p_img, p_lab, t_img, t_lab, names


def run(*, num_per_class: int, iterations: int, lookahead: int, spill_mb: float | None, channels: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as private:
        model = PrivateEvolution(
            api=DrawText(image_size=32, channels=channels), embedding=PixelEmbedding(), iterations=iterations,
            num_samples_per_class=num_per_class, variation_degrees=0.4, lookahead_degree=lookahead, threshold=1.0,
            noise_multiplier=5.0, seed=0, output_dir=tmp, save_png=False, reuse_lookahead=True,
            spill_to_disk_mb=spill_mb, private_state_dir=private,  # keys and the embedding cache: outside the output root
        )
        trainer = pl.Trainer(
            max_epochs=iterations, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
        )
        start = time.perf_counter()
        trainer.fit(model, datamodule=PaddedMNIST(channels=channels))
        total = time.perf_counter() - start
        n = len(model.population)
        shape = model.population.images.shape[1:]
    return {
        "workload": f"N_syn={n} at {shape[0]}x{shape[1]}x{shape[2]}, DrawText, pixel embedding, lookahead={lookahead} "
                    f"(reused), {iterations} iterations, spill_to_disk_mb={spill_mb}",
        "fit_total_s": round(total, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-per-class", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--lookahead", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--spill-mb", type=float, default=1024.0, help="spill_to_disk_mb (negative: never spill)")
    args = parser.parse_args()
    spill = None if args.spill_mb < 0 else args.spill_mb
    print(json.dumps(run(num_per_class=args.num_per_class, iterations=args.iterations, lookahead=args.lookahead, spill_mb=spill, channels=args.channels)))


if __name__ == "__main__":
    main()
