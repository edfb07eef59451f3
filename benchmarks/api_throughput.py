"""Images per second of the DrawText API's RANDOM and VARIATION calls.

    python benchmarks/api_throughput.py --n 18000 --batch 4096

The same batching as the module (``api_batch_size`` chunks, one generator per chunk);
best of ``--repeats`` timings after one warm-up call. Prints one JSON line per call kind.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=18000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    api = DrawText(image_size=args.image_size)
    api.setup(class_names=[str(d) for d in range(10)])
    labels = np.arange(args.n, dtype=np.int64) % 10
    chunks = [slice(s, min(s + args.batch, args.n)) for s in range(0, args.n, args.batch)]

    def random():
        return [api.random(labels=labels[sl], generator=make_generator(0, 0, "random", i)) for i, sl in enumerate(chunks)]

    pop = random()

    def variation():
        for i, (sl, out) in enumerate(zip(chunks, pop)):
            api.variation(images=out.images, conditions=out.conditions, labels=labels[sl], degree=0.4,
                          generator=make_generator(0, 1, "variation", 0, i))

    for name, fn in (("random", random), ("variation", variation)):
        fn()
        best = min(_timed(fn) for _ in range(args.repeats))
        print(json.dumps({
            "benchmark": "api_throughput", "api": "DrawText", "call": name, "images": args.n, "batch": args.batch,
            "image_size": args.image_size, "seconds": round(best, 3), "images_per_s": round(args.n / best),
            "threads": torch.get_num_threads(), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        }))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
