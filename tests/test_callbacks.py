"""Callbacks: FID matches an independent Fréchet distance, bad arguments are named, grids/snapshots are written."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks import FIDCallback, PopulationSnapshot, PrivacyAccountant, SampleGrid
from pe_lightning.callbacks.fid_reference import seeded_subset
from pe_lightning.metrics.frechet import pixel_frechet_distance  # docs/benchmark.md's definition: centred statistics, not the callback's running sums
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


def test_fid_callback_matches_an_independent_frechet_distance(tmp_path):
    dm = tiny_datamodule(150)
    fid = FIDCallback(feature=PixelEmbedding(size=14), name="pixel", max_real=300)
    model = tiny_model(noise_multiplier=1.0, num_samples_per_class=12)
    trainer = tiny_trainer(tmp_path, callbacks=[fid])
    trainer.fit(model, datamodule=dm)

    def down(x):  # the same antialiased resize PixelEmbedding(size=14) applies
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        return F.interpolate(t, size=(14, 14), mode="bilinear", antialias=True, align_corners=False).permute(0, 2, 3, 1).numpy()

    real = dm.test_images[seeded_subset(len(dm.test_images), 300, seed=0)]  # max_real: a seeded subset, not a prefix
    expected = pixel_frechet_distance(down(real), down(model.population.images))
    assert fid.last_value == pytest.approx(expected, rel=1e-3)
    assert trainer.callback_metrics["fid/pixel"].item() == pytest.approx(expected, rel=1e-3)


def test_fid_against_private_data_says_it_is_not_private(tmp_path):
    fid = FIDCallback(feature=PixelEmbedding(), real_split="private", name="pixel")
    assert fid.key == "fid/pixel_private_not_dp"
    with pytest.warns(UserWarning, match="NOT covered by the DP guarantee"):
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[fid]).fit(
            tiny_model(noise_multiplier=1.0, iterations=1, variation_degrees=0.3), datamodule=tiny_datamodule(100)
        )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PrivacyAccountant(epsilon=0.0), "epsilon must be > 0"),
        (lambda: PrivacyAccountant(epsilon=-1.0), "epsilon must be > 0"),
        (lambda: PrivacyAccountant(epsilon=1.0, delta=1.0), r"delta must be in \(0, 1\)"),
        (lambda: PrivacyAccountant(epsilon=1.0, delta=0.0), r"delta must be in \(0, 1\)"),
        (lambda: FIDCallback(feature=PixelEmbedding(), every_n_iterations=0), "every_n_iterations"),
        (lambda: FIDCallback(feature=PixelEmbedding(), real_split="train"), "real_split"),
        (lambda: SampleGrid(samples_per_class=0), "samples_per_class"),
        (lambda: PopulationSnapshot(every_n_iterations=0), "every_n_iterations"),
    ],
)
def test_bad_callback_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_snapshots_and_grids_are_written_every_n_iterations(tmp_path):
    snap = PopulationSnapshot(every_n_iterations=2)
    grid = SampleGrid(every_n_iterations=2, samples_per_class=4)
    model = tiny_model(noise_multiplier=1.0, iterations=3, variation_degrees=0.3, output_dir=str(tmp_path / "out"))
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[snap, grid]).fit(model, datamodule=tiny_datamodule(100))
    assert [p.name for p in snap.written] == ["iteration_000", "iteration_002", "iteration_003"]
    assert [p.name for p in grid.written] == ["grid_iteration_000.png", "grid_iteration_002.png", "grid_iteration_003.png"]
    assert all((p / "population.npz").is_file() for p in snap.written)


def test_a_new_metric_reaches_the_summary_and_the_progress_display_through_the_run_view(tmp_path):
    """Neither RunSummary nor PEProgressBar knows the metric: both read pl_module.run."""
    import io
    import json
    import re

    from pe_lightning.callbacks import PEProgressBar, PopulationCallback, RunSummary

    class Score(PopulationCallback):
        def on_population(self, trainer, pl_module, *, population, iteration):
            pl_module.log_iteration_metrics({"custom/score": 0.25 * (iteration + 1)})

    out = io.StringIO()
    bar = PEProgressBar(console_kwargs={"file": out, "force_terminal": False, "width": 200})
    summary = RunSummary(plot=False)
    acc = PrivacyAccountant(epsilon=2.0)
    grid = SampleGrid(samples_per_class=1)
    model = tiny_model()
    tiny_trainer(tmp_path, enable_progress_bar=True, callbacks=[acc, Score(), grid, bar, summary]).fit(
        model, datamodule=tiny_datamodule(100))
    assert model.run.metrics["custom/score"] == 0.75 and model.run.epsilon == acc.ledger.epsilon
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["metrics"] == {"custom/score": 0.75}
    assert data["privacy"]["epsilon"] == acc.ledger.epsilon and data["privacy"]["epsilon_budget"] == 2.0
    assert data["outputs"]["grids"] == str(grid.written[-1].parent.resolve())
    assert "[PE]   custom/score: 0.75" in RunSummary.lines(data)
    text = out.getvalue()
    assert re.search(r"PE iteration 2/2 .* ε 2/2 · custom/score 0\.75 · ", text), text
