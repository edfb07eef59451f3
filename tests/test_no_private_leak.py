"""Nothing private is written anywhere a run writes: a fit with every shipped callback, searched.

Private means: the private images (exact bytes, a distinctive row of each, and the
pixel-embedding row the module votes with) and the run's secret noise key (bytes and
hex). Searched: every value any logger received (a recording logger beside W&B), every
file under the output root (raw bytes, decoded PNGs, every array of every ``.npz``),
every tensor and array inside the checkpoints, and the W&B run's files. A positive
control writes one private image on purpose and checks that the same search finds it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from PIL import Image

import pe_lightning.callbacks as pe_callbacks
from pe_lightning import PixelEmbedding
from pe_lightning.noise import NoiseKeyStore
from pe_testing import tiny_datamodule, tiny_model

pytestmark = pytest.mark.slow


class RecordingLogger(Logger):
    """Keeps everything it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict] = []
        self.hparams: list = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.hparams.append(params)


# Every callback class that pe_lightning.callbacks exports, built for this run. A new
# callback without an entry here fails the test: each one must be searched.
CALLBACKS = {
    "PrivacyAccountant": lambda: pe_callbacks.PrivacyAccountant(epsilon=2.0),
    "FIDCallback": lambda: pe_callbacks.FIDCallback(feature=PixelEmbedding(), name="pixel"),
    "SampleGrid": lambda: pe_callbacks.SampleGrid(samples_per_class=3),
    "PopulationSnapshot": lambda: pe_callbacks.PopulationSnapshot(png=True),
    "PrecisionRecall": lambda: pe_callbacks.PrecisionRecall(feature=PixelEmbedding(size=14), k=3),
    "DownstreamEvaluation": lambda: pe_callbacks.DownstreamEvaluation(max_epochs=1, val_fraction=0.0),
    "RunSummary": lambda: pe_callbacks.RunSummary(),
    "PEProgressBar": lambda: pe_callbacks.PEProgressBar(),
}
NOT_RUN_CALLBACKS = {"PopulationCallback", "EmbeddingFeature"}  # a base class and a feature adapter, not callbacks to add


def _exported_callbacks() -> set[str]:
    names = set()
    for name in pe_callbacks.__all__:
        obj = getattr(pe_callbacks, name)
        if isinstance(obj, type) and issubclass(obj, pl.Callback) and name not in NOT_RUN_CALLBACKS:
            names.add(name)
    return names


def test_every_exported_callback_is_searched():
    assert _exported_callbacks() <= set(CALLBACKS), sorted(_exported_callbacks() - set(CALLBACKS))


def _needles(private_images: np.ndarray, embedding_rows: np.ndarray, key_secret: bytes) -> dict[str, bytes]:
    """Byte strings none of which may appear anywhere."""
    needles = {"noise key bytes": key_secret, "noise key hex": key_secret.hex().encode()}
    for i, image in enumerate(private_images):
        needles[f"private image {i}"] = image.tobytes()
        # The row with the most ink: distinctive, and contiguous in any 1-channel grid or array.
        row = image[:, :, 0][int(np.argmax((image[:, :, 0] > 0).sum(axis=1)))]
        if (row > 0).sum() >= 6:
            needles[f"private image {i} row"] = row.tobytes()
        needles[f"private embedding row {i}"] = embedding_rows[i].astype(np.float32).tobytes()
    return needles


def _blobs_of(obj, out: list[bytes]) -> None:
    """Raw bytes of every tensor/array/bytes/str inside a (checkpoint-like) object."""
    if isinstance(obj, torch.Tensor):
        out.append(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        out.append(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (bytes, bytearray)):
        out.append(bytes(obj))
    elif isinstance(obj, str):
        out.append(obj.encode())
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _blobs_of(k, out)
            _blobs_of(v, out)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _blobs_of(v, out)
    elif hasattr(obj, "__dict__"):
        _blobs_of(vars(obj), out)


def _file_blobs(path: Path) -> list[bytes]:
    data = path.read_bytes()
    blobs = [data]
    if path.suffix == ".png":
        blobs.append(np.asarray(Image.open(io.BytesIO(data))).tobytes())
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            blobs += [npz[k].tobytes() for k in npz.files]
    elif path.suffix == ".ckpt":
        _blobs_of(torch.load(path, weights_only=False, map_location="cpu"), blobs)
    return blobs


def _leaks(root: Path, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for blob in _file_blobs(path):
            found += [f"{name} in {path.relative_to(root)}" for name, needle in needles.items() if needle in blob]
    return found


def test_a_fit_with_every_callback_writes_nothing_private(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = tmp_path / "root"
    private_dir = tmp_path / "private"
    dm = tiny_datamodule(120)
    recorder = RecordingLogger()
    wandb_logger = WandbLogger(project="pe_leak_test", save_dir=str(root), offline=True)
    model = tiny_model(iterations=2, private_state_dir=str(private_dir), save_png=True)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, default_root_dir=str(root), logger=[recorder, wandb_logger],
        enable_model_summary=False,
        callbacks=[*(make() for make in CALLBACKS.values()), ModelCheckpoint(dirpath=str(root / "checkpoints"), save_last=True, every_n_epochs=1)],
    )
    trainer.fit(model, datamodule=dm)
    import wandb

    wandb.finish()

    key = NoiseKeyStore(private_dir / "noise_keys").load(model.run_id)
    assert key is not None and key.key_id == model.noise_record[-1]["key_id"]
    private = dm.private_images
    embedding = PixelEmbedding(size=14)
    embedding.setup(device=torch.device("cpu"))
    rows = embedding.embed(private, batch_size=64).numpy()
    needles = _needles(private, rows, key.secret)

    # Files: the output root holds the populations, grids, snapshots, checkpoints and the W&B run.
    assert list(root.rglob("*.ckpt")) and list(root.rglob("*.png")) and list(root.rglob("population.npz"))
    assert (root / "summary.json").is_file()
    assert list((root / "wandb").rglob("*.wandb")), "the W&B run must be written (offline) so that it is searched"
    assert _leaks(root, needles) == []
    assert not list(root.rglob("embedding_cache")) and not list(root.rglob("*.key"))
    # The private side holds the cache and the key, outside the root.
    assert list((private_dir / "embedding_cache").glob("private-*.npy")) and list((private_dir / "noise_keys").glob("*.key"))
    assert oct(os.stat(NoiseKeyStore(private_dir / "noise_keys").path(model.run_id)).st_mode & 0o777) == "0o600"

    # Everything any logger received.
    logged = pickle.dumps((recorder.metrics, recorder.hparams))
    blobs: list[bytes] = [logged]
    _blobs_of((recorder.metrics, recorder.hparams), blobs)
    assert recorder.metrics, "the recording logger saw nothing"
    assert [name for name, needle in needles.items() if any(needle in b for b in blobs)] == []
    # The module's hyperparameters are public: no key in them.
    assert key.secret.hex() not in str(dict(model.hparams))


def test_the_search_finds_a_private_image_written_on_purpose(tmp_path):
    """Positive control: the same search flags a private image in a PNG, an npz and a checkpoint."""
    dm = tiny_datamodule(30)
    dm.setup("fit")
    private = dm.private_images
    needles = _needles(private, np.zeros((len(private), 4), np.float32) + 0.123, b"k" * 32)
    Image.fromarray(private[5][:, :, 0]).save(tmp_path / "leak.png")
    np.savez(tmp_path / "leak.npz", images=private[7:8])
    torch.save({"state": {"x": torch.from_numpy(private[9])}}, tmp_path / "leak.ckpt")
    found = _leaks(tmp_path, needles)
    assert any("private image 5 " in f + " " and "leak.png" in f for f in found), found
    assert any(f.startswith("private image 7 ") and "leak.npz" in f for f in found), found
    assert any(f.startswith("private image 9 ") and "leak.ckpt" in f for f in found), found
