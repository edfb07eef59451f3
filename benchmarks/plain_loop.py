"""Lightning's overhead: the PrivateEvolution module under ``Trainer.fit`` against a plain loop doing the same work.

    python benchmarks/plain_loop.py --num-per-class 1000 --lookahead 8 --iterations 3 [--reuse-lookahead]

One process runs, alternately (a, b, b, a, a, b, ...):

(a) ``PrivateEvolution`` through ``lightning.pytorch.Trainer.fit`` (no logger, no
    checkpointing, no progress bar, fixed noise multiplier) on MNIST (4,000 private) with
    ``DrawText(image_size=28)`` and ``PixelEmbedding``;
(b) the same engine stages (:class:`pe_lightning.engine.PEEngine`) driven by the plain loop
    :func:`pe_lightning.engine.run_loop`, no Lightning: the same code, batching and random
    streams, so the difference is what Lightning and the module's hooks add.

Both start from the same set-up (private embeddings, RANDOM population), which is not
timed. Seconds per iteration: (a) wall time between the starts of consecutive epochs (the
last one ends at ``on_train_end``, before the final population is written), so it includes
everything Lightning does around the module's hooks; (b) wall time of each loop iteration.
Overhead = (a - b) / b, from wall time and from process CPU time (``time.process_time``;
``--threads 1`` keeps idle OpenMP workers from spinning). On a shared VM the API calls alone
vary by about 10 % between runs, which swamps a few percent of overhead, so the script also
reports the time *outside* the shared stages (API calls, embedding, search): (a) epoch wall
time minus the module's ``time/api_s + time/embedding_s + time/voting_s``, (b) loop wall
time minus the loop's own stage timers; ``overhead_outside_stages_pct`` is their difference
over (b)'s iteration time. The module's ``time/iteration_s - (api + embedding + voting)`` is
reported too (``module_other_pct``).
The two final populations are compared (same seed: they should be identical).

Prints one JSON line and appends it to ``benchmarks/results.jsonl`` (``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import lightning.pytorch as pl  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pe_lightning import DrawText, MNISTDataModule, PixelEmbedding, PrivateEvolution  # noqa: E402
from pe_lightning.engine import EngineSettings, PEEngine, ProcessGroupCollective, run_loop  # noqa: E402
from pe_lightning.engine.scratch import ScratchSpace  # noqa: E402
from pe_lightning.noise import NoiseKey  # noqa: E402
from pe_lightning.voting import assign_votes  # noqa: E402

HERE = Path(__file__).resolve().parent
STAGES = ("api", "embedding", "voting")


# --------------------------------------------------------------------------- (a) Lightning
class _EpochClock(pl.Callback):
    """Wall-clock epoch boundaries and the module's ``time/*`` metrics of each iteration."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.cpu_starts: list[float] = []
        self.end: float | None = None
        self.cpu_end: float | None = None
        self.metrics: list[dict[str, float]] = []
        self.threads = 0

    def _collect(self, trainer: pl.Trainer) -> None:
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("time/", "pe/"))}
        self.metrics.append(m)

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # callbacks run before the module's hook
        self.starts.append(time.perf_counter())
        self.cpu_starts.append(time.process_time())
        self.threads = torch.get_num_threads()
        if trainer.current_epoch > 0:
            self._collect(trainer)  # the previous iteration's metrics, published at its end

    def on_train_end(self, trainer, pl_module) -> None:  # before the module writes the final population
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()
        self._collect(trainer)


def run_lightning(args, tmp: str) -> dict:
    kwargs = dict(
        api=DrawText(image_size=28), embedding=PixelEmbedding(), iterations=args.iterations,
        num_samples_per_class=args.num_per_class, variation_degrees=args.degree, lookahead_degree=args.lookahead,
        threshold=args.threshold, noise_multiplier=args.noise_multiplier, search_backend=args.backend, seed=args.seed,
        noise="seeded",  # both sides draw the same (public, benchmark-only) noise, so their populations can be compared
        api_batch_size=args.api_batch_size, embedding_batch_size=args.embedding_batch_size, output_dir=tmp,
        save_png=False,
    )
    params = inspect.signature(PrivateEvolution.__init__).parameters
    if "reuse_lookahead" in params:
        kwargs["reuse_lookahead"] = args.reuse_lookahead
    elif args.reuse_lookahead:
        raise SystemExit("--reuse-lookahead: this PrivateEvolution has no reuse_lookahead argument")
    if "cache_private_embeddings" in params:
        kwargs["cache_private_embeddings"] = False  # the plain loop embeds them too (set-up, not timed)
    model = PrivateEvolution(**kwargs)
    clock = _EpochClock()
    trainer = pl.Trainer(
        max_epochs=args.iterations, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=MNISTDataModule())
    total = time.perf_counter() - start
    bounds = [*clock.starts, clock.end]
    per_iter = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    cpu_bounds = [*clock.cpu_starts, clock.cpu_end]
    metrics = clock.metrics
    if [m.get("pe/iteration") for m in metrics] != [float(t) for t in range(1, args.iterations + 1)]:
        raise RuntimeError(f"could not read the module's per-iteration metrics: {[m.get('pe/iteration') for m in metrics]}")
    return {
        "iteration_s": per_iter,
        "iteration_cpu_s": [b - a for a, b in zip(cpu_bounds[:-1], cpu_bounds[1:])],
        "module_metrics": metrics,
        "setup_s": clock.starts[0] - start,
        "fit_total_s": total,
        "images": np.asarray(model.population.images).copy(),
        "threads_inside_fit": clock.threads,
    }


# --------------------------------------------------------------------------- (b) plain loop
def run_plain(args) -> dict:
    """The same PE iterations as the module: the engine's stages in :func:`pe_lightning.engine.run_loop`, no Trainer."""
    seed, k, bs = args.seed, args.lookahead, args.api_batch_size
    api, embedding = DrawText(image_size=28), PixelEmbedding()
    setup_start = time.perf_counter()
    dm = MNISTDataModule()  # used as a data container only: load + split, no Trainer
    dm.setup("fit")
    class_names = list(dm.class_names)
    settings = EngineSettings(
        iterations=args.iterations, variation_degrees=(args.degree,) * args.iterations, lookahead_degree=k,
        threshold=args.threshold, search_backend=args.backend, seed=seed, api_batch_size=bs,
        embedding_batch_size=args.embedding_batch_size, reuse_lookahead=args.reuse_lookahead,
    )
    engine = PEEngine(settings=settings, api=api, embedding=embedding)
    engine.prepare(
        class_names=class_names, sizes_per_iteration=[[args.num_per_class] * len(class_names)] * (args.iterations + 1),
        private_images=dm.private_images, private_labels=dm.private_labels,
        scratch=ScratchSpace(directory=tempfile.gettempdir(), limit_bytes=None), device="cpu",
        collective=ProcessGroupCollective(),
    )
    engine.take_timings()
    setup_s = time.perf_counter() - setup_start

    per_iter, per_iter_cpu, stages, fresh_renders = [], [], [], []
    clock = [time.perf_counter(), time.process_time()]

    class IterationClock:  # a PopulationHooks: run_loop calls it after each iteration, its metrics already logged
        evaluates_saved_runs = False

        def on_stage(self, trainer, pl_module, *, stage, done, total) -> None:
            pass

        def on_population(self, trainer, pl_module, *, population, iteration) -> None:
            per_iter.append(time.perf_counter() - clock[0])
            per_iter_cpu.append(time.process_time() - clock[1])
            metrics = pl_module.metrics[iteration]
            stages.append({s: metrics.get(f"time/{s}_s", 0.0) for s in STAGES})
            n = len(population)
            fresh_renders.append(n * k + round(n * (1 - metrics["pe/reused_lookahead_fraction"])))
            clock[:] = [time.perf_counter(), time.process_time()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        population = run_loop(engine, noise_multiplier=args.noise_multiplier, key=NoiseKey.from_seed(seed),
                              vote_batch_size=len(dm.private_images), hooks=[IterationClock()])
    images = np.asarray(population.images).copy()
    engine.close()
    return {"iteration_s": per_iter, "iteration_cpu_s": per_iter_cpu, "stages": stages, "setup_s": setup_s, "images": images, "renders": fresh_renders}


# --------------------------------------------------------------------------- driver
def _mean(values) -> float:
    return float(statistics.fmean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-per-class", type=int, default=1000, help="synthetic samples per class (10 classes)")
    parser.add_argument("--lookahead", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each of (a) and (b), order a,b,b,a,a,b,...")
    parser.add_argument("--reuse-lookahead", action="store_true", help="children from the stored lookahead variations")
    parser.add_argument("--degree", type=float, default=0.4, help="variation degree of every iteration")
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--noise-multiplier", type=float, default=5.0)
    parser.add_argument("--backend", default="faiss", choices=["faiss", "torch"])
    parser.add_argument("--api-batch-size", type=int, default=4096)
    parser.add_argument("--embedding-batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/results.jsonl")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    runs: dict[str, list[dict]] = {"lightning": [], "plain": []}
    order = []
    for rep in range(args.repeats):
        order += ["lightning", "plain"] if rep % 2 == 0 else ["plain", "lightning"]
    # The process's first search pays a one-off library warm-up (thread pools, faiss): pay it
    # here, so that it does not land in whichever of (a) and (b) runs first.
    g = torch.Generator().manual_seed(0)
    assign_votes(private_embeddings=torch.randn(256, 64, generator=g), private_labels=torch.zeros(256, dtype=torch.int64),
                 synthetic_embeddings=torch.randn(256, 64, generator=g), synthetic_labels=torch.zeros(256, dtype=torch.int64),
                 k=1, backend=args.backend)
    load_start = os.getloadavg()[0]
    for name in order:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_lightning(args, tmp) if name == "lightning" else run_plain(args)
        runs[name].append(result)
        print(f"# {name}: s/iteration {[round(x, 3) for x in result['iteration_s']]}, "
              f"CPU s/iteration {[round(x, 3) for x in result['iteration_cpu_s']]}", flush=True)

    same_population = all(np.array_equal(a["images"], b["images"]) for a in runs["lightning"] for b in runs["plain"])
    a_iters = [x for r in runs["lightning"] for x in r["iteration_s"]]
    b_iters = [x for r in runs["plain"] for x in r["iteration_s"]]
    a_s, b_s = _mean(a_iters), _mean(b_iters)
    a_cpu = _mean(x for r in runs["lightning"] for x in r["iteration_cpu_s"])
    b_cpu = _mean(x for r in runs["plain"] for x in r["iteration_cpu_s"])
    module = [m for r in runs["lightning"] for m in r["module_metrics"]]
    mod = {key: _mean(m.get(f"time/{key}_s", 0.0) for m in module) for key in ("iteration", *STAGES)}
    mod_other = mod["iteration"] - sum(mod[s] for s in STAGES)
    plain_stage = {s: _mean(st[s] for r in runs["plain"] for st in r["stages"]) for s in STAGES}
    # The API calls, embedding and search are the same work in (a) and (b); on a shared VM
    # their times alone vary by +-10 % from run to run. Time *outside* them isolates what
    # Lightning and the module add: (a) epoch-to-epoch wall time minus the module's stage
    # times, (b) loop wall time minus the loop's stage times.
    a_outside = a_s - sum(mod[s] for s in STAGES)
    b_outside = b_s - sum(plain_stage[s] for s in STAGES)
    n_syn = 10 * args.num_per_class
    result = {
        "benchmark": "plain_loop",
        "workload": (
            f"MNIST 4,000 private, DrawText(28), N_syn={n_syn}, lookahead={args.lookahead}, pixel embedding, "
            f"{args.backend}, T={args.iterations}" + (", reuse_lookahead" if args.reuse_lookahead else "")
        ),
        "order": order,
        "lightning_s_per_iteration": round(a_s, 4),
        "plain_s_per_iteration": round(b_s, 4),
        "overhead_pct": round(100 * (a_s - b_s) / b_s, 2),
        "lightning_outside_stages_s": round(a_outside, 4),
        "plain_outside_stages_s": round(b_outside, 4),
        "overhead_outside_stages_pct": round(100 * (a_outside - b_outside) / b_s, 2),
        "lightning_s_per_iteration_median": round(statistics.median(a_iters), 4),
        "plain_s_per_iteration_median": round(statistics.median(b_iters), 4),
        "overhead_pct_median": round(100 * (statistics.median(a_iters) - statistics.median(b_iters)) / statistics.median(b_iters), 2),
        "lightning_cpu_s_per_iteration": round(a_cpu, 4),
        "plain_cpu_s_per_iteration": round(b_cpu, 4),
        "overhead_cpu_pct": round(100 * (a_cpu - b_cpu) / b_cpu, 2),
        "lightning_runs_s": [[round(x, 4) for x in r["iteration_s"]] for r in runs["lightning"]],
        "plain_runs_s": [[round(x, 4) for x in r["iteration_s"]] for r in runs["plain"]],
        "module_iteration_s": round(mod["iteration"], 4),
        "module_api_s": round(mod["api"], 4),
        "module_embedding_s": round(mod["embedding"], 4),
        "module_voting_s": round(mod["voting"], 4),
        "module_other_s": round(mod_other, 4),
        "module_other_pct": round(100 * mod_other / mod["iteration"], 2),
        "module_metrics_mean": {k: round(_mean(m.get(k, 0.0) for m in module), 4) for k in sorted({k for m in module for k in m})},
        "plain_api_s": round(plain_stage["api"], 4),
        "plain_embedding_s": round(plain_stage["embedding"], 4),
        "plain_voting_s": round(plain_stage["voting"], 4),
        "renders_per_iteration": round(_mean(x for r in runs["plain"] for x in r["renders"])),
        "same_final_population": bool(same_population),
        "setup_s": {"lightning": round(_mean(r["setup_s"] for r in runs["lightning"]), 2),
                    "plain": round(_mean(r["setup_s"] for r in runs["plain"]), 2)},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
        "threads_inside_fit": runs["lightning"][0]["threads_inside_fit"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result), flush=True)
    if not args.no_append:
        with open(HERE / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
