"""Time and size nearest-neighbour voting (``pe_lightning.voting.assign_votes``), faiss and torch backends.

    python benchmarks/voting.py --sizes 10000 50000 --dim 2048 --backends faiss torch [--device cuda]

Each configuration (size, classes, backend) runs in a fresh subprocess, so peak memory is
its own: the peak RSS delta is ``ru_maxrss`` at the end minus the resident set just before
the first timed call (the embeddings themselves are not counted), and on CUDA
``torch.cuda.max_memory_allocated`` minus what was allocated before the call (faiss-gpu
allocates outside torch's allocator: that is not in the CUDA figure).

Workload: ``size`` private and ``size`` synthetic random float32 embeddings (seeded) of
``dim`` dimensions, in ``C`` classes of equal size; private samples vote within their own
class (10 classes), and, where cheap enough, in one class (the 1-class search is ``C`` times
the work). Private labels are shuffled (like a real data set); synthetic samples are grouped
by class (like a population). The two backends' votes are compared (fraction that agree:
exact search, so only float near-ties may differ).

Prints one JSON line per configuration and appends them to ``benchmarks/results.jsonl``
(``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker(*, size: int, dim: int, classes: int, backend: str, device: str, repeats: int, seed: int, votes_out: str | None) -> dict:
    """One configuration, in this (fresh) process."""
    import numpy as np
    import torch

    from pe_lightning.neighbors import resolve_backend
    from pe_lightning.voting import assign_votes

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    g = torch.Generator().manual_seed(seed)
    private = torch.randn(size, dim, generator=g)
    synthetic = torch.randn(size, dim, generator=g)
    private_labels = (torch.arange(size) % classes)[torch.randperm(size, generator=g)]
    synthetic_labels = torch.arange(size) * classes // size  # grouped by class, equal sizes
    private, synthetic = private.to(dev), synthetic.to(dev)
    private_labels, synthetic_labels = private_labels.to(dev), synthetic_labels.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def call() -> torch.Tensor:
        return assign_votes(private_embeddings=private, private_labels=private_labels, synthetic_embeddings=synthetic,
                            synthetic_labels=synthetic_labels, k=1, backend=backend)

    # Warm-up on a small slice: library loading, thread pools, CUDA context, faiss-gpu resources.
    w = min(size, 512)
    assign_votes(private_embeddings=private[:w], private_labels=torch.zeros_like(private_labels[:w]),
                 synthetic_embeddings=synthetic[:w], synthetic_labels=torch.zeros_like(synthetic_labels[:w]), backend=backend)
    sync()
    rss_before, max_rss_before = _rss_bytes(), _max_rss_bytes()
    cuda_before = 0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_before = torch.cuda.memory_allocated(dev)
    times = []
    votes = None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        votes = call()
        sync()
        times.append(time.perf_counter() - start)
    peak_delta = max(0, _max_rss_bytes() - rss_before)
    if votes_out:
        np.save(votes_out, votes.cpu().numpy())
    faiss_version = faiss_gpu = None
    try:
        import faiss

        faiss_version, faiss_gpu = faiss.__version__, hasattr(faiss, "StandardGpuResources")
    except ImportError:
        pass
    resolved = resolve_backend(backend, dev)  # what 'auto' picks for tensors on this device
    on_gpu = dev.type == "cuda" and (resolved == "torch" or bool(faiss_gpu))
    flops = 2.0 * size * (size / classes) * dim  # the distance GEMMs of all classes
    times_sorted = sorted(times)
    result = {
        "benchmark": "voting",
        "workload": (
            f"voting: {size:,} private x {size:,} synthetic x {dim}-d float32, {classes} class{'es' if classes > 1 else ''}, "
            f"k=1, {backend if backend == resolved else f'{backend} ({resolved})'} on {'GPU' if on_gpu else 'CPU'}"
        ),
        "private": size,
        "synthetic": size,
        "dim": dim,
        "classes": classes,
        "backend": backend,
        "resolved": resolved,
        "device": str(dev) if on_gpu else "cpu",
        "seconds": round(times_sorted[0], 4),
        "seconds_median": round(times_sorted[len(times) // 2], 4),
        "seconds_all": [round(t, 4) for t in times],
        "gflop_per_s": round(flops / times_sorted[0] / 1e9, 1),
        "peak_rss_delta_mib": round(peak_delta / 2**20, 1),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "max_rss_before_mib": round(max_rss_before / 2**20, 1),  # > rss_before: an earlier peak may hide part of the delta
        "cuda_peak_allocated_delta_mib": (
            round((torch.cuda.max_memory_allocated(dev) - cuda_before) / 2**20, 1) if dev.type == "cuda" else None
        ),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "faiss": faiss_version,
        "faiss_gpu": faiss_gpu,
    }
    return result


def configurations(sizes: list[int], classes: list[int], backends: list[str], one_class_max_size: int) -> list[tuple[int, int, str]]:
    out = []
    for size in sizes:
        for c in classes:
            if c == 1 and size > one_class_max_size:
                continue  # the 1-class search is `classes` times the work: only where cheap
            for backend in backends:
                out.append((size, c, backend))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="private = synthetic count")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--backends", nargs="+", default=["faiss", "torch"], choices=["faiss", "torch", "auto"])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1], help="class counts to run (votes within class)")
    parser.add_argument("--one-class-max-size", type=int, default=10_000,
                        help="run the 1-class variant only for sizes up to this (it is 10x the 10-class work)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (faiss uses its GPU index when faiss-gpu is installed)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (default: 3 up to 10,000, else 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/results.jsonl")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--votes-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        (size,), (classes,), (backend,) = args.sizes, args.classes, args.backends
        print(json.dumps(worker(size=size, dim=args.dim, classes=classes, backend=backend, device=args.device,
                                repeats=args.repeats or 1, seed=args.seed, votes_out=args.votes_out)), flush=True)
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        votes: dict[tuple[int, int, str], str] = {}
        for size, classes, backend in configurations(args.sizes, args.classes, args.backends, args.one_class_max_size):
            repeats = args.repeats or (3 if size <= 10_000 else 1)
            out_path = os.path.join(tmp, f"votes_{size}_{classes}_{backend}.npy")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--sizes", str(size), "--dim", str(args.dim),
                   "--classes", str(classes), "--backends", backend, "--device", args.device, "--repeats", str(repeats),
                   "--seed", str(args.seed), "--votes-out", out_path]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"voting benchmark failed for size={size} classes={classes} backend={backend}")
            result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            votes[(size, classes, backend)] = out_path
            other = [b for (s, c, b) in votes if (s, c) == (size, classes) and b != backend]
            if other:
                import numpy as np

                a, b = np.load(out_path), np.load(votes[(size, classes, other[0])])
                result["votes_agree_with_" + other[0]] = round(float((a == b).mean()), 6)
            results.append(result)
            print(json.dumps(result), flush=True)
    if not args.no_append:
        with open(HERE / "results.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    print("\n| private x synthetic x dim | classes | backend | device | seconds | GFLOP/s | peak RSS delta MiB | CUDA peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['private']:,} x {r['synthetic']:,} x {r['dim']} | {r['classes']} | {r['backend']} | {r['device']} | "
              f"{r['seconds']} | {r['gflop_per_s']} | {r['peak_rss_delta_mib']} | {r['cuda_peak_allocated_delta_mib']} |")


if __name__ == "__main__":
    main()
