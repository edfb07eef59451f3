"""Images per second of the DrawText API's RANDOM and VARIATION calls.

    python benchmarks/api_throughput.py --n 18000 --batch 4096

The same batching as the module (``api_batch_size`` chunks, one generator per chunk);
best of ``--repeats`` timings after a one-chunk warm-up. Prints one JSON line per call kind.
``measure`` is shared with ``gpu_check.py``.
The diffusers APIs need a GPU to give meaningful figures (see docs/gpu.md).
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
from pe_lightning.seeding import make_generator


def measure(api, *, n: int, batch: int, class_names: list[str], repeats: int = 3, degree: float = 0.4,
            sync=lambda: None) -> list[dict]:
    """Seconds and images per second of ``n`` RANDOM and ``n`` VARIATION images in ``batch`` chunks.

    The same batching as the module (one generator per chunk); VARIATION at ``degree``. One
    chunk of each call is a warm-up; then the best of ``repeats`` timings. ``sync`` waits for the device (CUDA).
    """
    labels = np.arange(n, dtype=np.int64) % len(class_names)
    chunks = [slice(s, min(s + batch, n)) for s in range(0, n, batch)]

    def random():
        return [api.random(labels=labels[sl], generator=make_generator(0, 0, "random", i)) for i, sl in enumerate(chunks)]

    def variation(outs):
        for i, (sl, out) in enumerate(zip(chunks, outs)):
            api.variation(images=out.images, conditions=out.conditions, labels=labels[sl], degree=degree,
                          generator=make_generator(0, 1, "variation", 0, i))

    warm = api.random(labels=labels[chunks[0]], generator=make_generator(0, 0, "warm-up"))
    variation([warm])
    sync()
    pop = None
    times = {"random": [], "variation": []}
    for _ in range(repeats):
        start = time.perf_counter()
        pop = random()
        sync()
        times["random"].append(time.perf_counter() - start)
        start = time.perf_counter()
        variation(pop)
        sync()
        times["variation"].append(time.perf_counter() - start)
    return [{"call": call, "images": n, "batch": batch, "seconds": round(min(t), 3), "images_per_s": round(n / min(t), 1)}
            for call, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=18000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    api = DrawText(image_size=args.image_size)
    class_names = [str(d) for d in range(10)]
    api.setup(class_names=class_names)
    for result in measure(api, n=args.n, batch=args.batch, class_names=class_names, repeats=args.repeats):
        print(json.dumps({
            "benchmark": "api_throughput", "api": "DrawText", **result, "image_size": args.image_size,
            "images_per_s": round(result["images_per_s"]), "threads": torch.get_num_threads(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        }))


if __name__ == "__main__":
    main()
