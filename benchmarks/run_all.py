"""`make bench`: runs each benchmark in its own process (so peak RSS is per run) and writes benchmarks/results.jsonl.

    python benchmarks/run_all.py            # the full set (several minutes on 2 cores)
    python benchmarks/run_all.py --quick    # small sizes, a smoke test of every script; prints only

Every script prints one JSON line per measurement; all of them are collected, in order, into
``benchmarks/results.jsonl`` (replaced; ``--quick`` writes nothing unless ``--output`` is given).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["startup.py", "--repeats", "3"],  # process start to PE iteration 0 of `make demo` (the real CLI)
    ["api_throughput.py", "--n", "18000"],  # DrawText images/s (RANDOM, VARIATION)
    ["served_throughput.py", "--n", "8192", "--batch", "1024", "--servers", "2"],  # in process vs 1 and 2 `serve` servers
    ["embedding_throughput.py", "--n", "80000"],  # pixel and HOG embeddings, images/s (a lookahead of 8 x 10,000)
    ["iteration.py", "--num-per-class", "200", "--lookahead", "8"],   # the reference implementation's workload (2,000 x 9 renders)
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8"],  # N_syn = 10,000
    ["iteration.py", "--num-per-class", "200", "--lookahead", "8", "--backend", "torch"],
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8", "--reuse-lookahead"],  # children from lookahead variations
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8", "--reuse-lookahead", "--embedding", "hog"],  # the plan's HOG votes
    # HOG on one torch thread, its lookahead embedded beside the API on the spare core, and in turn
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8", "--reuse-lookahead", "--embedding", "hog", "--threads", "1"],
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8", "--reuse-lookahead", "--embedding", "hog", "--threads", "1",
     "--overlap", "false"],
    ["iteration.py", "--num-per-class", "1000", "--lookahead", "8", "--snapshot"],  # + snapshot I/O every iteration
    # Peak memory at N_syn = 50,000, 32x32 (1 and 3 channels), 2 iterations.
    ["memory.py", "--channels", "1"],
    ["memory.py", "--channels", "3"],
    # Nearest-neighbour voting alone, 10k and 50k private x synthetic x 2048-d, both backends.
    ["voting.py", "--sizes", "10000", "50000", "--dim", "2048", "--backends", "faiss", "torch", "--no-append"],
    # Lightning's overhead against a plain loop doing the same work (N_syn = 10,000).
    ["plain_loop.py", "--num-per-class", "1000", "--lookahead", "8", "--iterations", "3", "--repeats", "3", "--no-append"],
    ["plain_loop.py", "--num-per-class", "1000", "--lookahead", "8", "--iterations", "3", "--repeats", "3", "--reuse-lookahead", "--no-append"],
]
QUICK_RUNS = [
    ["api_throughput.py", "--n", "2000", "--repeats", "1"],
    ["served_throughput.py", "--n", "256", "--batch", "128", "--servers", "1", "--repeats", "1"],
    ["embedding_throughput.py", "--n", "2000", "--repeats", "1"],
    ["iteration.py", "--num-per-class", "50", "--lookahead", "2", "--iterations", "2"],
    ["iteration.py", "--num-per-class", "50", "--lookahead", "2", "--iterations", "2", "--embedding", "hog", "--overlap", "true"],
    ["memory.py", "--num-per-class", "200", "--iterations", "1", "--lookahead", "2"],
    ["voting.py", "--sizes", "2000", "--dim", "256", "--classes", "10", "--backends", "faiss", "torch", "--no-append"],
    ["plain_loop.py", "--num-per-class", "100", "--lookahead", "2", "--iterations", "2", "--repeats", "1", "--no-append"],
    ["plain_loop.py", "--num-per-class", "100", "--lookahead", "2", "--iterations", "2", "--repeats", "1",
     "--reuse-lookahead", "--no-append"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test); writes no results file by default")
    parser.add_argument("--output", type=Path, default=None, help="results file (default: benchmarks/results.jsonl; none with --quick)")
    args = parser.parse_args()
    output = args.output if args.output is not None else (None if args.quick else HERE / "results.jsonl")

    results = []
    for run in QUICK_RUNS if args.quick else RUNS:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, str(HERE / run[0]), *run[1:]], capture_output=True, text=True)
        sys.stderr.write(f"# {' '.join(run)}: {time.perf_counter() - start:.0f} s\n")
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"benchmark failed: {' '.join(run)}")
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                results.append(json.loads(line))
                print(line, flush=True)
    if output is not None:
        output.write_text("".join(json.dumps(r) + "\n" for r in results))
    print_tables(results)


def print_tables(results: list[dict]) -> None:
    """Markdown tables of the results (docs/performance.md is written from them)."""
    iterations = [r for r in results if "iteration_s" in r]
    throughput = [r for r in results if r.get("benchmark") == "api_throughput"]
    embeddings = [r for r in results if r.get("benchmark") == "embedding_throughput"]
    memory = [r for r in results if "benchmark" not in r and "iteration_s" not in r and "fit_total_s" in r]
    voting = [r for r in results if r.get("benchmark") == "voting"]
    plain = [r for r in results if r.get("benchmark") == "plain_loop"]
    startup = [r for r in results if r.get("benchmark") == "startup"]
    served = [r for r in results if r.get("benchmark") == "served_throughput"]
    if startup:
        print("\n| start-up (median) | imports + CLI | + trainer, W&B, data | iteration 0 starts | iteration 0 exists | "
              "iterations | total |\n|---|---|---|---|---|---|---|")
        for r in startup:
            print(f"| {r['workload']} ({r['repeats']} runs) | {r['to_callbacks_s']} s | {r['to_fit_setup_s']} s | "
                  f"**{r['to_iteration_0_start_s']} s** | {r['to_iteration_0_s']} s | {r['pe_s']} s | {r['total_s']} s |")
    if iterations:
        print("\n| workload | s / iteration | API | embedding | voting | other | peak RSS GiB |\n|---|---|---|---|---|---|---|")
        for r in iterations:
            print(f"| {r['workload']} | {r['iteration_s']} | {r['api_s']} | {r['embedding_s']} | {r['voting_s']} | {r['other_s']} | {r['peak_rss_gib']} |")
    if throughput:
        print("\n| API call | images | seconds | images / s |\n|---|---|---|---|")
        for r in throughput:
            print(f"| {r['api']} {r['call']} | {r['images']:,} | {r['seconds']} | {r['images_per_s']:,} |")
    if served:
        print("\n| DrawText served | servers | request size | call | images / s | HTTP overhead µs / image |\n|---|---|---|---|---|---|")
        for r in served:
            print(f"| {r['mode']} | {r['servers']} | {r.get('request_size') or '-'} | {r['call']} | {r['images_per_s']:,} | "
                  f"{r.get('http_overhead_us_per_image', '-')} |")
    if embeddings:
        print("\n| embedding | dim | images | seconds | CPU seconds | images / s |\n|---|---|---|---|---|---|")
        for r in embeddings:
            print(f"| {r['embedding']} | {r['dim']} | {r['images']:,} | {r['seconds']} | {r.get('cpu_seconds', '')} | "
                  f"{r['images_per_s']:,} |")
    if memory:
        print("\n| memory workload | fit s | peak RSS GiB |\n|---|---|---|")
        for r in memory:
            print(f"| {r['workload']} | {r['fit_total_s']} | {r['peak_rss_gib']} |")
    if voting:
        print("\n| voting: private x synthetic x dim | classes | backend | device | seconds | peak RSS delta MiB |\n|---|---|---|---|---|---|")
        for r in voting:
            print(f"| {r['private']:,} x {r['synthetic']:,} x {r['dim']} | {r['classes']} | {r['backend']} | {r['device']} | "
                  f"{r['seconds']} | {r['peak_rss_delta_mib']} |")
    if plain:
        print("\n| plain-loop comparison | Lightning s / it | plain loop s / it | wall-time overhead | outside API/embedding/search:"
              " Lightning / plain s (overhead) | module other (of iteration) | same population |\n|---|---|---|---|---|---|---|")
        for r in plain:
            print(f"| {r['workload']} | {r['lightning_s_per_iteration']} | {r['plain_s_per_iteration']} | {r['overhead_pct']} % | "
                  f"{r['lightning_outside_stages_s']} / {r['plain_outside_stages_s']} ({r['overhead_outside_stages_pct']} %) | "
                  f"{r['module_other_pct']} % | {r['same_final_population']} |")


if __name__ == "__main__":
    main()
