"""Where a callback's metrics go: the loggers when public, the private side when not.

A metric computed against private images (``real_split: private``, or a held-out split
carved out of the private data) is outside the DP guarantee. By the rule of
:mod:`pe_lightning.private_side` it is written only to the private-side report
``<private side>/runs/<run id>/metrics.json``; two opt-ins on the metric callback release
more, each outside the guarantee:

* ``report_private_metrics: true``: also one console line per iteration (warned with
  :class:`PrivateMetricsWarning`); the console is no output of the run, but W&B copies it
  into its ``output.log``, so a run that opts in no longer has a shareable W&B folder.
* ``log_private_metrics: true`` (needs the first): also to every logger, the summary and
  ``run.png``, under keys ending in ``_private_not_dp``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from pe_lightning.atomic import atomic_write
from pe_lightning.private_dir import default_private_dir
from pe_lightning.private_side import PRIVATE_DERIVED, data_class

__all__ = ["NOT_DP_SUFFIX", "PrivateMetricsWarning", "check_private_opt_ins", "private_report_path", "publish_metrics"]

#: The suffix of every released metric computed against private images.
NOT_DP_SUFFIX = "_private_not_dp"


class PrivateMetricsWarning(UserWarning):
    """A metric computed against private images is shown or logged (an opt-in outside the DP guarantee)."""


def check_private_opt_ins(owner: str, *, report_private_metrics: Any, log_private_metrics: Any) -> None:
    """Refuse anything but booleans, and ``log_private_metrics`` without ``report_private_metrics``.

    Raises:
        ValueError: naming ``owner`` and the field.
    """
    for name, value in (("report_private_metrics", report_private_metrics), ("log_private_metrics", log_private_metrics)):
        if not isinstance(value, bool):
            raise ValueError(f"{owner} {name} must be true or false, got {value!r}")
    if log_private_metrics and not report_private_metrics:
        raise ValueError(
            f"{owner} log_private_metrics=true releases metrics against private images to the loggers and the output "
            "root; it needs report_private_metrics=true as well (two explicit opt-ins, both outside the DP guarantee)"
        )


def private_report_path(private_dir: str | os.PathLike, run_id: str | None) -> Path:
    """``<private_dir>/runs/<run id>/metrics.json`` (``saved-population`` when the run has no id)."""
    return Path(private_dir) / "runs" / (run_id or "saved-population") / "metrics.json"


def _record(path: Path, *, stage: str, iteration: int, metrics: Mapping[str, float]) -> bool:
    """Merge ``metrics`` into the report at ``path`` (written temp-then-rename, owner-only); ``True`` if new."""
    new = not path.is_file()
    report: dict[str, Any] = {
        "note": "computed against PRIVATE images: NOT covered by the DP guarantee; keep on the private side",
        "entries": [],
    }
    if not new:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            new = True  # unreadable: start again (it only ever held this run's private metrics)
    entries = [e for e in report.get("entries", []) if isinstance(e, dict)]
    entry = next((e for e in entries if e.get("stage") == stage and e.get("iteration") == iteration), None)
    if entry is None:
        entry = {"stage": stage, "iteration": iteration}
        entries.append(entry)
    entry.update({k: float(v) for k, v in metrics.items()})
    report["entries"] = entries
    text = json.dumps(report, indent=2, allow_nan=True) + "\n"

    def write(tmp: str) -> None:  # mkstemp made the temp file owner-only; the rename keeps it
        os.chmod(tmp, 0o600)
        Path(tmp).write_text(text)

    atomic_write(path, write)
    return new


def publish_metrics(callback: Any, trainer: Any, pl_module: Any, metrics: Mapping[str, float]) -> None:
    """Send ``callback``'s ``metrics`` where its data class allows (the one routing rule).

    Public (:func:`~pe_lightning.private_side.data_class`): to every logger through
    ``pl_module.log_iteration_metrics``. Private-derived: to the private-side report only
    (rank zero), plus the console with ``callback.report_private_metrics`` and the
    loggers with ``callback.log_private_metrics`` (each warned as outside the guarantee).
    Call it on every rank, as ``log_iteration_metrics``.
    """
    if data_class(callback, datamodule=getattr(trainer, "datamodule", None)) != PRIVATE_DERIVED:
        pl_module.log_iteration_metrics(dict(metrics))
        return
    metrics = {(k if k.endswith(NOT_DP_SUFFIX) else k + NOT_DP_SUFFIX): float(v) for k, v in metrics.items()}
    run = pl_module.run
    owner = type(callback).__name__
    if trainer.is_global_zero:
        from lightning.pytorch.utilities import rank_zero_info

        path = private_report_path(run.private_dir or default_private_dir(), getattr(pl_module, "run_id", None))
        stage = getattr(getattr(trainer, "state", None), "fn", None)
        if _record(path, stage=str(getattr(stage, "value", stage) or "fit"), iteration=int(run.iteration), metrics=metrics):
            rank_zero_info(f"[PE] {owner}: metrics against private images (not DP) are kept on the private side: {path}")
        if getattr(callback, "report_private_metrics", False):
            warnings.warn(
                f"{owner} report_private_metrics=true: metrics computed against PRIVATE images are printed; "
                "they are NOT covered by the DP guarantee",
                PrivateMetricsWarning, stacklevel=2,
            )
            parts = " | ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            rank_zero_info(f"[PE] NOT DP (against private images), iteration {run.iteration} | {parts}")
    if getattr(callback, "log_private_metrics", False):
        if trainer.is_global_zero:
            warnings.warn(
                f"{owner} log_private_metrics=true: metrics computed against PRIVATE images go to the loggers and "
                "the output root; they are NOT covered by the DP guarantee",
                PrivateMetricsWarning, stacklevel=2,
            )
        pl_module.log_iteration_metrics(metrics)
