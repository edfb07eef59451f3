"""Lightning's overhead: the PrivateEvolution module under ``Trainer.fit`` against a plain loop doing the same work.

    python benchmarks/plain_loop.py --num-per-class 1000 --lookahead 8 --iterations 3 [--reuse-lookahead]

One process runs, alternately (a, b, b, a, a, b, ...):

(a) ``PrivateEvolution`` through ``lightning.pytorch.Trainer.fit`` (no logger, no
    checkpointing, no progress bar, fixed noise multiplier) on MNIST (4,000 private) with
    ``DrawText(image_size=28)`` and ``PixelEmbedding``;
(b) a plain Python loop doing exactly the same work with the same library functions and
    the same batching and random streams (DrawText random/variation in chunks of
    ``api_batch_size``, ``PixelEmbedding.embed``, ``pe_lightning.voting``), no Lightning.

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
from pe_lightning.apis.base import APIOutput  # noqa: E402
from pe_lightning.distributed import chunk_slices  # noqa: E402
from pe_lightning.lookahead_store import LookaheadStore  # noqa: E402
from pe_lightning.seeding import make_generator  # noqa: E402
from pe_lightning.storage import ScratchSpace  # noqa: E402
from pe_lightning.noise import NoiseKey  # noqa: E402
from pe_lightning.release import release_votes  # noqa: E402
from pe_lightning.voting import assign_votes, select_parents  # noqa: E402

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
def _variation(api, images, conditions, labels, sl, degree, generator):
    return api.variation(images=np.ascontiguousarray(images[sl]), conditions={k: v[sl] for k, v in conditions.items()},
                         labels=labels[sl], degree=degree, generator=generator)


def run_plain(args) -> dict:
    """The same PE iterations as the module, written as a plain loop over library functions."""
    seed, k, bs = args.seed, args.lookahead, args.api_batch_size
    api, embedding = DrawText(image_size=28), PixelEmbedding()
    setup_start = time.perf_counter()
    dm = MNISTDataModule()  # used as a data container only: load + split, no Trainer
    dm.setup("fit")
    class_names = list(dm.class_names)
    api.setup(device="cpu", class_names=class_names)
    embedding.setup(device="cpu")
    private = embedding.embed(dm.private_images, batch_size=args.embedding_batch_size).float()
    private_labels = torch.from_numpy(dm.private_labels)
    num_per_class = [args.num_per_class] * len(class_names)
    labels = np.repeat(np.arange(len(class_names), dtype=np.int64), num_per_class)
    outs = [api.random(labels=labels[sl], generator=make_generator(seed, 0, "random", i))
            for i, sl in enumerate(chunk_slices(len(labels), bs))]
    images = np.concatenate([o.images for o in outs])
    conditions = {key: np.concatenate([o.conditions[key] for o in outs]) for key in outs[0].conditions}
    setup_s = time.perf_counter() - setup_start

    per_iter, per_iter_cpu, stages, fresh_renders = [], [], [], []
    synthetic = None  # (N, D) embedding buffer, reused every iteration
    scratch = ScratchSpace(directory=tempfile.gettempdir(), limit_bytes=None)  # never spills
    for t in range(1, args.iterations + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        timing = dict.fromkeys(STAGES, 0.0)
        n = len(labels)
        degree = args.degree
        # Lookahead: k variations of every sample, embedded and averaged (chunk by chunk, as the module).
        keep = args.reuse_lookahead and k > 0
        store = LookaheadStore(scratch=scratch, k=k, n=n, chunk_size=bs, image_shape=images.shape[1:]) if keep else None
        for i, sl in enumerate(chunk_slices(n, bs)):
            s0 = time.perf_counter()
            if k == 0:
                emb = embedding.embed(np.ascontiguousarray(images[sl]), batch_size=args.embedding_batch_size).float()
            else:
                emb = None
                for r in range(k):
                    s0 = time.perf_counter()
                    out = _variation(api, images, conditions, labels, sl, degree, make_generator(seed, t, "lookahead", r, i))
                    s1 = time.perf_counter()
                    timing["api"] += s1 - s0
                    e = embedding.embed(out.images, batch_size=args.embedding_batch_size).float()
                    emb = e if emb is None else emb.add_(e)
                    timing["embedding"] += time.perf_counter() - s1
                    if keep:
                        store.put(r, i, out)
                s0 = time.perf_counter()
                emb.div_(k)
            timing["embedding"] += time.perf_counter() - s0
            if synthetic is None or synthetic.shape != (n, emb.shape[1]):
                synthetic = torch.empty((n, emb.shape[1]))
            synthetic[sl] = emb
        # Voting, noise, threshold, selection.
        s0 = time.perf_counter()
        votes = assign_votes(private_embeddings=private, private_labels=private_labels, synthetic_embeddings=synthetic,
                             synthetic_labels=torch.from_numpy(labels), k=1, backend=args.backend)
        timing["voting"] += time.perf_counter() - s0
        weights = release_votes(votes, num_synthetic=n, noise_multiplier=args.noise_multiplier, threshold=args.threshold,
                                key=NoiseKey.from_seed(seed), iteration=t).weights
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parents = select_parents(weights=weights, labels=torch.from_numpy(labels), num_per_class=num_per_class,
                                     generator=make_generator(seed, t, "selection"), class_names=class_names).numpy()
        # Children: the m-th selection of parent j (slot order) takes its m-th stored lookahead
        # variation while m < k; fresh variations only for the extra selections.
        if keep:
            order = np.argsort(parents, kind="stable")
            occurrence = np.empty(n, np.int64)
            occurrence[order] = np.arange(n) - np.searchsorted(parents[order], parents[order], side="left")
            reuse = occurrence < k
        else:
            occurrence, reuse = np.zeros(n, np.int64), np.zeros(n, bool)
        new_images = np.empty_like(images)
        new_conditions = {key: np.empty_like(v) for key, v in conditions.items()}
        slots = np.flatnonzero(reuse)
        if len(slots):
            taken: APIOutput = store.take(occurrence[slots], parents[slots])
            new_images[slots] = taken.images
            for key in new_conditions:
                new_conditions[key][slots] = taken.conditions[key]
        fresh = np.flatnonzero(~reuse)
        if len(fresh):
            src = parents[fresh]
            sel_images, sel_labels = images[src], labels[src]
            sel_conditions = {key: v[src] for key, v in conditions.items()}
            s0 = time.perf_counter()
            for i, sl in enumerate(chunk_slices(len(fresh), bs)):
                out = _variation(api, sel_images, sel_conditions, sel_labels, sl, degree, make_generator(seed, t, "variation", 0, i))
                new_images[fresh[sl]] = out.images
                for key, v in out.conditions.items():
                    new_conditions[key][fresh[sl]] = v
            timing["api"] += time.perf_counter() - s0
        images, conditions, labels = new_images, new_conditions, labels[parents]
        per_iter.append(time.perf_counter() - start)
        per_iter_cpu.append(time.process_time() - cpu_start)
        stages.append(timing)
        fresh_renders.append(n * k + len(fresh))
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
