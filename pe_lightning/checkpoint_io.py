"""Checkpoints written like every other output: temp file in the same folder, then one rename.

Lightning's :class:`~lightning.fabric.plugins.io.TorchCheckpointIO` stages local writes in the
system temp folder and moves them, which is a copy (and can be cut short) when that folder is
on another file system; an ``OSError`` from the write names no file. :class:`AtomicCheckpointIO`
writes ``.<name>.<random>.tmp`` beside the checkpoint and renames it
(:func:`~pe_lightning.atomic.atomic_write`), so a kill or a full disk leaves the previous
checkpoint whole, and an error names the checkpoint. Remote paths (``s3://`` and the like) are
left to Lightning.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from typing_extensions import override

from pe_lightning.atomic import atomic_write

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.fabric.plugins.io.TorchCheckpointIO` with atomic local writes that name the file on error."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
