"""Time one PE iteration on the MNIST + DrawText demo workload, broken down by stage, and peak RSS.

    python benchmarks/iteration.py --num-per-class 200 --lookahead 8 --iterations 3
    python benchmarks/iteration.py --num-per-class 1000 --lookahead 8 --iterations 2 --reuse-lookahead --embedding hog --threads 1 --overlap false

Prints one JSON line per run. Iteration time excludes the one-off set-up (data load, private
embedding, RANDOM population); the breakdown comes from the module's ``time/*`` metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from pe_lightning import DrawText, MNISTDataModule, PixelEmbedding, PrivateEvolution  # noqa: E402
from pe_lightning.embeddings import HOGEmbedding  # noqa: E402
from pe_lightning.callbacks import PopulationSnapshot  # noqa: E402


def mean_iteration_metrics(folder: str | os.PathLike) -> dict[str, float]:
    """Mean of each metric over iterations 1.. in the ``metrics.csv`` a ``CSVLogger`` wrote under ``folder``.

    Iteration 0 (the RANDOM population: set-up) is left out; a metric missing from an
    iteration's row is left out of that metric's mean.
    """
    with open(next(Path(folder).rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("pe/iteration") and float(r["pe/iteration"]) >= 1]
    keys = {k for r in rows for k, v in r.items() if v}
    return {k: sum(float(r[k]) for r in rows if r.get(k)) / sum(1 for r in rows if r.get(k)) for k in keys}


#: ``--embedding`` choices: the pixel embedding and the planner's HOG.
EMBEDDINGS = {"pixel": PixelEmbedding, "hog": HOGEmbedding}


def run(*, num_per_class: int, lookahead: int, iterations: int, backend: str, reuse: bool = False, snapshot: bool = False,
        seed: int = 0, embedding: str = "pixel", overlap: bool | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as private:
        model = PrivateEvolution(
            api=DrawText(), embedding=EMBEDDINGS[embedding](), iterations=iterations, num_samples_per_class=num_per_class,
            variation_degrees=0.4, lookahead_degree=lookahead, threshold=1.0, noise_multiplier=5.0,
            search_backend=backend, seed=seed, output_dir=tmp, save_png=False, reuse_lookahead=reuse,
            overlap_lookahead_embedding=overlap,
            private_state_dir=private,  # keys and the embedding cache: outside the output root
        )
        trainer = pl.Trainer(
            callbacks=[PopulationSnapshot(every_n_iterations=1)] if snapshot else [],
            max_epochs=iterations, accelerator="cpu", devices=1, logger=CSVLogger(tmp, name="bench"),
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
        )
        start = time.perf_counter()
        trainer.fit(model, datamodule=MNISTDataModule())
        total = time.perf_counter() - start
        metrics = mean_iteration_metrics(tmp)

    def mean(key: str) -> float:
        return metrics.get(key, 0.0)

    it = mean("time/iteration_s")
    api, emb, vote = mean("time/api_s"), mean("time/embedding_s"), mean("time/voting_s")
    selection, callbacks, gather = mean("time/selection_s"), mean("time/callbacks_s"), mean("time/gather_s")
    overhead = it - api - emb - vote
    return {
        "workload": (
            f"MNIST 4,000 private, DrawText, N_syn={10 * num_per_class}, lookahead={lookahead}, {embedding} embedding, {backend}"
            + (", reuse_lookahead" if reuse else "") + (", PopulationSnapshot every iteration" if snapshot else "")
            + (", lookahead embedded beside the API" if mean("time/embedding_overlapped_s") > 0 else "")
            + f", {torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() > 1 else ''}"
        ),
        "renders_per_iteration": round(10 * num_per_class * (lookahead + 1) - 10 * num_per_class * mean("pe/reused_lookahead_fraction")),
        "iteration_s": round(it, 3),
        "api_s": round(api, 3),
        "api_lookahead_s": round(mean("time/api_lookahead_s"), 3),
        "api_variation_s": round(mean("time/api_variation_s"), 3),
        "embedding_s": round(emb, 3),
        "embedding_overlapped_s": round(mean("time/embedding_overlapped_s"), 3),
        "voting_s": round(vote, 3),
        "selection_s": round(selection, 4),
        "snapshot_and_callbacks_s": round(callbacks, 4),
        "other_s": round(overhead, 3),
        "overhead_pct": round(100 * overhead / it, 2),
        "fit_total_s": round(total, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-per-class", type=int, default=200)
    parser.add_argument("--lookahead", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--backend", default="faiss", choices=["faiss", "torch"])
    parser.add_argument("--reuse-lookahead", action="store_true", help="build children from the lookahead variations")
    parser.add_argument("--snapshot", action="store_true", help="write a PopulationSnapshot every iteration (snapshot I/O)")
    parser.add_argument("--embedding", default="pixel", choices=sorted(EMBEDDINGS), help="the voting embedding")
    parser.add_argument("--overlap", choices=["auto", "true", "false"], default="auto",
                        help="overlap_lookahead_embedding: null (auto: when a core is spare), true or false")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for this run (default: torch's)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        print(json.dumps(run(num_per_class=args.num_per_class, lookahead=args.lookahead, iterations=args.iterations,
                             backend=args.backend, reuse=args.reuse_lookahead, snapshot=args.snapshot,
                             embedding=args.embedding, overlap={"auto": None, "true": True, "false": False}[args.overlap])))
    finally:
        torch.set_num_threads(threads)  # run_all's quick test runs this in its own process


if __name__ == "__main__":
    main()
