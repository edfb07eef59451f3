"""Real processes: DDP on 2 CPU processes (gloo) vs 1, and SIGKILL + resume through the CLI.

DDP and killed runs have their own processes (``run_cli``); the 1-process references and the resumes run
through the CLI's entry point in the session's long-lived CLI process (tests/cli_worker.py, ``fit``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_config(path: Path, *, out: Path, iterations: int = 3, epsilon: float = 2.0, callbacks=(), num_private: int = 151,
                 noise_key_file: Path | None = None, model_args: dict | None = None) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": iterations, "accelerator": "cpu", "devices": 1, "logger": False,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(out),
            "callbacks": [
                {"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": epsilon, "delta": 1e-5}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(out / "checkpoints"), "save_last": True, "every_n_epochs": 1}},
                *callbacks,
            ],
        },
        "model": {
            "class_path": "pe_lightning.PrivateEvolution",
            "init_args": {
                "iterations": iterations, "num_samples_per_class": 9, "variation_degrees": 0.4, "lookahead_degree": 2,
                "threshold": 0.5, "seed": 3, "api_batch_size": 20, "output_dir": str(out), "save_png": False,
                "reuse_lookahead": True,
                **({"noise_key_file": str(noise_key_file)} if noise_key_file else {}),
                "api": {"class_path": "pe_lightning.apis.DrawText", "init_args": {"image_size": 28}},
                "embedding": {"class_path": "pe_lightning.embeddings.PixelEmbedding", "init_args": {"size": 14}},
                **(model_args or {}),
            },
        },
        "data": {"class_path": "pe_lightning.data.MNISTDataModule", "init_args": {"num_private": num_private, "batch_size": 32}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI child: instrumentation callbacks importable (``PYTHONPATH=tests``), no W&B, one thread."""
    return dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1", **extra)


def run_cli(config: Path, *args: str, cwd: Path, kill: bool = False, check: bool = True, fault: bool = False) -> subprocess.CompletedProcess:
    env = cli_env(PE_TEST_KILL="1" if kill else "0", PE_TEST_FAULT="1" if fault else "0")
    proc = subprocess.run([sys.executable, "-m", "pe_lightning", "fit", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def load_final(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "final" / "population.npz") as data:
        return {k: data[k] for k in data.files}


def ledger_state(out: Path) -> dict:
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("PrivacyAccountant")]
    return state


def ledger(out: Path) -> dict:
    return ledger_state(out)["ledger"]


def fit(cli_worker, config: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m pe_lightning fit --config <config> <args>`` in the session's CLI process (tests/cli_worker.py).

    ``check``: it must succeed. For runs that are not SIGKILLed, given a fault or started with DDP (``run_cli``).
    """
    return cli_worker.run(["fit", "--config", str(config), *args], cwd=cwd, check=check)


def test_ddp_on_two_processes_gives_the_same_votes_and_population_as_one(tmp_path, cli_worker):
    """Votes, final population, ledger, per-iteration FID and the downstream accuracy: 2 processes give the 1-process run.

    One pair of runs checks all of them (the 1-process run in the session's CLI process, tests/cli_worker.py;
    the DDP run in its own process, which starts its second rank).
    """
    recorder = lambda d: {"class_path": "pe_testing.VoteRecorder", "init_args": {"directory": str(d)}}  # noqa: E731
    metrics = [
        {"class_path": "pe_lightning.callbacks.FIDCallback",
         "init_args": {"feature": {"class_path": "pe_lightning.embeddings.PixelEmbedding"}, "name": "pixel"}},
        {"class_path": "pe_lightning.callbacks.DownstreamEvaluation", "init_args": {"max_epochs": 1, "val_fraction": 0.0}},
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    key = tmp_path / "shared.key"  # secret-noise mode; the same key for both runs (created by the first)
    out1 = fit(cli_worker, write_config(tmp_path / "one.yaml", out=one, callbacks=[recorder(one / "votes"), *metrics],
                                        noise_key_file=key), cwd=tmp_path)
    assert key.is_file()
    out2 = run_cli(write_config(tmp_path / "two.yaml", out=two, callbacks=[recorder(two / "votes"), *metrics], noise_key_file=key),
                   "--trainer.devices=2", "--trainer.strategy=ddp", cwd=tmp_path)
    text1, text2 = out1.stdout + out1.stderr, out2.stdout + out2.stderr
    assert "world_size: 2" in text2 or "GLOBAL_RANK: 1" in text2
    for t in (1, 2, 3):  # 151 private samples: the DistributedSampler pads one duplicate; it must not vote twice
        v1, v2 = np.load(one / "votes" / f"votes_{t}.npy"), np.load(two / "votes" / f"votes_{t}.npy")
        assert v1.shape == (151, 1) and (v1 >= 0).all()
        np.testing.assert_array_equal(v1, v2)
    a, b = load_final(one), load_final(two)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ledger(one) == ledger(two)
    assert {n["noise_mode"] for n in ledger_state(one)["noise_sources"]} == {"secret"}
    fid1, fid2 = _logged(text1, "fid/pixel"), _logged(text2, "fid/pixel")
    assert len(fid1) == 4 and len(fid2) == 4  # iterations 0, 1, 2, 3
    # Each rank adds its share of the feature sums; the all-reduced FID is the 1-process one.
    np.testing.assert_allclose(fid2, fid1, rtol=1e-4)
    acc1, acc2 = _logged(text1, "downstream/test_acc"), _logged(text2, "downstream/test_acc")
    assert len(acc1) == 1 and len(acc2) == 1 and 0.0 <= acc1[0] <= 1.0
    assert acc2 == acc1  # the same classifier, trained from the same seed on the same final population


def test_ddp_rank_selection_with_kept_parents_matches_one_process(tmp_path, cli_worker):
    """Selection 'rank', keep_selected, 2 variations per parent and the tone release: 2 processes give the 1-process run."""
    one, two, key = tmp_path / "one", tmp_path / "two", tmp_path / "shared.key"
    modes = ["--model.init_args.selection=rank", "--model.init_args.keep_selected=true", "--model.init_args.variations_per_parent=2",
             "--model.init_args.tone_share=0.1"]
    fit(cli_worker, write_config(tmp_path / "one.yaml", out=one, iterations=2, noise_key_file=key), *modes, cwd=tmp_path)
    run_cli(write_config(tmp_path / "two.yaml", out=two, iterations=2, noise_key_file=key), *modes,
            "--trainer.devices=2", "--trainer.strategy=ddp", cwd=tmp_path)
    a, b = load_final(one), load_final(two)
    assert len(a["images"]) == 90 and len(np.unique(a["parents"])) == 30
    # Matched to MNIST's peaks (the top bin); the secret noise lets a few noise-only bins through (up to 10 % seen).
    assert (a["images"].reshape(90, -1).max(axis=1) >= 248).mean() > 0.75
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ledger(one) == ledger(two)


def test_sigkill_mid_iteration_then_resume_matches_uninterrupted_run(tmp_path, cli_worker):
    """The killed run has its own process; the others (reference, resumes) run in the session's CLI process."""
    kill = {"class_path": "pe_testing.KillAt", "init_args": {"iteration": 3}}
    full, cut = tmp_path / "full", tmp_path / "cut"
    # The killed run keeps its secret key where it always does (the private dir, by run id) ...
    cfg = write_config(tmp_path / "cut.yaml", out=cut, iterations=4, callbacks=[kill])
    killed = run_cli(cfg, cwd=tmp_path, kill=True, check=False)
    assert killed.returncode == -9, (killed.stdout + killed.stderr)[-3000:]
    assert not (cut / "final").exists()
    assert len(ledger(cut)["noise_multipliers"]) == 2  # the checkpoint of iteration 2 is the last one
    ckpt = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)
    key = Path(os.environ["PE_LIGHTNING_PRIVATE_DIR"]) / "noise_keys" / f"{ckpt['private_evolution']['run_id']}.key"
    assert key.is_file()
    # ... and the uninterrupted reference is given that same key.
    fit(cli_worker, write_config(tmp_path / "full.yaml", out=full, iterations=4, callbacks=[kill], noise_key_file=key),
        cwd=tmp_path)
    fit(cli_worker, cfg, "--ckpt_path=last", cwd=tmp_path)  # finds its key again by run id
    a, b = load_final(full), load_final(cut)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert ledger(full) == ledger(cut)
    assert not list((cut / ".scratch").glob("*/*")), "no scratch files left behind"

    # Resuming the finished run spends nothing more and changes nothing.
    before = ledger(cut)
    proc = fit(cli_worker, cfg, "--ckpt_path=last", cwd=tmp_path)
    assert "[PE] iteration" not in proc.stdout + proc.stderr  # no iteration ran
    assert ledger(cut) == before
    np.testing.assert_array_equal(load_final(cut)["images"], a["images"])

    # More iterations on the same budget: refused, with a clear error; a new budget: allowed, total honest.
    more = ["--trainer.max_epochs=6", "--model.init_args.iterations=6"]
    refused = cli_worker.run(["fit", "--config", str(cfg), "--ckpt_path=last", *more], cwd=tmp_path)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "PrivacyBudgetExceededError" in said and "set a new, larger budget" in said, said[-3000:]
    assert ledger(cut) == before
    bigger = write_config(tmp_path / "bigger.yaml", out=cut, iterations=6, epsilon=3.0, callbacks=[kill])
    fit(cli_worker, bigger, "--ckpt_path=last", cwd=tmp_path)
    after = ledger(cut)["noise_multipliers"]
    assert after[:4] == before["noise_multipliers"] and len(after) == 6
    from pe_lightning.privacy import PrivacyLedger

    total = PrivacyLedger(delta=1e-5)
    for t, sigma in enumerate(after, start=1):
        total.record(iteration=t, noise_multiplier=sigma)
    assert total.epsilon == pytest.approx(3.0, rel=1e-6) and total.epsilon <= 3.0 * (1 + 1e-9)


def _logged(output: str, key: str) -> list[float]:
    """Values of ``key`` in the ``[PE] iteration ...`` lines, in order."""
    import re

    return [float(m) for m in re.findall(rf"\[PE\] iteration .*?{re.escape(key)}=([0-9.eE+-]+)", output)]
