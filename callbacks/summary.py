"""The end-of-run summary: printed, written as ``summary.json`` and ``run.png``, and sent to W&B."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from pe_lightning.callbacks.base import PopulationCallback, run_view
from pe_lightning.callbacks.run_info import fid_metric, format_epsilon, metric_value, result_metrics
from pe_lightning.population import atomic_write

__all__ = ["RunSummary", "seconds_since_process_start"]


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``), ``None`` where unknown."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): start time after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _finite(value: float | None) -> float | str | None:
    """JSON has no inf/nan: those become strings."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


class RunSummary(PopulationCallback):
    """At the end of a PE run: what it spent, what it reached, how long it took, where its outputs are.

    Printed (through Lightning's logger, on rank zero), written to the output root
    (``trainer.default_root_dir``) as ``summary.json`` and ``run.png`` (FID and ε per
    iteration), and set as the W&B run's summary fields when a ``WandbLogger`` is used:
    ε spent and the budget, δ, σ, ``T``, ``N``, the FID at iteration 0 and ``T``, the
    downstream test accuracy (with :class:`~pe_lightning.callbacks.DownstreamEvaluation`), the
    images requested from a model behind HTTP (``api/images_requested_total``, the cost counter),
    the final value of every other result metric logged (``metrics``), wall time and
    start-up time, and the path of every output. Everything is read from ``pl_module.run``
    (:class:`~pe_lightning.engine.hooks.RunView`), so a metric any callback logs reaches the
    summary without a change here. The per-iteration history is checkpoint state, so a
    resumed run's summary covers all iterations.

    Args:
        filename: the JSON file's name in the output root.
        plot: also write ``run.png`` (needs matplotlib).
    """

    def __init__(self, *, filename: str = "summary.json", plot: bool = True) -> None:
        super().__init__()
        if not filename or os.path.basename(filename) != filename:
            raise ValueError(f"RunSummary filename must be a plain file name, got {filename!r}")
        self.filename = filename
        self.plot = plot
        self.history: dict[int, dict[str, float]] = {}
        self.summary: dict[str, Any] | None = None
        self._fit_start: float | None = None
        self._to_iteration_0: float | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename)

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._fit_start = time.perf_counter()

    @override
    def on_population(self, trainer, pl_module, *, population, iteration: int) -> None:
        if iteration == 0 and self._to_iteration_0 is None:
            self._to_iteration_0 = seconds_since_process_start()

    # The module publishes an iteration's metrics (trainer.callback_metrics) after every
    # callback's on_population; the next hook that runs is one of these three.
    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.summary = self.build(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        root = Path(trainer.default_root_dir).resolve()
        json_path = root / self.filename
        self.summary["outputs"]["summary"] = str(json_path)
        if self.plot and self.history:
            self.summary["outputs"]["plot"] = str(self._write_plot(root / "run.png"))
        text = json.dumps(self.summary, indent=2, allow_nan=False) + "\n"
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
        for line in self.lines(self.summary):
            rank_zero_info(line)
        self._to_wandb(trainer, self.summary)

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint is saved after its iteration's metrics are published: record them, so a run resumed
        # from it (to finish its final stage, say) still has that iteration's row.
        self._record(pl_module)
        if self.state_key in checkpoint.get("callbacks", {}):
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": {str(t): dict(m) for t, m in self.history.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        try:
            self.history = {int(t): dict(m) for t, m in state_dict.get("history", {}).items()}
        except (TypeError, ValueError, AttributeError):
            rank_zero_warn("RunSummary: the checkpoint's history is unreadable; the summary covers this run only")
            self.history = {}

    # -------------------------------------------------------------- the data
    def _record(self, pl_module: pl.LightningModule) -> None:
        run = run_view(pl_module)
        if run is None:
            return
        metrics = run.metrics
        iteration = metric_value(metrics, "pe/iteration")
        if iteration is None:
            return
        row = {"iteration_s": metric_value(metrics, "time/iteration_s")}
        eps = metric_value(metrics, "privacy/epsilon")
        if eps is not None:
            row["epsilon"] = eps
        fid = fid_metric(metrics)
        if fid is not None:
            row[fid[0]] = fid[1]
        self.history[int(iteration)] = row

    def build(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The summary as a JSON-ready dict (also :attr:`summary` after the fit)."""
        run = run_view(pl_module)
        metrics = run.metrics if run is not None else {}
        fid = fid_metric(metrics)
        recorded = sorted({k for row in self.history.values() for k in row if k.startswith("fid/")})
        fid_key = fid[0] if fid else (recorded[0] if recorded else None)  # a resumed run has no metrics of its own yet
        last = max(self.history) if self.history else None
        later = [r["iteration_s"] for t, r in self.history.items() if t > 0 and r.get("iteration_s") is not None]
        fit = time.perf_counter() - self._fit_start if self._fit_start is not None else None
        wall = seconds_since_process_start()
        return {
            "privacy": {
                "epsilon": _finite(run.epsilon) if run is not None else None,
                "epsilon_budget": _finite(metric_value(metrics, "privacy/epsilon_budget")),
                "delta": metric_value(metrics, "privacy/delta"),
                "noise_multiplier": _finite(run.noise_multiplier) if run is not None else None,
            },
            "T": run.iterations if run is not None else None,
            "iterations_completed": run.iteration if run is not None else None,
            "N": run.population_size if run is not None else None,
            "num_classes": (len(run.class_names) or None) if run is not None else None,
            "fid": {
                "key": fid_key,
                "iteration_0": self.history.get(0, {}).get(fid_key) if fid_key else None,
                "final": self.history.get(last, {}).get(fid_key) if fid_key and last is not None else None,
            },
            "downstream_test_acc": metric_value(metrics, "downstream/test_acc"),
            "api_images_requested": metric_value(metrics, "api/images_requested_total"),  # APIs behind HTTP: the cost
            "metrics": {k: _finite(v) for k, v in result_metrics(metrics).items()},
            "time": {
                "wall_s": round(wall, 3) if wall is not None else None,
                "fit_s": round(fit, 3) if fit is not None else None,
                "to_iteration_0_s": round(self._to_iteration_0, 3) if self._to_iteration_0 is not None else None,
                "iterations_s": round(sum(later), 3) if later else None,
            },
            "per_iteration": [
                {"iteration": t, **{k: _finite(v) for k, v in self.history[t].items()}} for t in sorted(self.history)
            ],
            "outputs": self._outputs(trainer, pl_module),
            "private_dir": str(run.private_dir) if run is not None and run.private_dir else None,
        }

    @staticmethod
    def _outputs(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, str]:
        from lightning.pytorch.loggers import WandbLogger

        out = {"root": trainer.default_root_dir}
        run = run_view(pl_module)
        final = run.final_population_dir if run is not None else None
        if final is not None:
            out["final_population"] = str(Path(final) / "population.npz")
            if (Path(final) / "images").is_dir():
                out["final_images"] = str(Path(final) / "images")
        if run is not None:
            out.update({name: str(path) for name, path in run.outputs.items()})
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "dirpath", None):
            out["checkpoints"] = ckpt.dirpath
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the run's files folder is <offline-run-...>/files
                out["wandb"] = str(Path(logger.experiment.dir).parent)
            elif getattr(logger, "log_dir", None):
                out["logs"] = str(logger.log_dir)
        return {name: str(Path(path).resolve()) for name, path in out.items()}

    # ---------------------------------------------------------- the outputs
    @staticmethod
    def lines(summary: dict[str, Any]) -> list[str]:
        """The printed summary, one string per line."""
        p, fid, t = summary["privacy"], summary["fid"], summary["time"]
        head = f"[PE] run summary: epsilon {format_epsilon(_as_float(p['epsilon']))}"
        if p["epsilon_budget"] is not None:
            head += f" spent of {format_epsilon(_as_float(p['epsilon_budget']))}"
        if p["delta"] is not None:
            head += f" (delta {p['delta']:g})"
        if p["noise_multiplier"] is not None:
            head += f", sigma {_as_float(p['noise_multiplier']):.4g}"
        n = f"{summary['N']:,}" if summary["N"] is not None else "-"
        lines = [head + f", T {summary['T']}, N {n}"]
        if fid["key"]:
            lines.append(f"[PE]   {fid['key']}: {_fmt(fid['iteration_0'])} at iteration 0 -> {_fmt(fid['final'])} "
                         f"at iteration {summary['iterations_completed']}")
        if summary["downstream_test_acc"] is not None:
            lines.append(f"[PE]   downstream test accuracy: {summary['downstream_test_acc']:.4f}")
        if summary.get("api_images_requested") is not None:
            lines.append(f"[PE]   images requested from the model API: {summary['api_images_requested']:,.0f}")
        for key, value in summary.get("metrics", {}).items():  # every other result metric
            if not (key.startswith("fid/") or key in ("downstream/test_acc", "api/images_requested_total")):
                lines.append(f"[PE]   {key}: {_fmt(_as_float(value))}")
        timing = f"[PE]   wall time {_fmt(t['wall_s'] if t['wall_s'] is not None else t['fit_s'])} s"
        extras = []
        if t["to_iteration_0_s"] is not None:
            extras.append(f"process start to iteration 0: {t['to_iteration_0_s']:.1f} s")
        if t["iterations_s"] is not None:
            extras.append(f"iterations: {t['iterations_s']:.1f} s")
        lines.append(timing + (f" ({', '.join(extras)})" if extras else ""))
        outputs = dict(summary["outputs"])
        root = outputs.pop("root")
        lines.append(f"[PE]   outputs (safe to share) under {root}:")
        for name, path in outputs.items():
            inside = Path(path) == Path(root) or Path(root) in Path(path).parents
            lines.append(f"[PE]     {name:<17} {os.path.relpath(path, root) if inside else path}")
        if summary["private_dir"]:
            lines.append(f"[PE]   private side (derived from private data, keep private): {summary['private_dir']}")
        return lines

    def _write_plot(self, path: Path) -> Path:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        iterations = sorted(self.history)
        fig = Figure(figsize=(6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        fid_keys = sorted({k for r in self.history.values() for k in r if k.startswith("fid/")})
        for key in fid_keys:
            pts = [(t, self.history[t][key]) for t in iterations if key in self.history[t]]
            ax.plot([t for t, _ in pts], [v for _, v in pts], "o-", color="tab:blue", label=key)
        ax.set_xlabel("PE iteration")
        ax.set_ylabel(", ".join(fid_keys) or "FID", color="tab:blue")
        eps = [(t, self.history[t]["epsilon"]) for t in iterations if "epsilon" in self.history[t]]
        if eps:
            ax2 = ax.twinx()
            ax2.plot([t for t, _ in eps], [v for _, v in eps], "s--", color="tab:red", label="epsilon")
            ax2.set_ylabel("epsilon spent", color="tab:red")
        ax.set_xticks(iterations)
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))

    @staticmethod
    def _to_wandb(trainer: pl.Trainer, summary: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        fields = {
            "privacy/epsilon_spent": summary["privacy"]["epsilon"],
            "privacy/epsilon_budget": summary["privacy"]["epsilon_budget"],
            "privacy/delta": summary["privacy"]["delta"],
            "privacy/noise_multiplier": summary["privacy"]["noise_multiplier"],
            "pe/T": summary["T"],
            "pe/N": summary["N"],
            "downstream/test_acc": summary["downstream_test_acc"],
            "api/images_requested_total": summary.get("api_images_requested"),
            "time/wall_s": summary["time"]["wall_s"],
            "time/to_iteration_0_s": summary["time"]["to_iteration_0_s"],
        }
        if summary["fid"]["key"]:
            fields[f"{summary['fid']['key']}_iteration_0"] = summary["fid"]["iteration_0"]
            fields[f"{summary['fid']['key']}_final"] = summary["fid"]["final"]
        fields = {k: v for k, v in fields.items() if v is not None}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(fields)


def _as_float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
