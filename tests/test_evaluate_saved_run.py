"""Evaluating a saved run (checkpoint or population.npz) with the metric callbacks, without running PE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks import FIDCallback, PrecisionRecall, PrivacyAccountant
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]


def _metrics():
    return [FIDCallback(feature=PixelEmbedding(size=10), name="pixel"), PrecisionRecall(feature=PixelEmbedding(size=10), k=3)]


@pytest.mark.slow
def test_a_checkpoint_and_a_population_file_evaluate_to_the_fits_final_metrics(tmp_path):
    acc = PrivacyAccountant(epsilon=2.0)
    model = tiny_model()
    trainer = tiny_trainer(tmp_path, enable_checkpointing=True,
                           callbacks=[acc, *_metrics(), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    trainer.fit(model, datamodule=tiny_datamodule(120))
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("fid/", "pr/"))}
    assert set(final) >= {"fid/pixel", "pr/precision", "pr/recall", "pr/density", "pr/coverage"}
    spent = acc.ledger.epsilon

    for how in ("checkpoint", "population"):
        evaluator = tiny_model(**({"population_path": str(tmp_path / "final" / "population.npz")} if how == "population" else {}))
        accountant = PrivacyAccountant(epsilon=2.0)
        tester = tiny_trainer(tmp_path / how, callbacks=[accountant, *_metrics()])
        tester.test(evaluator, datamodule=tiny_datamodule(120),
                    ckpt_path=str(tmp_path / "ckpt" / "last.ckpt") if how == "checkpoint" else None)
        got = {k: float(v) for k, v in tester.callback_metrics.items() if k in final}
        assert got == pytest.approx(final, rel=1e-5), how
        # Evaluating spends nothing: the checkpoint's ledger comes back as it was, a population file has none.
        assert len(accountant.ledger) == (2 if how == "checkpoint" else 0)
        assert accountant.ledger.epsilon == (spent if how == "checkpoint" else 0.0)
    assert acc.ledger.epsilon == spent


def test_evaluating_without_a_population_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="nothing to evaluate: give a PE checkpoint"):
        tiny_trainer(tmp_path, callbacks=_metrics()).test(tiny_model(), datamodule=tiny_datamodule(60))


@pytest.mark.slow
def test_the_cli_test_subcommand_evaluates_a_checkpoint(tmp_path, cli_worker):
    """``fit`` then ``test`` through the CLI's entry point (the session's CLI process, tests/cli_worker.py)."""
    common = ["--config", str(ROOT / "configs" / "mnist_drawtext.yaml"), "--trainer.logger=false",
              "--trainer.default_root_dir", str(tmp_path / "out"), "--model.init_args.iterations=1",
              "--model.init_args.num_samples_per_class=20", "--data.init_args.num_private=300"]
    cli_worker.run(["fit", *common], cwd=tmp_path, check=True)
    test = cli_worker.run(["test", *common, "--ckpt_path", str(tmp_path / "out" / "checkpoints" / "last.ckpt")], cwd=tmp_path)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-3000:]
    assert "[PE] evaluation of the population of iteration 1" in out and "fid/pixel=" in out
    assert "[PE] iteration" not in out  # nothing ran again
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)["private_evolution"]["iteration"] == 1
