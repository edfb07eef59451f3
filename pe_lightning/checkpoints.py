"""Checking a checkpoint before resuming from it: a corrupt file names itself and the last good one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CorruptCheckpointError", "check_checkpoint", "claim_unreadable_last", "is_readable", "last_good_checkpoint", "resolve_last",
    "save_as_last",
]


class CorruptCheckpointError(ValueError):
    """A checkpoint cannot be read (truncated, overwritten, not a checkpoint)."""


def is_readable(path: str | os.PathLike) -> tuple[bool, str]:
    """``(True, "")`` when ``torch.load`` reads ``path``, else ``(False, reason)``.

    Loaded memory-mapped on the CPU with ``weights_only=True`` (as Lightning's CLI does), so
    even a large checkpoint costs little more than its pickled metadata.
    """
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return True, ""
    except Exception:  # noqa: BLE001 - any failure means "cannot resume from this file"
        pass
    try:  # read it again without mmap, whose errors are clearer ("failed finding central directory")
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return False, f"{type(err).__name__}: {first}".rstrip(": ")
    return False, "it cannot be memory-mapped (not a zip-format torch checkpoint)"


def last_good_checkpoint(folder: str | os.PathLike, *, exclude: str | os.PathLike | None = None) -> Path | None:
    """The most recently modified readable ``*.ckpt`` in ``folder`` other than ``exclude``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude is not None else None
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if p.resolve() != skip and is_readable(p)[0]), None)


def resolve_last(dirpaths: list[str | os.PathLike]) -> Path | None:
    """What ``ckpt_path="last"`` resumes from: the newest ``last*.ckpt`` in the checkpoint folders."""
    found = [p for d in dirpaths if d and Path(d).is_dir() for p in Path(d).glob("last*.ckpt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptCheckpointError` naming ``path`` and the last good checkpoint beside it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptCheckpointError: ``path`` cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ok, reason = is_readable(path)
    if ok:
        return
    good = last_good_checkpoint(path.parent, exclude=path)
    hint = (
        f"the last good checkpoint there is {str(good)!r}: resume with --ckpt_path {good}"
        if good is not None
        else f"no other readable checkpoint in {str(path.parent)!r}"
    )
    raise CorruptCheckpointError(
        f"checkpoint {str(path)!r} cannot be read: it is truncated, overwritten or not a checkpoint ({reason}); {hint}"
    )


def save_as_last(trainer) -> list[str]:
    """Save the run now where each ``ModelCheckpoint(save_last=True)`` keeps its ``last`` file.

    Used for the RANDOM population (iteration 0), whose sampling can take millions of model
    evaluations: a failure in iteration 1 then resumes from here (``--ckpt_path last``).
    The file is claimed as the callback's own ``last`` file, so its next save replaces it
    instead of writing ``last-v1.ckpt`` beside it.

    Returns:
        The paths written.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    written = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            path = cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
            cb.last_model_path = path
            trainer.save_checkpoint(path, weights_only=False)
            written.append(path)
    return written


def claim_unreadable_last(trainer) -> list[str]:
    """Make each ``ModelCheckpoint(save_last=True)`` replace its ``last`` file when that file cannot be read.

    Called once the checkpoint callbacks' state is restored (``on_fit_start``). Lightning
    keeps a ``last.ckpt`` that is not its own and writes ``last-v1.ckpt`` beside it, so a
    truncated ``last.ckpt`` would shadow every later save for ``--ckpt_path last``; claimed
    as the callback's own file, the next save replaces it.

    Returns:
        The unreadable files claimed.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    claimed = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
            path = cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
            if os.path.isfile(path) and path != cb.last_model_path and not is_readable(path)[0]:
                cb.last_model_path = path
                claimed.append(path)
    return claimed
