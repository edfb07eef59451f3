"""The two Lightning workarounds (pe_lightning.lightning_compat): these fail loudly if a Lightning upgrade breaks them."""

from __future__ import annotations

import inspect

from lightning.pytorch.strategies import DDPStrategy

from pe_lightning.lightning_compat import count_iteration_as_step, skip_ddp_wrapping
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


def test_ddp_wraps_the_module_in_configure_ddp_which_we_replace():
    assert callable(getattr(DDPStrategy, "configure_ddp", None)), "DDPStrategy.configure_ddp is gone: update skip_ddp_wrapping"
    assert "configure_ddp" in inspect.getsource(DDPStrategy.setup), "DDPStrategy.setup no longer calls configure_ddp"
    strategy = DDPStrategy()
    skip_ddp_wrapping(strategy)
    assert strategy.configure_ddp() is None


def test_each_iteration_counts_as_one_step(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(tiny_model(noise_multiplier=1.0), datamodule=tiny_datamodule(60))
    assert trainer.global_step == 2, "global_step no longer counts manual-optimization steps: update count_iteration_as_step"
    before = trainer.global_step
    count_iteration_as_step(trainer)
    assert trainer.global_step == before + 1


def test_max_steps_stops_after_that_many_iterations(tmp_path):
    model = tiny_model(noise_multiplier=1.0, iterations=3, variation_degrees=0.3)
    tiny_trainer(tmp_path, max_epochs=3, max_steps=1).fit(model, datamodule=tiny_datamodule(60))
    assert model.iteration == 1
