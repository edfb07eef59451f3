"""Small builders shared by the tests (tiny, fast, offline)."""

from __future__ import annotations

import lightning.pytorch as pl

from pe_lightning import DrawText, MNISTDataModule, PixelEmbedding, PrivateEvolution


def tiny_datamodule(num_private: int = 200, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(num_private=num_private, **kwargs)


def tiny_model(**overrides) -> PrivateEvolution:
    kwargs = dict(
        api=DrawText(image_size=28),
        embedding=PixelEmbedding(size=14),
        iterations=2,
        num_samples_per_class=8,
        variation_degrees=[0.5, 0.3],
        lookahead_degree=2,
        threshold=0.0,
        seed=0,
        save_png=False,
    )
    kwargs.update(overrides)
    return PrivateEvolution(**kwargs)


def shared_noise_key(tmp_path) -> str:
    """A noise-key file outside ``tmp_path`` (and so outside any output root under it).

    Runs given the same file draw the same secret noise: the way to compare two runs
    without the seeded (public) noise mode.
    """
    return str(tmp_path.parent / f"{tmp_path.name}.noise.key")


def tiny_trainer(tmp_path, *, max_epochs: int = 2, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **defaults)


# ----------------------------------------------------------------------------------------
# Callbacks used by tests that run the real CLI in subprocesses (PYTHONPATH=tests).
import os
import signal
from pathlib import Path

import numpy as np

from pe_lightning.callbacks import PopulationCallback


class VoteRecorder(PopulationCallback):
    """Saves each iteration's combined votes (rank 0) to ``<directory>/votes_<t>.npy``.

    Test instrumentation only: raw votes are private data and never leave a real run.
    Runs before the module's ``on_train_epoch_end`` (Lightning calls callbacks first).
    """

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        votes = pl_module.gather_assignments().cpu().numpy()  # collective: every rank calls it
        if trainer.is_global_zero:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            np.save(Path(self.directory) / f"votes_{pl_module.run.iteration + 1}.npy", votes)


class KillAt(PopulationCallback):
    """SIGKILLs its own process in the middle of iteration ``iteration`` (after lookahead, at the first batch).

    Only when the environment variable ``PE_TEST_KILL`` is ``"1"``, so a resumed run with the
    same config survives.
    """

    def __init__(self, iteration: int) -> None:
        super().__init__()
        self.iteration = iteration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if os.environ.get("PE_TEST_KILL") == "1" and pl_module.run.iteration + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)


class FinalWriteFault(PopulationCallback):
    """Cuts the final population's write short at ``point``: SIGKILL (``action="kill"``) or a full disk (``"enospc"``).

    ``point``: ``"mid_png"`` (at the ``n``-th PNG file of the tree), ``"before_npz"`` or
    ``"after_npz"`` (around ``population.npz``). The full disk is an ``OSError(ENOSPC)`` that
    names no file, as a ``write`` would raise it. Only when the environment variable
    ``PE_TEST_FAULT`` is ``"1"``, so a resumed run with the same config completes.
    """

    def __init__(self, point: str, action: str = "kill", n: int = 5) -> None:
        super().__init__()
        if point not in ("mid_png", "before_npz", "after_npz") or action not in ("kill", "enospc"):
            raise ValueError(f"bad FinalWriteFault point={point!r} action={action!r}")
        self.point, self.action, self.n = point, action, n

    def _fault(self) -> None:
        import errno

        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def setup(self, trainer, pl_module, stage) -> None:
        if os.environ.get("PE_TEST_FAULT") != "1":
            return
        from PIL import Image

        from pe_lightning import final_stage
        from pe_lightning.population import Population

        fault = self._fault
        if self.point == "mid_png":
            original_tree, original_save, count = final_stage.write_png_tree, Image.Image.save, [0]

            def save(image, *args, **kwargs):
                count[0] += 1
                if count[0] == self.n:
                    fault()
                return original_save(image, *args, **kwargs)

            def tree(*args, **kwargs):
                Image.Image.save = save
                try:
                    return original_tree(*args, **kwargs)
                finally:
                    Image.Image.save = original_save

            final_stage.write_png_tree = tree
        else:
            original_npz = Population.save_npz

            def save_npz(population, path):
                if self.point == "before_npz":
                    fault()
                out = original_npz(population, path)
                fault()
                return out

            Population.save_npz = save_npz


class WaitForFile(PopulationCallback):
    """Holds the run at the start of iteration 1: creates ``<directory>/waiting``, then waits for ``<directory>/go``.

    Lets a test start a second run while this one is alive (no timing assumptions: the test
    waits for ``waiting`` and releases this run by creating ``go``; gives up after 10 minutes).
    """

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import time

        if pl_module.run.iteration != 0:
            return
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "waiting").write_text(str(os.getpid()))
        deadline = time.monotonic() + 600
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
