"""Images per second of the weight-free voting embeddings (pixels, HOG, multi-scale HOG), and their share of an iteration.

    python benchmarks/embedding_throughput.py --n 80000 --repeats 3    # a lookahead of 8 x 10,000 images

Embeds ``n`` DrawText renders (28 x 28, one channel, the MNIST demo's images) with each
embedding, in the module's ``embedding_batch_size`` chunks (1,024), best of ``--repeats``
after a warm-up. Prints one JSON line per embedding: images/s and the seconds for ``n``
images (wall clock; ``cpu_seconds``: this process's CPU time in that run, which a shared
machine's load disturbs less), i.e. the embedding time of one iteration whose lookahead embeds ``n`` images
(``8 x 10,000`` at the planner's RANDOM population). With ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from pe_lightning import DrawText
from pe_lightning.embeddings import HOGEmbedding, MultiScaleHOGEmbedding, PixelEmbedding
from pe_lightning.seeding import make_generator

EMBEDDINGS = {
    "PixelEmbedding": PixelEmbedding,
    "HOGEmbedding (the plan's: 9 orientations, 4x4 cells, per-cell L2)": HOGEmbedding,
    "MultiScaleHOGEmbedding (cells 4 and 7)": MultiScaleHOGEmbedding,
    "MultiScaleHOGEmbedding (cells 4 and 7, 7x7 pixels)": lambda: MultiScaleHOGEmbedding(pixel_size=7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80000, help="images per timing (default: a lookahead of 8 x 10,000)")
    parser.add_argument("--batch", type=int, default=1024, help="images per embed chunk (the module's embedding_batch_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    api = DrawText(image_size=28)
    api.setup(class_names=[str(d) for d in range(10)])
    render = min(args.n, 10000)  # render a pool once and tile it: the embedding's cost does not depend on content
    pool = api.random(labels=np.arange(render) % 10, generator=make_generator(0, 0, "random", 0)).images
    images = np.ascontiguousarray(np.resize(pool, (args.n, *pool.shape[1:])))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for name, make in EMBEDDINGS.items():
        emb = make()
        emb.setup(device=args.device)
        emb.embed(images[: args.batch], batch_size=args.batch)  # warm-up
        times = []
        for _ in range(args.repeats):
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            out = emb.embed(images, batch_size=args.batch)
            sync()
            times.append((time.perf_counter() - start, time.process_time() - cpu_start))
        best, cpu = min(times)
        print(json.dumps({
            "benchmark": "embedding_throughput", "embedding": name, "dim": int(out.shape[1]), "images": args.n,
            "batch": args.batch, "seconds": round(best, 3), "cpu_seconds": round(cpu, 3),
            "images_per_s": round(args.n / best), "device": args.device,
            "threads": torch.get_num_threads(), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }), flush=True)


if __name__ == "__main__":
    main()
