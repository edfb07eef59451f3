"""Nothing private is written anywhere a run writes: a fit with every shipped callback, searched.

Private means: the private images (exact bytes, a distinctive row of each, and the
pixel-embedding row the module votes with) and the run's secret noise key (bytes and
hex). Searched: every value any logger received (a recording logger beside W&B), every
file under the output root (raw bytes, decoded PNGs, every array of every ``.npz``),
every tensor and array inside the checkpoints, and the W&B run's files. A positive
control writes one private image on purpose and checks that the same search finds it.

The CLI test (issue 21, docs/privacy.md) also searches the console of two CLI runs and
everything under their output roots for digests of the private data, private counts and
the values of non-DP metrics, each with a positive control.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from PIL import Image

import pe_lightning.callbacks as pe_callbacks
from pe_lightning import PixelEmbedding
from pe_lightning.data import ImageFolderDataModule
from pe_lightning.embedding_cache import EmbeddingCache
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
    # Every digest the code computes of the private data, as every prefix of 8 or more hex digits.
    cache_name = EmbeddingCache(private_dir / "embedding_cache").key(data_fingerprint=dm.fingerprint, embedding_fingerprint=embedding.fingerprint)
    for name, digest in (("data fingerprint", dm.fingerprint), ("cache entry", cache_name)):
        needles.update({f"{name} prefix {p.decode()}": p for p in _hex_prefixes(digest)})

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


# ------------------------------------------------------------------------------------------
# The CLI, as a new user runs it (issue 21): an image folder without test_dir, so the
# held-out split is carved out of the private folder; an offline W&B run; two runs on one
# private side, so the second reads the private-embedding cache. Searched: stdout and stderr
# of both processes and every file under both output roots (W&B output.log, .wandb,
# config.yaml, summary.json, checkpoints included) for the private images and their
# pixel-embedding rows, every >= 8-hex-digit prefix of every digest the code computes of the
# private data, the private counts next to words that name them, and the values of the
# non-DP metrics (read back from the private-side report). Each search has a positive control.

#: Images per class folder; with test_fraction 0.25 the private counts are 86, 98, 80 (264) and
#: the carved held-out split 29, 33, 27 (89): numbers no public setting or count of the run
#: takes (the populations hold 24 images, so every stage's public count is at most 24).
FOLDER_COUNTS = {"cat": 115, "dog": 131, "emu": 107}
TEST_FRACTION = 0.25
#: Words a private count would sit next to in a message.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COUNT_WORDS = r"private|held|test|split|images|samples|class|cat|dog|emu|embedding|voting"
#: Metric names of the DP release and of public quantities (``diag/``, ``pe/``, ``time/``, ``privacy/``), not searched for count words.
PUBLIC_METRIC_NAME = re.compile(r"(?<![\w/])(?:diag|pe|time|privacy)/[A-Za-z0-9_/]+")


def _cli_config(folder: Path) -> dict:
    pixel = {"class_path": "pe_lightning.embeddings.PixelEmbedding"}
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1,
            "logger": {"class_path": "pe_lightning.loggers.WandbLogger", "init_args": {"project": "pe_leak", "offline": True}},
            "callbacks": [
                {"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": 2.0, "delta": 1e-5}},
                {"class_path": "pe_lightning.callbacks.FIDCallback", "init_args": {"feature": pixel, "name": "pixel"}},
                {"class_path": "pe_lightning.callbacks.FIDCallback",
                 "init_args": {"feature": pixel, "name": "onprivate", "real_split": "private"}},
                {"class_path": "pe_lightning.callbacks.PrecisionRecall", "init_args": {"feature": pixel, "k": 3}},
                {"class_path": "pe_lightning.callbacks.DownstreamEvaluation", "init_args": {"max_epochs": 1, "val_fraction": 0.0}},
                {"class_path": "pe_lightning.callbacks.SampleGrid", "init_args": {"samples_per_class": 3}},
                {"class_path": "pe_lightning.callbacks.PopulationSnapshot", "init_args": {"png": True}},
                # A live display on a "terminal": every frame goes to stderr, where the test reads it.
                {"class_path": "pe_lightning.callbacks.PEProgressBar",
                 "init_args": {"refresh_per_second": 50.0, "console_kwargs": {"force_terminal": True, "width": 400}}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True, "every_n_epochs": 1}},
            ],
        },
        "model": {
            "class_path": "pe_lightning.PrivateEvolution",
            "init_args": {
                "iterations": 2, "num_samples_per_class": 8, "variation_degrees": [0.5, 0.3], "lookahead_degree": 2,
                "threshold": 0.0, "save_png": True, "api_batch_size": 32,
                "api": {"class_path": "pe_lightning.apis.DrawText", "init_args": {"image_size": 28}},
                "embedding": pixel,
            },
        },
        "data": {"class_path": "pe_lightning.data.ImageFolderDataModule",
                 # One private index per voting batch: a batch count is the private set's size.
                 "init_args": {"private_dir": str(folder), "test_fraction": TEST_FRACTION, "channels": 1, "batch_size": 1}},
    }


def _write_gray_folder(root: Path) -> Path:
    rng = np.random.default_rng(21)
    for name, n in FOLDER_COUNTS.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _all_parts(path: Path) -> list[bytes]:
    """The file's bytes, decoded PNG pixels, npz arrays, checkpoint tensors and zip members."""
    parts = _file_blobs(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            parts += [z.read(name) for name in z.namelist()]
    return parts


def _hex_prefixes(digest: str) -> set[bytes]:
    return {digest[:n].encode() for n in range(8, len(digest) + 1)} | {digest[:n].upper().encode() for n in range(8, len(digest) + 1)}


def _count_patterns(counts: dict[str, int]) -> dict[str, re.Pattern]:
    """A private count as a number (not part of a word, a decimal or a path) within 60 characters of a word that names it.

    ``private embedding ━━━ 0/264`` and ``voting ━━━ 5/264`` match (the bar is 32 characters wide).
    """
    out = {}
    for name, n in counts.items():
        num = rf"(?<![\w.]){n}(?![\w.])"
        out[name] = re.compile(rf"(?i)(?:(?:{COUNT_WORDS})[^\n]{{0,60}}{num}|{num}[^\n]{{0,60}}(?:{COUNT_WORDS}))")
    return out


def _distinctive(value: float) -> bool:
    """A value with 4+ significant digits: one a public number (0.5, a degree, a timing) does not equal by chance."""
    mantissa = f"{value:.4g}".split("e")[0]
    return len(mantissa.replace("-", "").replace(".", "").lstrip("0")) >= 4


def _metric_patterns(values: dict[str, float]) -> dict[str, list[bytes | re.Pattern]]:
    """A metric value as the code could print or store it.

    The full ``repr`` or ``%.10g`` text (W&B and JSON store this), its float64 bytes, or the
    ``%.4g`` text the console prints after a metric's name (``fid/x=1234``, ``fid/x: 1234``,
    ``FID 1234``).
    """
    out = {}
    for name, v in values.items():
        short = re.escape(f"{v:.4g}".encode())
        named = rb"(?i)(?:(?:fid|pr/|downstream|acc|precision|recall|density|coverage)[^\s|=:]*[=:] ?|FID )" + short + rb"(?![\d])"
        out[name] = [repr(v).encode(), f"{v:.10g}".encode(), np.float64(v).tobytes(), re.compile(named)]
    return out


def _hits(blob: bytes, text: str, *, needles: dict[str, bytes], counts: dict[str, re.Pattern],
          metrics: dict[str, list]) -> list[str]:
    found = [name for name, needle in needles.items() if needle in blob]
    found += [f"count {name}" for name, pattern in counts.items() if pattern.search(text)]
    for name, forms in metrics.items():
        if any((f.search(blob) if isinstance(f, re.Pattern) else f in blob) for f in forms):
            found.append(f"metric {name}")
    return found


class _Search:
    """Everything the test looks for, and where."""

    def __init__(self, *, needles, counts, metrics, scrub: list[str]) -> None:
        self.needles, self.counts, self.metrics, self.scrub = needles, _count_patterns(counts), _metric_patterns(metrics), scrub

    def _text(self, blob: bytes) -> str:
        text = ANSI.sub("", blob.decode("utf-8", "replace"))
        for path in self.scrub:  # folder names of the test itself (pytest's numbered temp folders)
            text = text.replace(path, "<tmp>")
        # Names of the public metric families: their words ("..._min_class", "..._per_class") sat next to the
        # value of the metric before them on the console line, a DP-released count that the secret noise
        # sometimes made equal to a private count (a flaky hit that was no leak).
        return PUBLIC_METRIC_NAME.sub("<metric>", text)

    def in_text(self, text: str, where: str) -> list[str]:
        return [f"{hit} in {where}" for hit in _hits(text.encode("utf-8", "replace"), self._text(text.encode("utf-8", "replace")),
                                                    needles=self.needles, counts=self.counts, metrics=self.metrics)]

    def in_tree(self, root: Path) -> list[str]:
        found = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            for blob in _all_parts(path):
                # Counts are words and numbers: searched in text, and in W&B's run file (whose records hold the
                # console and the metrics as text); in other binary data digits sit next to anything by chance.
                text = self._text(blob) if path.suffix == ".wandb" or _is_text(blob) else ""
                found += [f"{hit} in {path.relative_to(root)}" for hit in
                          _hits(blob, text, needles=self.needles, counts=self.counts, metrics=self.metrics)]
        return sorted(set(found))


def _is_text(blob: bytes) -> bool:
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in blob


def _run_cli(config: Path, root: Path, private: Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_DIR", "XDG_CACHE_HOME")}
    env.update(PE_LIGHTNING_PRIVATE_DIR=str(private), WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1",
               HOME=str(cwd), TMPDIR=str(cwd))  # the W&B mode of this child only; never the network
    proc = subprocess.run([sys.executable, "-m", "pe_lightning", "fit", "--config", str(config),
                           f"--trainer.default_root_dir={root}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def test_the_cli_with_a_carved_test_split_and_offline_wandb_shows_nothing_private(tmp_path):
    folder = _write_gray_folder(tmp_path / "folder")
    private = tmp_path / "private_side"
    config = tmp_path / "pe.yaml"
    config.write_text(yaml.safe_dump(_cli_config(folder)))
    roots, logs = [tmp_path / "root1", tmp_path / "root2"], []
    for i, root in enumerate(roots):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        logs.append(_run_cli(config, root, private, cwd))

    # What the runs were given, from the test's side.
    dm = ImageFolderDataModule(private_dir=str(folder), test_fraction=TEST_FRACTION, channels=1)
    dm.setup("fit")
    assert dm.test_split_from_private
    images = np.concatenate([dm.private_images, dm.test_images])  # the carved split is private images too
    embedding = PixelEmbedding()
    embedding.setup(device=torch.device("cpu"))
    rows = embedding.embed(images, batch_size=64).numpy()
    needles = {k: v for k, v in _needles(images, rows, b"").items() if v}
    cache = EmbeddingCache(private / "embedding_cache")
    assert cache.key_path.is_file() and oct(os.stat(cache.key_path).st_mode & 0o777) == "0o600"
    digests = {"data fingerprint": dm.fingerprint,
               "cache entry": cache.key(data_fingerprint=dm.fingerprint, embedding_fingerprint=embedding.fingerprint),
               # the name an unsalted cache gave the entry before issue 21: recomputable by anyone with the data
               "unsalted cache digest": hashlib.sha256(f"{dm.fingerprint}/{embedding.fingerprint}".encode()).hexdigest()}
    assert [p.name for p in cache.directory.glob("private-*.npy")] == [f"private-{digests['cache entry']}.npy"]
    for name, digest in digests.items():
        needles.update({f"{name} prefix {p.decode()}": p for p in _hex_prefixes(digest)})
    counts = {"private set": len(dm.private_images), "held-out split": len(dm.test_images), "folder": len(images)}
    names = dm.class_names
    counts.update({f"private {names[c]}": int(n) for c, n in enumerate(np.bincount(dm.private_labels))})
    counts.update({f"held-out {names[c]}": int(n) for c, n in enumerate(np.bincount(dm.test_labels))})
    counts.update({f"folder {name}": n for name, n in FOLDER_COUNTS.items()})
    assert min(counts.values()) >= 10, counts  # two digits at least: a count the search can tell from noise

    # The non-DP metrics went to the private-side report (and nowhere else: searched below).
    reports = sorted((private / "runs").glob("*/metrics.json"))
    assert len(reports) == 2, reports
    metrics: dict[str, float] = {}  # searched: every distinctive value (precision/recall of noise images are often 0 or 1)
    keys = set()
    for path in reports:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        for entry in json.loads(path.read_text())["entries"]:
            values = {k: v for k, v in entry.items() if k not in ("stage", "iteration")}
            keys |= set(values)
            metrics.update({f"{path.parent.name} it{entry['iteration']} {k}": v for k, v in values.items() if _distinctive(v)})
    assert {"fid/pixel_private_not_dp", "fid/onprivate_private_not_dp", "downstream/test_acc_private_not_dp",
            "pr/precision_private_not_dp", "pr/coverage_private_not_dp"} <= keys, keys
    assert {k.split(" ")[-1] for k in metrics} >= {"fid/pixel_private_not_dp", "fid/onprivate_private_not_dp"}

    search = _Search(needles=needles, counts=counts, metrics=metrics, scrub=[str(tmp_path)])
    # The runs did what they are searched for: W&B files, checkpoints, PNGs; the second read the cache.
    for root in roots:
        assert list(root.rglob("output.log")) and list(root.rglob("*.wandb")) and list(root.rglob("*.ckpt"))
        assert (root / "config.yaml").is_file() and (root / "summary.json").is_file() and list(root.rglob("*.png"))
        assert not any(p.name.startswith(("fid", "pr")) for p in root.rglob("*"))
        summary = json.loads((root / "summary.json").read_text())
        assert summary["fid"]["key"] is None and summary["downstream_test_acc"] is None  # not shown by default
    for log in map(lambda text: ANSI.sub("", text), logs):
        assert f"private-embedding cache (derived from private images; keep private): {private / 'embedding_cache'}" in log
        assert "metrics against private images (not DP) are kept on the private side" in log
        assert ": voting" in ANSI.sub("", log)  # a private stage was displayed (without counts)

    found = [hit for i, log in enumerate(logs) for hit in search.in_text(log, f"console of run {i + 1}")]
    for root in roots:
        found += search.in_tree(root)
    assert found == [], found[:40]

    # Positive controls: the same search finds each kind of thing when it is planted.
    planted = tmp_path / "planted"
    planted.mkdir()
    Image.fromarray(dm.private_images[3][:, :, 0]).save(planted / "leak.png")
    np.savez(planted / "leak.npz", rows=rows[len(dm.private_images) + 2 : len(dm.private_images) + 3])
    (planted / "output.log").write_text(f"[PE] private embeddings read from the cache /x/private-{digests['cache entry'][:24]}.npy\n")
    (planted / "run.wandb").write_bytes(os.urandom(64) + digests["data fingerprint"][:8].encode() + os.urandom(64))
    value_key, value = next(iter(metrics.items()))
    (planted / "summary.json").write_text(json.dumps({"fid": {"final": value}}))
    tree = search.in_tree(planted)
    assert any(h.startswith("private image 3 ") and "leak.png" in h for h in tree), tree
    assert any(h.startswith(f"private embedding row {len(dm.private_images) + 2} ") and "leak.npz" in h for h in tree), tree
    assert any("cache entry prefix" in h and "output.log" in h for h in tree), tree
    assert any("data fingerprint prefix" in h and "run.wandb" in h for h in tree), tree
    assert any(h.startswith(f"metric {value_key} ") and "summary.json" in h for h in tree), tree
    n, held, bar = len(dm.private_images), len(dm.test_images), "━" * 32  # the display's bar width
    planted_lines = {  # each line of the console before issue 21, as it would read for this data
        f"  start-up: private embedding {bar} 0/{n}": "count private set",
        f"  iteration 1: voting {bar} 17/{n}": "count private set",
        f"[downstream] small_cnn trained 1 epochs on 24 synthetic images: test accuracy 0.5 on {held} real held-out images":
            "count held-out split",
        f"class {names[1]!r}: {counts['private ' + names[1]]} private images": f"count private {names[1]}",
        f"[PE] iteration 2/2 | {value_key.split(' ')[-1]}={value:.4g}": f"metric {value_key}",
        f"[PE]   {value_key.split(' ')[-1]}: {value:.4g} at iteration 0": f"metric {value_key}",
    }
    for line, expected in planted_lines.items():
        hits = search.in_text(line, "planted console")
        assert any(h.startswith(expected + " ") for h in hits), (line, expected, hits)
