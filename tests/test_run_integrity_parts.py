"""The parts of run integrity, in process: the output-root lock, the final stage, the run fingerprint,
errors that name the file, atomic checkpoints, an unreadable last.ckpt (docs/resume.md)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pe_lightning import final_stage
from pe_lightning.atomic import atomic_write, names_file, remove_stale_temporaries
from pe_lightning.callbacks import PrivacyAccountant
from pe_lightning.checkpoint_io import AtomicCheckpointIO
from pe_lightning.checkpoints import is_readable
from pe_lightning.population import Population
from pe_lightning.privacy import PrivacyLedger
from pe_lightning.run_fingerprint import ResumeMismatchError, check_resume, differences, run_fingerprint
from pe_lightning.run_lock import LOCK_FILE, OutputRootInUseError, RunLock, fresh_version
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- the lock
def test_a_held_root_refuses_naming_the_holder_and_is_free_again_after_release(tmp_path):
    with RunLock(tmp_path) as lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(OutputRootInUseError, match=rf"pid {os.getpid()} on host {socket.gethostname()}.*--new_version"):
            RunLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(RuntimeError, match="boom"):
        with RunLock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_FILE).exists()  # released on an error too


def test_a_stale_lock_is_taken_over_but_one_from_another_host_or_a_live_process_is_not(tmp_path):
    lock_file = tmp_path / LOCK_FILE
    lock_file.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": None}))
    with RunLock(tmp_path):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    # A live pid whose process started at another time is a reused pid: stale.
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "1"}))
    with RunLock(tmp_path):
        pass
    for other in ({"pid": dead_pid(), "host": "elsewhere", "started": None},
                  {"pid": os.getppid(), "host": socket.gethostname(), "started": None}):
        lock_file.write_text(json.dumps(other))
        with pytest.raises(OutputRootInUseError, match=f"pid {other['pid']} on host {other['host']}"):
            RunLock(tmp_path).acquire()
        assert json.loads(lock_file.read_text()) == other


def test_fresh_versions_are_numbered_and_never_shared(tmp_path):
    assert fresh_version(tmp_path) == tmp_path / "version_0"
    assert fresh_version(tmp_path) == tmp_path / "version_1"
    assert (tmp_path / "version_1").is_dir()


# --------------------------------------------------------------------- errors and temporaries
def test_an_oserror_without_a_file_is_reraised_naming_the_file(tmp_path):
    with pytest.raises(OSError) as info:
        with names_file(tmp_path / "x.png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "x.png")
    assert str(tmp_path / "x.png") in str(info.value)
    with pytest.raises(FileNotFoundError) as info:  # one that names its file passes unchanged
        with names_file(tmp_path / "x.png"):
            open(tmp_path / "missing" / "y")
    assert info.value.filename.endswith("y")
    with pytest.raises(OSError, match="summary.json"):
        atomic_write(tmp_path / "summary.json", lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    assert os.listdir(tmp_path) == []


def test_only_the_temporaries_of_atomic_writes_are_removed(tmp_path):
    keep = [".hidden", "a.tmp", ".a.tmp", ".pe_lightning.lock", "summary.json", ".x.short.tmp"]
    stale = [".summary.json.ab_cd123.tmp", ".final.k9x_2mzq.tmp", ".final.old"]
    for name in keep + stale:
        (tmp_path / name).mkdir() if "final" in name else (tmp_path / name).write_text("")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


# ----------------------------------------------------------------------------- the final stage
def population(seed: int) -> Population:
    rng = np.random.default_rng(seed)
    return Population(images=rng.integers(0, 255, (6, 4, 4, 1), dtype=np.uint8), labels=np.array([0, 1, 0, 1, 0, 1]),
                      conditions={"c": np.arange(6)})


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_final_folder_is_written_once_whole_and_rewritten_only_for_another_population(tmp_path):
    final, pop = tmp_path / "final", population(0)
    assert final_stage.write_final(final, population=pop, class_names=["a", "b"], iteration=3, png=True)
    first = snapshot(final)
    assert {"population.npz", "manifest.json", "images/a/000000.png", "images/b/000005.png"} <= set(first)
    assert final_stage.final_is_complete(final, population=pop, iteration=3, png=True)
    assert not final_stage.write_final(final, population=pop, class_names=["a", "b"], iteration=3, png=True)
    assert snapshot(final) == first
    for other in (dict(population=population(1), iteration=3, png=True), dict(population=pop, iteration=4, png=True),
                  dict(population=pop, iteration=3, png=False)):
        assert not final_stage.final_is_complete(final, **other)
    assert final_stage.write_final(final, population=population(1), class_names=["a", "b"], iteration=3, png=True)
    assert snapshot(final) != first and os.listdir(tmp_path) == ["final"]


def test_a_failed_final_write_keeps_the_previous_folder_and_leaves_no_temporary(tmp_path, monkeypatch):
    final = tmp_path / "final"
    final_stage.write_final(final, population=population(0), class_names=["a", "b"], iteration=1, png=True)
    before = snapshot(final)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*population\.npz'"):
        final_stage.write_final(final, population=population(1), class_names=["a", "b"], iteration=2, png=True)
    assert snapshot(final) == before and os.listdir(tmp_path) == ["final"]


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoints_are_written_atomically_and_a_full_disk_names_the_file(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, path)
    good = path.read_bytes()
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match=r"No space left on device: '.*last\.ckpt'"):
        io.save_checkpoint({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == good and os.listdir(path.parent) == ["last.ckpt"]


def test_an_unreadable_last_checkpoint_is_replaced_not_shadowed(tmp_path):
    """Resumed from a checkpoint written in another folder (Lightning keeps no claim on this folder's last.ckpt)."""
    first = tmp_path / "first"
    trainer = tiny_trainer(first, max_steps=1, enable_checkpointing=True,
                           callbacks=[ModelCheckpoint(dirpath=first / "ckpt", save_last=True)])
    trainer.fit(tiny_model(noise_multiplier=2.0), datamodule=tiny_datamodule(100))
    folder = tmp_path / "second" / "ckpt"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes((first / "ckpt" / "last.ckpt").read_bytes()[:1000])  # truncated
    model = tiny_model(noise_multiplier=2.0)
    tiny_trainer(tmp_path / "second", enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=folder, save_last=True)]).fit(
        model, datamodule=tiny_datamodule(100), ckpt_path=str(first / "ckpt" / "last.ckpt"))
    assert sorted(p.name for p in folder.glob("last*.ckpt")) == ["last.ckpt"]
    assert is_readable(folder / "last.ckpt")[0]
    assert torch.load(folder / "last.ckpt", weights_only=False)["private_evolution"]["iteration"] == 2


# ----------------------------------------------------------------------------- the run fingerprint
def test_the_fingerprint_is_public_configuration_and_names_what_changed():
    dm = tiny_datamodule(150)
    model = tiny_model()
    recorded = model.fingerprint(dm)
    dm.setup("fit")
    text = json.dumps(recorded)
    assert dm.fingerprint not in text and "private_images" not in text  # no digest of the private data
    assert recorded == model.fingerprint(dm)  # loading the data changes nothing
    assert recorded["data"]["args"] == {"test_size": 1000, "split_seed": 0, "num_private": 150}
    changed = tiny_model(num_samples_per_class=7, privacy_unit="client").fingerprint(tiny_datamodule(120, batch_size=7))
    assert [d[0] for d in differences(recorded, changed)] == ["data.num_private", "num_samples.per_class", "privacy_unit"]
    with pytest.raises(ResumeMismatchError, match=r"different data\.num_private, num_samples\.per_class, privacy_unit "):
        check_resume(recorded, changed, accept_changes=False)
    assert check_resume(recorded, changed, accept_changes=True)[0] == "data.num_private: checkpoint 150, this run 120"
    assert check_resume(None, changed, accept_changes=False) == []  # a checkpoint from before fingerprints
    assert run_fingerprint(datamodule=dm, api=model.api, embedding=model.embedding, num_samples={}, privacy_unit="sample")[
        "embedding"]["args"] == model.embedding.config()


def test_a_resume_with_other_data_is_refused_unless_accepted_and_then_noted_in_the_ledger(tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer = tiny_trainer(tmp_path, max_steps=1, enable_checkpointing=True,
                           callbacks=[PrivacyAccountant(epsilon=2.0), ModelCheckpoint(dirpath=ckpt, save_last=True)])
    trainer.fit(tiny_model(), datamodule=tiny_datamodule(100))
    with pytest.raises(ResumeMismatchError, match=r"different data\.num_private \(data\.num_private: checkpoint 100, this run 90\)"):
        tiny_trainer(tmp_path / "r", callbacks=[PrivacyAccountant(epsilon=2.0)]).fit(
            tiny_model(), datamodule=tiny_datamodule(90), ckpt_path=str(ckpt / "last.ckpt"))
    accountant = PrivacyAccountant(epsilon=2.0)
    tiny_trainer(tmp_path / "r", callbacks=[accountant]).fit(
        tiny_model(accept_changed_resume=True), datamodule=tiny_datamodule(90), ckpt_path=str(ckpt / "last.ckpt"))
    assert accountant.ledger.notes == [
        "resumed with a changed configuration (accept_changed_resume): data.num_private: checkpoint 100, this run 90"]
    assert len(accountant.ledger) == 2


def test_ledger_notes_are_state_and_older_states_load():
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record(iteration=1, noise_multiplier=2.0)
    ledger.add_note("x")
    again = PrivacyLedger(delta=1e-5)
    again.load_state_dict(json.loads(json.dumps(ledger.state_dict())))
    assert again.notes == ["x"] and again.epsilon == ledger.epsilon
    old = {k: v for k, v in ledger.state_dict().items() if k != "notes"}
    again.load_state_dict(old)
    assert again.notes == [] and len(again) == 1
    with pytest.raises(ValueError, match="non-empty"):
        ledger.add_note(" ")


def test_a_run_resumed_to_finish_its_final_write_summarises_every_iteration(tmp_path, monkeypatch):
    from pe_lightning.callbacks import FIDCallback, RunSummary
    from pe_lightning.embeddings import PixelEmbedding

    def callbacks():
        return [PrivacyAccountant(epsilon=2.0), FIDCallback(feature=PixelEmbedding(size=14), name="pixel"), RunSummary(plot=False),
                ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)]

    with monkeypatch.context() as patched:  # the final write fails (a full disk)
        patched.setattr(final_stage, "write_png_tree", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(OSError, match="full"):
            tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=callbacks()).fit(
                tiny_model(save_png=True), datamodule=tiny_datamodule(120))
    assert not (tmp_path / "final").exists() and not (tmp_path / "summary.json").exists()
    tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=callbacks()).fit(
        tiny_model(save_png=True), datamodule=tiny_datamodule(120), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert (tmp_path / "final" / "images").is_dir()
    data = json.loads((tmp_path / "summary.json").read_text())
    assert [r["iteration"] for r in data["per_iteration"]] == [0, 1, 2]
    assert data["fid"]["key"] == "fid/pixel" and data["fid"]["final"] == data["per_iteration"][2]["fid/pixel"] > 0
    assert data["privacy"]["epsilon"] == pytest.approx(2.0) and data["iterations_completed"] == 2
    assert {"final_population", "final_images"} <= set(data["outputs"])
