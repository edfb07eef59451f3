"""The PE progress display: one Rich bar over the T iterations, and the current stage below it."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from typing_extensions import override

from pe_lightning.callbacks.base import PopulationCallback, run_view
from pe_lightning.callbacks.run_info import fid_metric, format_epsilon, metric_value, result_metrics

__all__ = ["PEProgressBar"]

#: Loggers whose console handlers are routed through the live display while it runs.
_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PEProgressBar(ProgressBar, PopulationCallback):
    """A Lightning progress bar for Private Evolution, drawn with Rich.

    The first line is one bar over the ``T`` PE iterations with the privacy spent of the
    budget (``privacy/epsilon`` of ``privacy/epsilon_budget``), the latest ``fid/*`` and
    every other result metric logged (:func:`~pe_lightning.callbacks.run_info.result_metrics`),
    the wall time per iteration in this run and the remaining time, all read from
    ``pl_module.run``. The second, while an iteration (or the start-up) runs, is its current
    stage (:data:`~pe_lightning.callbacks.base.STAGES`: lookahead, voting, variation, ...)
    and its progress, as the module reports it through
    :meth:`~pe_lightning.callbacks.PopulationCallback.on_stage`; private-side work (private
    embedding, voting) arrives without counts and is drawn as a pulse with no numbers
    (docs/privacy.md). No per-batch training bar.

    On a terminal the display updates live and Lightning's log lines (the per-iteration
    ``[PE]`` lines included) print above it; in a log file or pipe only the final state is
    printed, once, at the end of training. Rank zero only.

    Args:
        refresh_per_second: redraws per second on a terminal.
        console_kwargs: arguments of the ``rich.console.Console`` (default: standard error).
    """

    def __init__(self, *, refresh_per_second: float = 4.0, console_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not refresh_per_second > 0:
            raise ValueError(f"PEProgressBar refresh_per_second must be > 0, got {refresh_per_second!r}")
        self.refresh_per_second = float(refresh_per_second)
        self.console_kwargs = dict(console_kwargs or {})
        self._enabled = True
        self._progress = None  # rich.progress.Progress while live
        self._main_task = self._stage_task = self._pulse_task = None
        self._rerouted: list[tuple[logging.StreamHandler, Any]] = []
        self._iteration_started: float | None = None
        self._durations: list[float] = []

    # ---------------------------------------------------------- ProgressBar API
    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @property
    def is_live(self) -> bool:
        """Whether the display is currently drawn."""
        return self._progress is not None

    @override
    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            self._start(trainer, pl_module)

    @override
    def on_stage(self, trainer, pl_module, *, stage: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        run = run_view(pl_module)
        completed = run.iteration if run is not None else trainer.current_epoch
        if stage in ("private embedding", "random"):
            where = "start-up"
        else:  # callbacks run on the population just made; the other stages make the next one
            where = f"iteration {completed if stage == 'callbacks' else completed + 1}"
        private = total <= 0  # private-side work (pe_lightning.private_side.public_progress): a pulse, no counts
        self._progress.update(self._stage_task if private else self._pulse_task, visible=False)
        if private:
            self._progress.update(self._pulse_task, description=f"  {where}: {stage}", visible=True)
            return
        self._progress.update(
            self._stage_task, description=f"  {where}: {stage}", total=total, completed=done,
            info=f"{done:,}/{total:,}", visible=True,
        )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._refresh(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_iteration()
        self._iteration_started = time.perf_counter()
        self._refresh(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_iteration()
        self._refresh(trainer, pl_module)
        self._stop()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop()

    # --------------------------------------------------------------- display
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        console = Console(**{"stderr": True, **self.console_kwargs})
        stderr = sys.stderr
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=32),
            TextColumn("{task.fields[info]}"),
            console=console,
            refresh_per_second=self.refresh_per_second,
        )
        run = run_view(pl_module)
        total = int(run.iterations if run is not None else trainer.max_epochs)
        self._main_task = self._progress.add_task("PE", total=total, info="")
        self._stage_task = self._progress.add_task("", total=1, info="", visible=False)
        self._pulse_task = self._progress.add_task("", total=None, info="", visible=False)  # no total: a pulse
        self._progress.start()
        if sys.stderr is not stderr:  # the live display took over the terminal's stderr
            self._reroute_log_handlers(old=stderr, new=sys.stderr)
        self._refresh(trainer, pl_module)

    def _reroute_log_handlers(self, *, old: Any, new: Any) -> None:
        """Lightning's console handlers keep the stderr they were made with; point them at the live display's."""
        for name in _LOGGERS:
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (old, sys.__stderr__):
                    self._rerouted.append((handler, handler.setStream(new)))

    def _stop(self) -> None:
        if self._progress is None:
            return
        progress, self._progress = self._progress, None
        progress.update(self._stage_task, visible=False)
        progress.update(self._pulse_task, visible=False)
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted = []
        progress.stop()

    def _end_iteration(self) -> None:
        if self._iteration_started is not None:
            self._durations.append(time.perf_counter() - self._iteration_started)
            self._iteration_started = None

    def _refresh(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._progress is None:
            return
        run = run_view(pl_module)
        total = int(run.iterations if run is not None else trainer.max_epochs)
        done = int(run.iteration if run is not None else trainer.current_epoch)
        self._progress.update(
            self._main_task, description=f"PE iteration {done}/{total}", completed=done, total=total,
            info=self.summary_text(trainer, done=done, total=total, metrics=run.metrics if run is not None else None),
        )
        self._progress.update(self._stage_task, visible=False)
        self._progress.update(self._pulse_task, visible=False)

    def summary_text(self, trainer: pl.Trainer, *, done: int, total: int, metrics=None) -> str:
        """The fields after the iteration bar: ``ε 0.684/1 · FID 9.44 · <metric> <value> · 0.53 s/it · ETA 0:00:01``.

        ``metrics`` are the run's (``pl_module.run.metrics``); default: the trainer's callback metrics.
        """
        metrics = trainer.callback_metrics if metrics is None else metrics
        parts = []
        eps, budget = metric_value(metrics, "privacy/epsilon"), metric_value(metrics, "privacy/epsilon_budget")
        if budget is not None or eps is not None:
            of = f"/{format_epsilon(budget)}" if budget is not None else ""
            parts.append(f"ε {format_epsilon(eps if eps is not None else 0.0)}{of}")
        fid = fid_metric(metrics)
        if fid is not None:
            parts.append(f"FID {fid[1]:.4g}")
        parts.extend(f"{key} {value:.4g}" for key, value in result_metrics(metrics, shown=("fid/",)).items())
        if self._durations:
            per_iteration = sum(self._durations) / len(self._durations)
            parts.append(f"{per_iteration:.3g} s/it")
            parts.append(f"ETA {_format_seconds(per_iteration * max(total - done, 0))}")
        else:
            parts.append("- s/it")
        return " · ".join(parts)
