"""What ``python -m pe_lightning fit`` decides before a run starts: where it writes, and whether it has anything to do.

* :func:`move_to_fresh_version`: ``--new_version`` moves a run's outputs into a fresh
  ``<root>/version_<n>`` (:func:`~pe_lightning.run_lock.fresh_version`).
* :func:`finished_run`: resuming a run whose last checkpoint holds its last iteration and whose
  final population is complete on disk is a no-op; the CLI then runs nothing and writes nothing.

:func:`start_resumed` is what the PE module does when a fit starts, once the checkpoint's state
is restored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from pe_lightning.final_stage import FINAL_DIR, final_is_complete
from pe_lightning.population import Population
from pe_lightning.checkpoints import claim_unreadable_last
from pe_lightning.run_fingerprint import check_resume, note_accepted_changes
from pe_lightning.run_lock import fresh_version

__all__ = ["finished_run", "move_to_fresh_version", "start_resumed"]


def _under(path: str | os.PathLike, root: Path) -> bool:
    p = Path(path).expanduser().absolute()
    return p == root or root in p.parents


def _moved(path: str, old: Path, new: Path) -> str:
    return str(new / Path(path).expanduser().absolute().relative_to(old))


def move_to_fresh_version(config: Any) -> Path:
    """Point the run's outputs at a fresh ``<root>/version_<n>`` (edits the parsed ``fit`` config in place).

    ``trainer.default_root_dir`` becomes the new folder, and every output folder set inside the
    old root (a logger's ``save_dir``, a callback's ``dirpath``, the model's ``output_dir``)
    moves with it; paths elsewhere are kept.

    Returns:
        The new output root.
    """
    old = Path(config.trainer.get("default_root_dir") or os.getcwd()).expanduser().absolute()
    new = fresh_version(old)
    config.trainer.default_root_dir = str(new)
    entries = []
    for key in ("logger", "callbacks"):
        value = config.trainer.get(key)
        entries += [v for v in (value if isinstance(value, list) else [value]) if getattr(v, "class_path", None)]
    model = config.get("model")
    if getattr(model, "init_args", None) is not None:
        entries.append(model)
    for entry in entries:
        for arg in ("save_dir", "dirpath", "output_dir"):
            value = entry.init_args.get(arg) if arg in entry.init_args else None
            if isinstance(value, str) and _under(value, old):
                entry.init_args[arg] = _moved(value, old, new)
    return new


def finished_run(*, model: Any, datamodule: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike) -> str | None:
    """One line saying the run is already finished, or ``None`` when the resume has work to do.

    Finished: the checkpoint holds iteration ``T`` of this run (``model.iterations``), was
    written with the same data and configuration (else refused, :func:`~pe_lightning.run_fingerprint.check_resume`)
    and ``<output_dir>/final`` holds its population, complete (:func:`~pe_lightning.final_stage.final_is_complete`).

    Raises:
        ResumeMismatchError: the checkpoint was written with another configuration.
    """
    import torch

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get("private_evolution")
    if state is None or state.get("population") is None or int(state["iteration"]) != model.iterations:
        return None
    check_resume(state.get("run_fingerprint"), model.fingerprint(datamodule), accept_changes=model.accept_changed_resume)
    final = Path(output_dir) / FINAL_DIR
    population = Population.from_state_dict(state["population"])
    if not final_is_complete(final, population=population, iteration=model.iterations, png=model.save_png):
        return None
    return (f"[PE] nothing to do: the run in {ckpt_path} finished all {model.iterations} iterations and its final "
            f"population is complete in {final}; every output is left as it is")


def start_resumed(trainer: Any, *, accepted_changes: list[str], info: Callable[[str], None] = print) -> None:
    """At the start of a fit (``on_fit_start``, the checkpoint's state restored), on every rank.

    An unreadable ``last`` checkpoint is claimed so that the next save replaces it
    (:func:`~pe_lightning.checkpoints.claim_unreadable_last`), and the configuration changes a
    resume accepted are noted in the ledger (:func:`~pe_lightning.run_fingerprint.note_accepted_changes`;
    the accountant's ledger is restored after the module's ``on_load_checkpoint``, so not before).

    Args:
        trainer: the fitting trainer.
        accepted_changes: one line per accepted difference (:func:`~pe_lightning.run_fingerprint.check_resume`).
        info: where the lines saying so go.
    """
    for path in claim_unreadable_last(trainer):
        info(f"[PE] {path} cannot be read: the next checkpoint replaces it")
    if accepted_changes:
        note_accepted_changes(trainer.callbacks, accepted_changes)
        info("[PE] resumed with a changed configuration: " + "; ".join(accepted_changes))
