"""The privacy–utility results on the MNIST protocol of docs/benchmark.md, and the transfer suite.

    python benchmarks/results.py --out results/mnist            # full protocol (about an hour on 2 cores)
    python benchmarks/results.py --quick --out /tmp/r           # smoke run (tests use it)
    python benchmarks/results.py --suite transfer --out results/transfer --epsilons 1 10
    python benchmarks/results.py --config configs/mnist_drawtext_fitted.yaml --out results/fitted
    python benchmarks/results.py --merge /tmp/a /tmp/b --out results/transfer   # join parallel parts
    python benchmarks/results.py --suite transfer --no-baselines --pair-with results/transfer --out /tmp/t  # PE only, paired
    python benchmarks/results.py --collect /tmp/a /tmp/b --pair-with results/transfer/mnist --out results/x  # join runs.csv

An experiment script, not part of the installed library (run it from a checkout with the
package installed). Its default config is the shipped demo config, found with
:func:`pe_lightning.run_config.shipped_config` (the same file as ``configs/mnist_drawtext.yaml``).

``--suite transfer`` runs the same settings, unchanged, on every set of
:mod:`pe_lightning.data.transfer` (MNIST and its shifted variants, each with its own
held-out split) and writes one sub-folder per set plus ``transfer_summary.csv`` /
``.md`` and ``fd_per_iteration.png`` (pixel FD of every iteration, PE seed 0, per set).
The DP noise is ``seeded`` by default here (``--noise secret`` for a fresh key per run),
so that every number can be reproduced; a seeded run is private only while its seed is
secret.

For each setting it evaluates synthetic sets with the docs/benchmark.md protocol: the SmallCNN
trained from scratch on the synthetic set only (Adam 1e-3, batch 128, 30 epochs,
``torch.manual_seed(s)`` before building it, ``s`` in the classifier seeds), accuracy on
the 1,000 real held-out test digits, and the pixel-space Fréchet distance to them.

Settings: PE with DrawText at each epsilon (delta 1e-5) and without noise (``inf``), the
RANDOM API alone (iteration 0 of the same runs: no private information used), and the
real private training split (the non-private bound). PE hyperparameters come from
``configs/mnist_drawtext.yaml`` (the demo; ``--config`` for another), so the table measures
what ``make demo`` runs.

Writes ``runs.csv`` (one row per PE seed x classifier seed; PE rows also carry the last
iteration's vote diagnostics), ``summary.csv`` (mean ± std over PE seeds of the per-seed
means; 3 classifier seeds by default), ``paired.csv`` / ``paired.md`` (PE minus the RANDOM API
at the released size, paired by PE and classifier seed), ``results.png`` (accuracy and FD
against epsilon, baselines as horizontal lines), ``summary.md`` and synthetic grids for two
epsilons. ``--pair-with DIR`` adds ``paired_with.md``: PE minus another run's PE, seed by seed.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from pe_lightning.atomic import atomic_write
from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.callbacks.downstream import DownstreamEvaluation
from pe_lightning.callbacks.privacy import PrivacyAccountant
from pe_lightning.data.mnist import MNISTDataModule
from pe_lightning.data.transfer import VARIANTS, MNISTVariantDataModule
from pe_lightning.grid import class_grid, save_png
from pe_lightning.metrics.frechet import pixel_frechet_distance
from pe_lightning.population import Population
from pe_lightning.run_config import resolve_class, shipped_config

__all__ = ["run_results", "run_transfer_suite", "merge_transfer", "main"]

DEMO_CONFIG = shipped_config("mnist_drawtext.yaml")


class _Keep(PopulationCallback):
    """Keeps the RANDOM population (iteration 0) and the final one; with ``real``, the pixel FD of every iteration."""

    def __init__(self, real: np.ndarray | None = None) -> None:
        self.populations: dict[int, Population] = {}
        self.real = real
        self.fd_per_iteration: dict[int, float] = {}

    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        if iteration in (0, pl_module.run.iterations):
            self.populations[iteration] = population
        if self.real is not None:
            self.fd_per_iteration[iteration] = pixel_frechet_distance(np.asarray(population.images), self.real)


def _demo_model_args(config: Path) -> dict:
    return yaml.safe_load(config.read_text())["model"]["init_args"]


def _demo_model_class(config: Path) -> type:
    cls = resolve_class(yaml.safe_load(config.read_text())["model"]["class_path"])
    if cls is None:
        raise ValueError(f"{config}: model class_path cannot be imported")
    return cls


def _build_model(args: dict, *, seed: int, overrides: dict, model_class: type | None = None):
    from jsonargparse import ArgumentParser  # the same resolution LightningCLI applies

    from pe_lightning.evolution import PrivateEvolution

    init = {**args, **overrides, "seed": seed, "save_png": False}
    parser = ArgumentParser()
    parser.add_class_arguments(model_class or PrivateEvolution, "model")
    cfg = parser.parse_object({"model": init})
    return parser.instantiate_classes(cfg)["model"]


def _for_data(model_args: dict, model_class: type, *, epsilon: float, image_size: int) -> dict:
    """The config's model arguments for one run: the API renders at the data's image size, and a
    planned model plans for the run's epsilon (the accountant's)."""
    args = dict(model_args)
    api = dict(args.get("api") or {})
    if api:
        api["init_args"] = {**(api.get("init_args") or {}), "image_size": int(image_size)}
        args["api"] = api
    if hasattr(model_class, "planned_iterations"):
        args["epsilon"] = float(epsilon)
        args["delta"] = 1e-5
        args.pop("image_size", None)
    return args


def run_pe(*, epsilon: float, seed: int, datamodule: MNISTDataModule, out: Path, model_args: dict, overrides: dict,
           model_class: type | None = None, fd_per_iteration: dict | None = None,
           diagnostics: dict | None = None) -> dict[int, Population]:
    """One PE run; returns ``{0: random population, T: final population}``.

    With ``fd_per_iteration`` (a dict), the pixel FD to the data module's test split of
    every iteration's population is stored in it. With ``diagnostics`` (a dict), the last
    iteration's vote diagnostics (``diag/*``, :mod:`pe_lightning.engine.diagnostics`:
    functions of the noisy release only) and the run's ``T`` are stored in it.
    """
    import lightning.pytorch as pl

    from pe_lightning.evolution import PrivateEvolution

    model_class = model_class or PrivateEvolution
    datamodule.setup()
    args = _for_data(model_args, model_class, epsilon=epsilon, image_size=datamodule.image_shape[0])
    model = _build_model(args, seed=seed, overrides={**overrides, "output_dir": str(out)}, model_class=model_class)
    keep = _Keep(real=None if fd_per_iteration is None else datamodule.test_images)
    trainer = pl.Trainer(
        max_epochs=model.iterations, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out),
        callbacks=[PrivacyAccountant(epsilon=epsilon, delta=1e-5), keep],
    )
    trainer.fit(model, datamodule=datamodule)
    if diagnostics is not None:
        diagnostics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("diag/")})
        diagnostics["iterations"] = float(model.iterations)
    if fd_per_iteration is not None:
        fd_per_iteration.update(keep.fd_per_iteration)
    return keep.populations


#: The RANDOM API alone with as many images per class as PE releases (the first ones of iteration 0:
#: RANDOM samples are drawn independently, so these are a RANDOM draw of that size).
RANDOM_AT_RELEASED_SIZE = "random API alone, released size"


def _first_per_class(pop: Population, *, like: Population) -> Population:
    """The first ``n_c`` samples of each class ``c`` of ``pop``, ``n_c`` being ``like``'s class sizes."""
    sizes = np.bincount(like.labels, minlength=int(pop.labels.max()) + 1)
    keep = np.concatenate([np.flatnonzero(pop.labels == c)[:n] for c, n in enumerate(sizes)])
    return pop.take(keep)


def _evaluate(pop: Population, *, datamodule, clf_seeds: Sequence[int], epochs: int) -> list[float]:
    return [DownstreamEvaluation(max_epochs=epochs, val_fraction=0.0, seed=s).evaluate(pop, datamodule=datamodule)[0] for s in clf_seeds]


def _fmt(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=0):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def run_results(
    *,
    out: str | os.PathLike,
    epsilons: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 10.0, math.inf),
    pe_seeds: Sequence[int] = (0, 1, 2),
    clf_seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    num_private: int | None = None,
    overrides: dict | None = None,
    grid_epsilons: Sequence[float] = (1.0, 10.0),
    config: Path = DEMO_CONFIG,
    datamodule=None,
    fd_curves: dict | None = None,
    baselines: bool = True,
) -> list[dict]:
    """Run every setting and write the CSVs, plot, table and grids to ``out``. Returns the summary rows.

    ``datamodule``: the private / test data (default: the docs/benchmark.md MNIST split).
    ``fd_curves``: a dict that receives ``{epsilon: {iteration: FD}}`` of each epsilon's first PE seed.
    ``baselines``: also evaluate the real private set and the RANDOM API alone (iteration 0, and
    at the released size); ``False`` skips them (PE only, e.g. when rerunning a suite whose
    RANDOM population did not change). With them, ``paired.csv`` / ``paired.md`` hold the paired
    differences PE - RANDOM at the released size (same PE seed, same classifier seed).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dm = MNISTDataModule(num_private=num_private) if datamodule is None else datamodule
    dm.setup()
    model_args = _demo_model_args(config)
    model_class = _demo_model_class(config)
    overrides = dict(overrides or {})
    rows: list[dict] = []

    def record(setting: str, epsilon: float, pe_seed: int, pop: Population, seconds: float, diag: dict | None = None) -> None:
        fd = pixel_frechet_distance(pop.images, dm.test_images)
        for s in clf_seeds:  # a row as soon as each classifier is trained: a stopped run keeps what it measured
            (acc,) = _evaluate(pop, datamodule=dm, clf_seeds=[s], epochs=epochs)
            rows.append(dict(setting=setting, epsilon=epsilon, pe_seed=pe_seed, clf_seed=s, test_acc=acc, fd=fd, n=len(pop),
                             pe_seconds=seconds, **{k: (diag or {}).get(k, math.nan) for k in DIAGNOSTIC_COLUMNS}))
            _write_csv(out / "runs.csv", rows)

    if baselines:
        real = Population(images=dm.private_images, labels=dm.private_labels)
        record("real private training set", math.nan, 0, real, 0.0)
    for eps in epsilons:
        for pe_seed in pe_seeds:
            start = time.perf_counter()
            curve = {} if (fd_curves is not None and pe_seed == pe_seeds[0]) else None
            diag: dict = {}
            pops = run_pe(epsilon=eps, seed=pe_seed, datamodule=dm, out=out / "runs" / f"eps{eps:g}_seed{pe_seed}",
                          model_args=model_args, overrides=overrides, model_class=model_class, fd_per_iteration=curve,
                          diagnostics=diag)
            if curve is not None:
                fd_curves[eps] = dict(sorted(curve.items()))
            seconds = time.perf_counter() - start
            final = max(pops)
            if baselines and eps == epsilons[0]:  # iteration 0 is the same RANDOM draw for every epsilon of a seed
                record("random API alone", 0.0, pe_seed, pops[0], 0.0)
                if len(pops[0]) != len(pops[final]):  # a larger RANDOM population: also RANDOM at the released size
                    record(RANDOM_AT_RELEASED_SIZE, 0.0, pe_seed, _first_per_class(pops[0], like=pops[final]), 0.0)
            record("PE", eps, pe_seed, pops[final], seconds, diag)
            if pe_seed == pe_seeds[0] and eps in grid_epsilons:
                pop = pops[final]
                save_png(class_grid(pop.images, pop.labels, samples_per_class=10), out / f"grid_eps{eps:g}.png", upscale=2)
        summary = _write_summary(rows, out)  # after every epsilon, so a long run can be read while it goes
    return summary


#: Vote diagnostics of each PE run's last iteration recorded in ``runs.csv`` (functions of the noisy release only).
DIAGNOSTIC_COLUMNS = ("iterations", "diag/bins_above_threshold", "diag/unique_parents_min", "diag/unique_parents_mean",
                      "diag/top_parent_share_max", "diag/noise_only_survivors_per_class")


def _write_summary(rows: list[dict], out: Path) -> list[dict]:
    summary = _summarise(rows)
    _write_csv(out / "summary.csv", summary)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(_markdown(summary)))
    _plot(summary, out / "results.png")
    paired = paired_differences(rows, rows, against=RANDOM_AT_RELEASED_SIZE)
    if paired:
        _write_csv(out / "paired.csv", paired)
        atomic_write(out / "paired.md", lambda tmp: Path(tmp).write_text(_paired_markdown(paired, against=RANDOM_AT_RELEASED_SIZE)))
    return summary


def paired_differences(rows: list[dict], reference: list[dict], *, against: str | None = None) -> list[dict]:
    """PE accuracy minus a reference, paired by PE seed and classifier seed, per epsilon.

    ``against`` names a setting of ``reference`` (e.g. the RANDOM API at the released size,
    whose rows are recorded once per PE seed) that every epsilon's PE runs are paired with;
    ``None`` pairs PE with ``reference``'s PE at the same epsilon (another config's run:
    same seeds, so the same RANDOM draws and, with seeded noise, the same noise). For each
    PE seed the differences are averaged over the classifier seeds both have; the row
    reports the mean ± std (``ddof=0``) over PE seeds, in points, and on how many PE seeds PE
    was ahead.
    """
    def key(r: dict) -> tuple:
        return (int(r["pe_seed"]), int(r["clf_seed"]))

    out = []
    for eps in dict.fromkeys(float(r["epsilon"]) for r in rows if r["setting"] == "PE"):
        ours = {key(r): float(r["test_acc"]) for r in rows if r["setting"] == "PE" and float(r["epsilon"]) == eps}
        if against is None:
            ref = {key(r): float(r["test_acc"]) for r in reference if r["setting"] == "PE" and float(r["epsilon"]) == eps}
        else:
            ref = {key(r): float(r["test_acc"]) for r in reference if r["setting"] == against}
        seeds = sorted({p for p, c in ours if (p, c) in ref})
        if not seeds:
            continue
        diffs = [100 * np.mean([ours[(p, c)] - ref[(p, c)] for (q, c) in ours if q == p and (p, c) in ref]) for p in seeds]
        out.append(dict(epsilon=eps, against=against or "PE (reference run)", diff_mean=float(np.mean(diffs)),
                        diff_std=float(np.std(diffs)), wins=int(sum(d > 0 for d in diffs)), pe_seeds=len(seeds),
                        per_seed=" ".join(f"{d:+.1f}" for d in diffs)))
    return out


def _paired_markdown(paired: list[dict], *, against: str) -> str:
    lines = [f"| ε | PE − {against} (points, paired) | PE ahead on | per PE seed |", "|---|---|---|---|"]
    for p in paired:
        eps = "∞ (no noise)" if math.isinf(p["epsilon"]) else f"{p['epsilon']:g}"
        lines.append(f"| {eps} | {p['diff_mean']:+.1f} ± {p['diff_std']:.1f} | {p['wins']} of {p['pe_seeds']} | {p['per_seed']} |")
    return "\n".join(lines) + "\n"


def _read_runs(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect_runs(parts: Sequence[str | os.PathLike], out: str | os.PathLike, *, sets: Sequence[str] | None = None) -> list[dict]:
    """Join the ``runs.csv`` of runs split over processes (e.g. by ``--pe-seeds``, or stopped early) into ``out``.

    Rows are concatenated in order, a (setting, epsilon, PE seed, classifier seed) seen twice
    kept once (with seeded noise the same seed gives the same run), and the summaries
    (``summary.*``, ``paired.*``, ``results.png``) rewritten from them; nothing is rerun.
    With ``sets`` (transfer suite), each part holds one sub-folder per set and ``out`` gets
    one per set plus ``transfer_summary.csv`` / ``.md``. Returns the summary rows.
    """
    out = Path(out)
    numeric = {"epsilon": float, "pe_seed": int, "clf_seed": int, "test_acc": float, "fd": float, "n": int, "pe_seconds": float}
    table: list[dict] = []
    for name in sets or [None]:
        rows, seen = [], set()
        for part in map(Path, parts):
            path = part / name / "runs.csv" if name else part / "runs.csv"
            for r in _read_runs(path) if path.is_file() else []:
                r = {k: (numeric[k](v) if k in numeric else (v if k == "setting" else float(v))) for k, v in r.items()}
                key = (r["setting"], r["epsilon"] if not math.isnan(r["epsilon"]) else "nan", r["pe_seed"], r["clf_seed"])
                if key not in seen:
                    seen.add(key)
                    rows.append(r)
        if not rows:
            continue
        folder = out / name if name else out
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "runs.csv", rows)
        summary = _write_summary(rows, folder)
        table.extend({"set": name, **row} for row in summary) if name else table.extend(summary)
    if sets and table:
        _write_csv(out / "transfer_summary.csv", table)
        atomic_write(out / "transfer_summary.md", lambda tmp: Path(tmp).write_text(_transfer_markdown(table)))
    return table


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over PE seeds of the per-PE-seed means (docs/benchmark.md)."""
    keys = []
    for r in rows:
        k = (r["setting"], r["epsilon"])
        if k not in keys:
            keys.append(k)
    summary = []
    for setting, eps in keys:
        group = [r for r in rows if r["setting"] == setting and (r["epsilon"] == eps or (math.isnan(r["epsilon"]) and math.isnan(eps)))]
        seeds = sorted({r["pe_seed"] for r in group})
        acc = [np.mean([r["test_acc"] for r in group if r["pe_seed"] == s]) for s in seeds]
        fd = [np.mean([r["fd"] for r in group if r["pe_seed"] == s]) for s in seeds]
        summary.append(dict(
            setting=setting, epsilon=eps, acc_mean=100 * float(np.mean(acc)), acc_std=100 * float(np.std(acc)),
            fd_mean=float(np.mean(fd)), fd_std=float(np.std(fd)), pe_seeds=len(seeds),
            clf_seeds=len({r["clf_seed"] for r in group}), n=group[0]["n"],
            pe_seconds=float(np.mean([r["pe_seconds"] for r in group])),
        ))
    return sorted(summary, key=lambda r: (r["setting"] == "PE", r["epsilon"] if r["setting"] == "PE" else 0.0))


def _markdown(summary: list[dict]) -> str:
    lines = ["| set | ε | test accuracy % | FD (pixels) | N |", "|---|---|---|---|---|"]
    for s in summary:
        eps = "—" if math.isnan(s["epsilon"]) or s["setting"] != "PE" else ("∞ (no noise)" if math.isinf(s["epsilon"]) else f"{s['epsilon']:g}")
        lines.append(f"| {s['setting']} | {eps} | {s['acc_mean']:.1f} ± {s['acc_std']:.1f} | {s['fd_mean']:.2f} ± {s['fd_std']:.2f} | {s['n']} |")
    return "\n".join(lines) + "\n"


def _plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pe = [s for s in summary if s["setting"] == "PE"]
    finite = [s for s in pe if math.isfinite(s["epsilon"])]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "acc", "downstream test accuracy (%)"), (axes[1], "fd", "Fréchet distance (pixels)")):
        if finite:
            ax.errorbar([s["epsilon"] for s in finite], [s[f"{key}_mean"] for s in finite], yerr=[s[f"{key}_std"] for s in finite],
                        marker="o", capsize=3, label="PE (DrawText)")
        styles = {"random API alone": ("gray", "--"), RANDOM_AT_RELEASED_SIZE: ("black", "--"),
                  "real private training set": ("green", ":")}
        for s in summary:
            if s["setting"] in styles:
                color, ls = styles[s["setting"]]
                ax.axhline(s[f"{key}_mean"], color=color, linestyle=ls, label=s["setting"])
            if s["setting"] == "PE" and math.isinf(s["epsilon"]):
                ax.axhline(s[f"{key}_mean"], color="orange", linestyle="-.", label="PE, no noise (ε = ∞)")
        ax.set_xscale("log")
        ax.set_xlabel("ε (δ = 1e-5)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def run_transfer_suite(
    *,
    out: str | os.PathLike,
    variants: Sequence[str] = VARIANTS,
    epsilons: Sequence[float] = (1.0, 10.0),
    num_private: int | None = None,
    **kwargs,
) -> list[dict]:
    """:func:`run_results` on every transfer set (same config, unchanged), one sub-folder each.

    Writes ``transfer_summary.csv`` / ``.md`` (one row per set and setting), ``fd_curves.csv``
    and ``fd_per_iteration.png`` (FD of every iteration of PE seed 0) to ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict] = []
    curves: list[dict] = []
    for variant in variants:
        dm = MNISTVariantDataModule(variant=variant, num_private=num_private)
        fd_curves: dict = {}
        summary = run_results(out=out / variant, epsilons=epsilons, num_private=num_private, datamodule=dm,
                              fd_curves=fd_curves, **kwargs)
        table.extend({"set": variant, **row} for row in summary)
        for eps, curve in fd_curves.items():
            curves.extend(dict(set=variant, epsilon=eps, iteration=t, fd=fd) for t, fd in curve.items())
        _write_csv(out / "transfer_summary.csv", table)
        atomic_write(out / "transfer_summary.md", lambda tmp: Path(tmp).write_text(_transfer_markdown(table)))
        _write_csv(out / "fd_curves.csv", curves)
        _plot_curves(curves, out / "fd_per_iteration.png")
    return table


def merge_transfer(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[dict]:
    """Join transfer-suite outputs run in parallel (``--variants`` split over processes) into ``out``.

    Concatenates each part's ``transfer_summary.csv`` and ``fd_curves.csv``, copies its set
    folders (without the ``runs/`` populations) and rewrites the table and the plot.
    """
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict] = []
    curves: list[dict] = []

    def read(path: Path) -> list[dict]:
        with open(path, newline="") as f:
            return [{k: (v if k in ("set", "setting") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]

    for part in map(Path, parts):
        rows = read(part / "transfer_summary.csv")
        table.extend(rows)
        curves.extend(read(part / "fd_curves.csv"))
        for name in dict.fromkeys(r["set"] for r in rows):
            shutil.copytree(part / name, out / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs"))
    for r in table:
        r["n"], r["pe_seeds"], r["clf_seeds"] = int(r["n"]), int(r["pe_seeds"]), int(r["clf_seeds"])
    for c in curves:
        c["iteration"] = int(c["iteration"])
    _write_csv(out / "transfer_summary.csv", table)
    atomic_write(out / "transfer_summary.md", lambda tmp: Path(tmp).write_text(_transfer_markdown(table)))
    _write_csv(out / "fd_curves.csv", curves)
    _plot_curves(curves, out / "fd_per_iteration.png")
    return table


def _transfer_markdown(table: list[dict]) -> str:
    sets = list(dict.fromkeys(r["set"] for r in table))
    settings = list(dict.fromkeys((r["setting"], math.nan if math.isnan(r["epsilon"]) else r["epsilon"]) for r in table))
    settings = [k for i, k in enumerate(settings) if not any(k[0] == j[0] and math.isnan(k[1]) and math.isnan(j[1]) for j in settings[:i])]
    def label(setting, eps):
        if setting == "PE":
            return f"PE ε = {'∞' if math.isinf(eps) else f'{eps:g}'}"
        return {"real private training set": "real data (bound)", "random API alone": "RANDOM API alone (iteration 0)",
                RANDOM_AT_RELEASED_SIZE: "RANDOM API alone (released size)"}.get(setting, setting)
    head = "| set | " + " | ".join(f"{label(*k)}: acc % / FD" for k in settings) + " |"
    lines = [head, "|---" * (len(settings) + 1) + "|"]
    for name in sets:
        cells = []
        for setting, eps in settings:
            row = next((r for r in table if r["set"] == name and r["setting"] == setting
                        and (r["epsilon"] == eps or (math.isnan(r["epsilon"]) and math.isnan(eps)))), None)
            cells.append("" if row is None else f"{row['acc_mean']:.1f} ± {row['acc_std']:.1f} / {row['fd_mean']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_curves(curves: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epsilons = sorted({c["epsilon"] for c in curves})
    fig, axes = plt.subplots(1, len(epsilons), figsize=(5 * len(epsilons), 4), squeeze=False)
    for ax, eps in zip(axes[0], epsilons):
        for name in dict.fromkeys(c["set"] for c in curves):
            pts = [(c["iteration"], c["fd"]) for c in curves if c["set"] == name and c["epsilon"] == eps]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_title(f"ε = {eps:g} (PE seed 0)")
        ax.set_xlabel("PE iteration (0 = RANDOM API)")
        ax.set_ylabel("Fréchet distance (pixels)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="Privacy-utility results (docs/benchmark.md protocol) and the transfer suite")
    parser.add_argument("--out", default="results/mnist")
    parser.add_argument("--suite", choices=["mnist", "transfer"], default="mnist",
                        help="'transfer': the same settings on MNIST and each shifted variant (pe_lightning.data.transfer)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the PE config (default: the demo's)")
    parser.add_argument("--epsilons", type=float, nargs="+", default=None,
                        help="default: 0.5 1 2 4 10 inf (mnist), 1 10 (transfer)")
    parser.add_argument("--pe-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clf-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--noise", choices=["seeded", "secret"], default="secret",
                        help="DP noise of the runs: 'secret' (default: a fresh key per run) or 'seeded' (reproducible "
                             "numbers for experiments on public data; private only while the seed is secret)")
    parser.add_argument("--reuse-lookahead", choices=["true", "false"], default=None,
                        help="override the demo config's reuse_lookahead (true there): 'false' makes fresh variations for "
                             "every child, the reference implementation's behaviour")
    parser.add_argument("--quick", action="store_true", help="smoke run: eps 1, one seed, 200 private, 10 per class, 1 epoch")
    parser.add_argument("--no-baselines", action="store_true",
                        help="PE only: skip the real-data and RANDOM-API baselines (e.g. rerunning a suite whose RANDOM "
                             "population is unchanged; pair with the earlier run with --pair-with)")
    parser.add_argument("--pair-with", type=Path, default=None, metavar="DIR",
                        help="another run's output folder (its runs.csv; for --suite transfer, one sub-folder per set): "
                             "write paired differences PE - that run's PE and - its RANDOM at the released size "
                             "(same PE and classifier seeds) to paired_with.md")
    parser.add_argument("--collect", nargs="+", default=None, metavar="DIR",
                        help="join the runs.csv of runs split over processes or stopped early (same --suite; "
                             "with --suite transfer, --variants names the sets) into --out and rewrite the summaries")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="join transfer-suite outputs of parallel runs (each --variants ... --out DIR) into --out")
    args = parser.parse_args(argv)
    if args.collect:
        sets = args.variants if args.suite == "transfer" else None
        table = collect_runs(args.collect, args.out, sets=sets)
        print(_transfer_markdown(table) if sets else _markdown(table))
        if args.pair_with is not None:
            print(write_paired_with(Path(args.out), args.pair_with, sets=[t for t in sets if (Path(args.out) / t).is_dir()] if sets else None))
        return table
    if args.merge:
        table = merge_transfer(args.merge, args.out)
        print(_transfer_markdown(table))
        return table
    overrides = {"noise": args.noise}
    if args.reuse_lookahead is not None:
        overrides["reuse_lookahead"] = args.reuse_lookahead == "true"
    epsilons = args.epsilons or ([0.5, 1.0, 2.0, 4.0, 10.0, math.inf] if args.suite == "mnist" else [1.0, 10.0])
    kwargs = dict(out=args.out, epsilons=epsilons, pe_seeds=args.pe_seeds, clf_seeds=args.clf_seeds, epochs=args.epochs,
                  overrides=overrides, config=args.config, baselines=not args.no_baselines)
    if args.quick:
        if hasattr(_demo_model_class(args.config), "planned_iterations"):
            small = {"final_samples_per_class": 10, "lookahead_degree": 2, "approx_private_size": 200}
        else:
            small = {"iterations": 2, "variation_degrees": [0.5, 0.3], "num_samples_per_class": 5, "lookahead_degree": 2}
        kwargs.update(epsilons=args.epsilons or [1.0], pe_seeds=[0], clf_seeds=[0], epochs=1, num_private=200,
                      overrides={**overrides, **small}, grid_epsilons=[1.0])
    if args.suite == "transfer":
        table = run_transfer_suite(variants=args.variants, **kwargs)
        print(_transfer_markdown(table))
        if args.pair_with is not None:
            print(write_paired_with(Path(args.out), args.pair_with, sets=args.variants))
        return table
    summary = run_results(**kwargs)
    print(_markdown(summary))
    if args.pair_with is not None:
        print(write_paired_with(Path(args.out), args.pair_with))
    return summary


def write_paired_with(out: Path, reference: Path, *, sets: Sequence[str] | None = None) -> str:
    """``paired_with.md`` in ``out``: this run's PE minus ``reference``'s PE and minus its RANDOM at the released size.

    Pairs by PE seed and classifier seed (:func:`paired_differences`); with ``sets``, one
    block per transfer set (``out/<set>/runs.csv`` against ``reference/<set>/runs.csv``).
    """
    blocks = []
    for name in sets or [None]:
        if not (out / name / "runs.csv" if name else out / "runs.csv").is_file():
            continue
        ours = _read_runs(out / name / "runs.csv" if name else out / "runs.csv")
        ref = _read_runs(reference / name / "runs.csv" if name else reference / "runs.csv")
        title = f"### {name}\n\n" if name else ""
        text = title + _paired_markdown(paired_differences(ours, ref), against=f"PE of {reference}")
        if any(r["setting"] == RANDOM_AT_RELEASED_SIZE for r in ref):
            text += "\n" + _paired_markdown(paired_differences(ours, ref, against=RANDOM_AT_RELEASED_SIZE),
                                             against=f"{RANDOM_AT_RELEASED_SIZE} of {reference}")
        blocks.append(text)
    text = "\n".join(blocks)
    atomic_write(out / "paired_with.md", lambda tmp: Path(tmp).write_text(text))
    return text


if __name__ == "__main__":
    main()
