"""One budget, one place: the PrivacyAccountant's (epsilon, delta), which the planner plans from.

Issue 25's two bugs, reproduced with a real accountant (never a hand-set sigma):

1. a planned model given another epsilon than the accountant ran to the end with settings
   planned for the wrong noise (the guard read ``noise_multiplier`` before anything stated it);
2. a resume that asked for more iterations, or a larger budget, was refused with "the
   calibrated noise multiplier ... differs from the plan's" instead of doing what
   ``PrivateEvolution`` does (``PrivacyBudgetExceededError``, or a re-plan from the remaining budget).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pe_lightning import DrawText, PixelEmbedding
from pe_lightning.callbacks import PrivacyAccountant, PrivacyBudgetExceededError
from pe_lightning.cli import main
from pe_lightning.errors import ConfigError
from pe_lightning.planner import PlannedPrivateEvolution
from pe_lightning.privacy import PrivacyLedger, noise_multiplier
from pe_testing import tiny_datamodule, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "mnist_drawtext.yaml")


def _planned(**overrides) -> PlannedPrivateEvolution:
    kwargs = dict(api=DrawText(image_size=28), embedding=PixelEmbedding(size=14), epsilon=1.0, delta=1e-5,
                  approx_private_size=120, num_classes=10, final_samples_per_class=10, lookahead_degree=2, save_png=False)
    kwargs.update(overrides)
    return PlannedPrivateEvolution(**kwargs)


def _tiny(tmp_path: Path, *more: str) -> list[str]:
    """The demo config at tiny size (10 released per class, 120 private digits), no logger, outputs in tmp_path."""
    return ["--config", DEMO, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'out'}", "--model.init_args.final_samples_per_class=10",
            "--model.init_args.approx_private_size=120", "--model.init_args.lookahead_degree=2",
            "--model.init_args.save_png=false", "--data.init_args.num_private=120", *more]


def _accountant_state(ckpt: Path) -> dict:
    state = torch.load(ckpt, weights_only=False)["callbacks"]
    (acc,) = [v for k, v in state.items() if k.startswith("PrivacyAccountant")]
    return acc


def test_the_plan_follows_the_sigma_the_accountant_uses(tmp_path):
    """T = 3 at epsilon = 1: threshold and voted-population sizes come from the accountant's sigma."""
    model = _planned(iterations=3)
    accountant = PrivacyAccountant(epsilon=1.0, delta=1e-5)
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[accountant]).fit(model, datamodule=tiny_datamodule(120))
    used = {r["noise_multiplier"] for r in model.noise_record}
    assert used == {noise_multiplier(epsilon=1.0, iterations=3, delta=1e-5)}
    (sigma,) = used
    assert model.threshold == pytest.approx(model.plan.threshold_sigmas * sigma, rel=1e-12)
    assert model.plan.noise_multiplier == sigma
    assert accountant.ledger.epsilon == pytest.approx(1.0, rel=1e-6)


def test_a_model_budget_other_than_the_accountants_is_refused(tmp_path):
    """Bug 1 (Python): epsilon = 2 on the model, 1 on the accountant: refused before anything is spent."""
    accountant = PrivacyAccountant(epsilon=1.0, delta=1e-5)
    with pytest.raises(ValueError, match=r"epsilon=2.*PrivacyAccountant.*epsilon=1"):
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[accountant]).fit(_planned(epsilon=2.0), datamodule=tiny_datamodule(120))
    assert len(accountant.ledger) == 0


def test_the_cli_refuses_a_second_epsilon_that_disagrees(tmp_path):
    """Bug 1 (command line): --model.init_args.epsilon 2 with the accountant at 1 ran to rc 0; now one line, nothing run."""
    with pytest.raises(ConfigError, match=r"model.init_args.epsilon=2.* PrivacyAccountant's epsilon=1"):
        main(["fit", *_tiny(tmp_path, "--model.init_args.epsilon=2")])
    assert not (tmp_path / "out").exists()


def test_the_budget_flags_set_the_accountant_and_the_plan(tmp_path):
    """--epsilon / --delta: stated once; the accountant spends it and the planner plans from its sigma."""
    cli = main(["fit", *_tiny(tmp_path, "--epsilon=2", "--delta=1e-6")])
    (accountant,) = [c for c in cli.trainer.callbacks if isinstance(c, PrivacyAccountant)]
    assert (accountant.epsilon, accountant.delta) == (2.0, 1e-6)
    sigma = noise_multiplier(epsilon=2.0, iterations=cli.model.iterations, delta=1e-6)
    assert [r["noise_multiplier"] for r in cli.model.noise_record] == [sigma] * cli.model.iterations
    assert cli.model.threshold == pytest.approx(cli.model.plan.threshold_sigmas * sigma, rel=1e-12)
    assert accountant.ledger.epsilon == pytest.approx(2.0, rel=1e-6)
    saved = (tmp_path / "out" / "config.yaml").read_text()  # the run's config states the budget once
    assert saved.count("epsilon: 2.0") == 1 and "epsilon: null" in saved


def test_budget_flags_need_an_accountant(tmp_path):
    with pytest.raises(ConfigError, match="--epsilon.*PrivacyAccountant"):
        main(["--config", str(ROOT / "configs" / "mnist_classifier.yaml"), "--epsilon=2"], run=False)


@pytest.mark.slow
def test_resume_asking_for_more_re_plans_or_refuses_like_private_evolution(tmp_path):
    """Bug 2: a finished T = 1 run resumed with T = 2 on the same budget is refused by the accountant
    (PrivacyBudgetExceededError); with a larger budget it re-plans from the remaining budget."""
    main(["fit", *_tiny(tmp_path)])
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    before = _accountant_state(ckpt)["ledger"]
    assert len(before["noise_multipliers"]) == 1

    with pytest.raises(PrivacyBudgetExceededError, match="set a new, larger budget"):
        main(["fit", *_tiny(tmp_path, "--model.init_args.iterations=2", "--ckpt_path=last")])
    assert _accountant_state(ckpt)["ledger"] == before

    cli = main(["fit", *_tiny(tmp_path, "--model.init_args.iterations=2", "--epsilon=2", "--ckpt_path=last")])
    sigmas = [r["noise_multiplier"] for r in cli.model.noise_record]
    assert sigmas[0] == before["noise_multipliers"][0] and len(sigmas) == 2
    total = PrivacyLedger(delta=1e-5)
    for t, sigma in enumerate(sigmas, start=1):
        total.record(iteration=t, noise_multiplier=sigma)
    assert total.epsilon == pytest.approx(2.0, rel=1e-6) and total.epsilon <= 2.0 * (1 + 1e-9)
    assert cli.model.threshold == pytest.approx(cli.model.plan.threshold_sigmas * sigmas[1], rel=1e-12)  # planned from the sigma used


def test_the_checkpoint_keeps_no_second_copy_of_the_budget(tmp_path):
    """LightningCLI re-applies a checkpoint's hyperparameters (``test --ckpt_path``): the budget must not be among them."""
    model = _planned(epsilon=2.0)
    assert "epsilon" not in model.hparams and "delta" not in model.hparams
    assert model.hparams["approx_private_size"] == 120
