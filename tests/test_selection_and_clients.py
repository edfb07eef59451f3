"""Selection modes, several variations per parent, kept parents, size schedules, client-level votes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pe_lightning.engine.release as release
from pe_lightning.callbacks import PopulationCallback
from pe_lightning.data import ImageFolderDataModule, NpzDataModule
from pe_lightning.engine.selection import select_parents
from pe_lightning.voting import vote_histogram
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


# ------------------------------------------------------------------ selection
def test_systematic_gives_each_bin_its_expected_share_by_largest_remainders():
    # Class 0: weights 3, 1, 0, 4 over 5 parents -> exact 1.875, 0.625, 0, 2.5 -> floors 1, 0, 0, 2 (3),
    # the 2 left go to the largest remainders 0.875 (index 0) and 0.625 (index 1). Class 1: 6 parents, weights 1, 1, 1.
    weights = torch.tensor([3.0, 1.0, 0.0, 4.0, 1.0, 1.0, 1.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    got = select_parents(weights=weights, labels=labels, num_per_class=[5, 6], generator=torch.Generator(), mode="systematic")
    assert got.tolist() == [0, 0, 1, 3, 3, 4, 4, 5, 5, 6, 6]
    # Deterministic (no draw), and the mean of "sample" over many draws.
    again = select_parents(weights=weights, labels=labels, num_per_class=[5, 6], generator=torch.Generator().manual_seed(9), mode="systematic")
    assert torch.equal(got, again)
    g = torch.Generator().manual_seed(0)
    counts = sum(torch.bincount(select_parents(weights=weights, labels=labels, num_per_class=[5, 6], generator=g), minlength=7)
                 for _ in range(2000)) / 2000
    np.testing.assert_allclose(counts.numpy(), [1.875, 0.625, 0, 2.5, 2, 2, 2], atol=0.08)


def test_rank_takes_the_largest_counts_of_each_class_once():
    weights = torch.tensor([0.0, 5.0, 2.0, 5.0, 9.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    got = select_parents(weights=weights, labels=labels, num_per_class=[3, 2], generator=torch.Generator(), mode="rank")
    assert got.tolist() == [1, 3, 2, 4, 7]  # ties (1 and 3) by index
    with pytest.raises(ValueError, match="takes 5 distinct parents but the class has only 4"):
        select_parents(weights=weights, labels=labels, num_per_class=[5, 1], generator=torch.Generator(), mode="rank")
    with pytest.raises(ValueError, match="selection mode must be one of"):
        select_parents(weights=weights, labels=labels, num_per_class=[1, 1], generator=torch.Generator(), mode="top")


def test_sample_mode_is_unchanged_by_the_mode_argument():
    weights = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.arange(50) % 2
    a = select_parents(weights=weights, labels=labels, num_per_class=[9, 7], generator=torch.Generator().manual_seed(4))
    b = select_parents(weights=weights, labels=labels, num_per_class=[9, 7], generator=torch.Generator().manual_seed(4), mode="sample")
    assert torch.equal(a, b)


class Populations(PopulationCallback):
    def __init__(self):
        self.populations = {}

    def on_population(self, trainer, pl_module, *, population, iteration):
        copy = population.take(np.arange(len(population)))
        copy.parents = population.parents.copy()
        self.populations[iteration] = copy


class ReleaseCounter:
    def __init__(self, monkeypatch):
        self.calls = []
        real = release.vote_histogram

        def hist(assignments, *, num_synthetic, clients=None):
            out = real(assignments, num_synthetic=num_synthetic, clients=clients)
            self.calls.append((len(assignments), float(out.sum()), clients is not None))
            return out

        monkeypatch.setattr(release, "vote_histogram", hist)


def test_rank_with_kept_parents_and_two_variations_each(tmp_path, monkeypatch):
    counter = ReleaseCounter(monkeypatch)
    rec = Populations()
    model = tiny_model(noise_multiplier=1.0, num_samples_per_class=9, selection="rank", variations_per_parent=2,
                       keep_selected=True, lookahead_degree=2)
    tiny_trainer(tmp_path, callbacks=[rec]).fit(model, datamodule=tiny_datamodule(120))
    for t in (1, 2):
        prev, new = rec.populations[t - 1], rec.populations[t]
        assert len(new) == 90
        for c in range(10):
            rows = np.flatnonzero(new.labels == c)
            assert len(rows) == 9 and np.array_equal(rows, np.arange(9 * c, 9 * c + 9))  # grouped by class
            parents = new.parents[rows]
            assert len(np.unique(parents)) == 3  # rank: 3 distinct parents, each with 2 children + itself
            assert (np.bincount(parents, minlength=len(prev))[np.unique(parents)] == 3).all()
            kept = rows[6:]  # per class: children first, then the kept parents, unchanged
            np.testing.assert_array_equal(new.images[kept], prev.images[new.parents[kept]])
    # Invariants: every private sample votes once per iteration, one release per iteration.
    assert [(m, s) for m, s, _ in counter.calls] == [(120, 120.0), (120, 120.0)]


def test_num_samples_schedule_sets_each_iterations_population_size(tmp_path):
    rec = Populations()
    model = tiny_model(noise_multiplier=1.0, num_samples_per_class=None, num_samples_schedule=[12, 8, 4], lookahead_degree=1)
    tiny_trainer(tmp_path, callbacks=[rec]).fit(model, datamodule=tiny_datamodule(120))
    assert [len(rec.populations[t]) for t in (0, 1, 2)] == [120, 80, 40]
    mapped = tiny_model(noise_multiplier=1.0, iterations=3, variation_degrees=0.3, num_samples_per_class=None,
                        num_samples_schedule={"start": 10, "end": 4})
    assert mapped._size_schedule == [10, 8, 6, 4]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(num_samples_schedule=[8, 8], num_samples_per_class=None), "one entry per iteration"),
        (dict(num_samples_schedule=[8, 8, 8], num_samples_per_class=5), "not both"),
        (dict(variations_per_parent=0), "needs keep_selected"),
        (dict(selection="top"), "selection must be one of"),
        (dict(privacy_unit="user"), "privacy_unit must be"),
    ],
)
def test_bad_selection_settings_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(noise_multiplier=1.0, **overrides)


def test_sizes_that_do_not_divide_among_parents_are_refused_before_any_spend(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of variations_per_parent"):
        tiny_trainer(tmp_path).fit(tiny_model(noise_multiplier=1.0, num_samples_per_class=9, variations_per_parent=2),
                                   datamodule=tiny_datamodule(100))


# ------------------------------------------------------------------ client-level votes
def test_client_histogram_hand_computed_and_sensitivity_one_per_client():
    # client 7: two samples both voting bin 0 -> (1, 0, ...); client 3: votes bins 1 and 2 -> (0, 1/√2, 1/√2).
    assignments = torch.tensor([[0], [0], [1], [2]])
    clients = torch.tensor([7, 7, 3, 3])
    h = vote_histogram(assignments, num_synthetic=4, clients=clients)
    assert h.tolist() == pytest.approx([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2), 0.0])
    without_7 = vote_histogram(assignments[2:], num_synthetic=4, clients=clients[2:])
    assert torch.linalg.vector_norm(h - without_7).item() == pytest.approx(1.0)
    # One sample per client is sample-level voting, for k = 1 and k = 2.
    votes = torch.tensor([[0, 1], [2, 3], [1, 3]])
    assert torch.allclose(vote_histogram(votes, num_synthetic=4, clients=torch.arange(3)), vote_histogram(votes, num_synthetic=4))
    with pytest.raises(ValueError, match="one id per private sample"):
        vote_histogram(votes, num_synthetic=4, clients=torch.arange(2))


def _write_folder(root, *, per_client=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for client in ("u1", "u2"):
            (root / cls / client).mkdir(parents=True)
            for i in range(per_client):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / cls / client / f"{i}.png")


def test_image_folder_and_npz_client_ids(tmp_path):
    _write_folder(tmp_path / "priv")
    dm = ImageFolderDataModule(private_dir=str(tmp_path / "priv"), test_dir=str(tmp_path / "priv"), channels=1, clients="subfolder")
    dm.setup("fit")
    assert dm.private_clients.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]  # u1 -> 0, u2 -> 1 in both classes
    csv = tmp_path / "clients.csv"
    rows = ["path,client"] + [f"{c}/{u}/{i}.png,{u}-{c}" for c in "ab" for u in ("u1", "u2") for i in range(3)]
    csv.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="has no row for the private image 'b/u2/2.png'"):
        ImageFolderDataModule(private_dir=str(tmp_path / "priv"), test_dir=str(tmp_path / "priv"), channels=1, clients=str(csv)).setup("fit")
    csv.write_text("\n".join(rows) + "\n")
    dm = ImageFolderDataModule(private_dir=str(tmp_path / "priv"), test_dir=str(tmp_path / "priv"), channels=1, clients=str(csv))
    dm.setup("fit")
    assert len(set(dm.private_clients.tolist())) == 4
    np.savez(tmp_path / "p.npz", images=np.zeros((20, 4, 4, 1), np.uint8), labels=np.arange(20) % 2, clients=np.arange(20) // 4)
    npz = NpzDataModule(private_path=str(tmp_path / "p.npz"), test_fraction=0.2)
    npz.setup("fit")
    assert npz.private_clients is not None and len(npz.private_clients) == len(npz.private_images) == 16
    assert npz.class_names == ["0", "1"]
    with pytest.raises(FileNotFoundError, match="private_path="):
        NpzDataModule(private_path=str(tmp_path / "missing.npz")).setup("fit")


def test_client_level_fit_uses_client_votes_and_refuses_data_without_clients(tmp_path, monkeypatch):
    counter = ReleaseCounter(monkeypatch)
    images = tiny_datamodule(120)
    images.setup("fit")
    np.savez(tmp_path / "p.npz", images=images.private_images, labels=images.private_labels, clients=np.arange(120) // 5,
             class_names=np.array(images.class_names))
    dm = NpzDataModule(private_path=str(tmp_path / "p.npz"), test_path=str(tmp_path / "p.npz"))
    model = tiny_model(noise_multiplier=1.0, privacy_unit="client")
    tiny_trainer(tmp_path / "run").fit(model, datamodule=dm)
    assert [c for _, _, c in counter.calls] == [True, True]
    assert all(s <= 120 for _, s, _ in counter.calls)  # 24 clients of 5: each contributes L2 norm 1, L1 <= sqrt(5)
    with pytest.raises(ValueError, match="privacy_unit='client' needs client ids"):
        tiny_trainer(tmp_path / "r2").fit(tiny_model(noise_multiplier=1.0, privacy_unit="client"), datamodule=tiny_datamodule(100))


@pytest.mark.parametrize("distance", ["cosine", "ip"])
def test_the_module_votes_with_the_configured_distance(tmp_path, monkeypatch, distance):
    import pe_lightning.engine.core as evolution

    seen = []
    real = evolution.assign_votes
    monkeypatch.setattr(evolution, "assign_votes", lambda **kw: seen.append(kw["distance"]) or real(**kw))
    model = tiny_model(noise_multiplier=1.0, iterations=1, variation_degrees=0.3, distance=distance)
    tiny_trainer(tmp_path, max_epochs=1).fit(model, datamodule=tiny_datamodule(60))
    assert seen and set(seen) == {distance}
    with pytest.raises(ValueError, match="distance must be one of"):
        tiny_model(noise_multiplier=1.0, distance="manhattan")


def test_selection_strategies_are_a_registry_that_settings_and_select_parents_share():
    from pe_lightning.engine.selection import SELECTION_MODES, SELECTION_STRATEGIES, register_selection
    from pe_lightning.engine.settings import EngineSettings

    assert SELECTION_MODES == ("sample", "rank", "systematic")
    for name in SELECTION_MODES:
        assert EngineSettings(iterations=1, variation_degrees=(0.5,), selection=name).selection == name
    with pytest.raises(ValueError, match=r"selection must be one of \('sample', 'rank', 'systematic'\), got 'first'"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), selection="first")

    @register_selection("first")
    def first(weights, n, *, generator, class_name):  # the first n samples of the class
        return torch.arange(n)

    try:
        EngineSettings(iterations=1, variation_degrees=(0.5,), selection="first")
        labels = torch.tensor([0, 1, 0, 1, 0])
        got = select_parents(weights=torch.ones(5, dtype=torch.float64), labels=labels, num_per_class=[2, 1],
                             generator=torch.Generator(), mode="first")
        assert got.tolist() == [0, 2, 1]
        with pytest.raises(ValueError, match="'first' is already registered"):
            register_selection("first")(first)
    finally:
        del SELECTION_STRATEGIES["first"]
