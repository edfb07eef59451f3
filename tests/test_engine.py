"""The Lightning-free core, unit by unit, without a Trainer; and the module == the plain loop."""

from __future__ import annotations

import ast
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pe_lightning import DrawText, PixelEmbedding
from pe_lightning.apis.base import APIOutput
from pe_lightning.callbacks import PopulationCallback, PrivacyAccountant
from pe_lightning.engine import EngineSettings, NoiseMultiplierSource, PEEngine, PopulationHooks, RunView, run_loop
from pe_lightning.engine.class_sizes import class_sizes, resolve_size_schedule
from pe_lightning.engine.noise_keys import NoiseKeyLostWarning, obtain_noise_key
from pe_lightning.engine.release import release_and_select, release_histogram
from pe_lightning.engine.reuse import reuse_plan
from pe_lightning.engine.scratch import ScratchSpace
from pe_lightning.engine.sharding import ProcessGroupCollective, assemble, sharded_rows
from pe_lightning.noise import NoiseKey
from pe_lightning.engine.selection import select_parents
from pe_lightning.voting import vote_histogram
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]


class ThreadCollective:
    """Two or more 'ranks' as threads: gather exchanges objects through a barrier (a process group stand-in)."""

    def __init__(self, rank: int, world_size: int, shared: dict, barrier: threading.Barrier) -> None:
        self.rank, self.world_size, self._shared, self._barrier = rank, world_size, shared, barrier

    def gather(self, obj):
        self._barrier.wait()
        self._shared[self.rank] = obj
        self._barrier.wait()
        out = [self._shared[r] for r in range(self.world_size)]
        self._barrier.wait()
        return out

    def broadcast(self, obj, src=0):
        return self.gather(obj)[src]


def run_ranks(world_size: int, fn):
    shared, barrier, results = {}, threading.Barrier(world_size), [None] * world_size

    def target(rank):
        results[rank] = fn(ThreadCollective(rank, world_size, shared, barrier))

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_sharded_rows_and_assemble_give_the_same_result_on_one_two_and_three_ranks(tmp_path):
    n, chunk = 23, 4
    rows = lambda i, sl: torch.arange(sl.start, sl.stop, dtype=torch.float32)[:, None] * torch.tensor([[1.0, -2.0]]) + i

    def work(collective):
        emb = sharded_rows(n, rows, chunk_size=chunk, collective=collective)
        parts = []
        for i, sl in enumerate(range(0, n, chunk)):
            if i % collective.world_size == collective.rank:
                idx = np.arange(sl, min(sl + chunk, n))
                parts.append((idx, APIOutput(images=np.full((len(idx), 2, 2, 1), i, np.uint8), conditions={"c": idx * 10})))
        out = assemble(parts, n=n, collective=collective, scratch=ScratchSpace(directory=tmp_path, limit_bytes=None), name="t")
        return emb.numpy().copy(), out.images.copy(), out.conditions["c"].copy()

    (one,) = run_ranks(1, work)
    for world in (2, 3):
        for result in run_ranks(world, work):
            for a, b in zip(one, result):
                np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[2], np.arange(n) * 10)


def test_assemble_refuses_a_position_covered_twice(tmp_path):
    out = APIOutput(images=np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(RuntimeError, match="covered"):
        assemble([(np.array([0, 1]), out), (np.array([1, 0]), out)], n=2, collective=ProcessGroupCollective(),
                 scratch=ScratchSpace(directory=tmp_path, limit_bytes=None), name="population")


def test_release_and_select_is_the_released_histogram_then_selection_and_returns_only_noisy_quantities():
    assignments = torch.tensor([[0], [0], [1], [3], [3], [3]])
    labels = torch.tensor([0, 0, 1, 1])
    key = NoiseKey.from_seed(7)
    got = release_and_select(assignments, labels=labels, num_parents_per_class=[2, 2], selection="sample",
                             generator=torch.Generator().manual_seed(1), class_names=["a", "b"], noise_multiplier=0.5,
                             threshold=0.2, key=key, iteration=3)
    ref = release_histogram(vote_histogram(assignments, num_synthetic=4), noise_multiplier=0.5, threshold=0.2, key=key, iteration=3)
    torch.testing.assert_close(got.noisy_counts, ref.noisy_counts)
    torch.testing.assert_close(got.weights, ref.weights)
    parents = select_parents(weights=ref.weights, labels=labels, num_per_class=[2, 2],
                             generator=torch.Generator().manual_seed(1), class_names=["a", "b"])
    torch.testing.assert_close(got.parents, parents)
    # no raw histogram leaves the release: the noisy counts, what follows from them, and public numbers
    assert set(vars(got)) == {"noisy_counts", "weights", "parents", "tone_counts", "tone_weights", "vote_noise"}
    assert got.tone_counts is None and got.tone_weights is None and got.vote_noise == 0.5


def test_rank_selection_without_noise_takes_the_most_voted():
    assignments = torch.tensor([[1], [1], [1], [0], [2], [2]])
    got = release_and_select(assignments, labels=torch.tensor([0, 0, 0]), num_parents_per_class=[2], selection="rank",
                             generator=torch.Generator(), class_names=["a"], noise_multiplier=0.0, threshold=0.0,
                             key=NoiseKey.from_seed(0), iteration=1)
    assert got.parents.tolist() == [1, 2]


def test_reuse_plan_takes_the_mth_stored_variation_for_the_mth_selection():
    reuse, occurrence = reuse_plan(np.array([4, 2, 4, 4, 2, 9]), lookahead_degree=2)
    assert occurrence.tolist() == [0, 0, 1, 2, 1, 0]
    assert reuse.tolist() == [True, True, True, False, True, True]


def test_class_sizes_schedule_fold_and_errors():
    names = ["a", "b"]
    sizes = class_sizes(configured=[4], schedule=resolve_size_schedule({"start": 8, "end": 4}, 2), iterations=2,
                        class_names=names, private_label_counts=None, num_nearest_neighbors=1, fold=2)
    assert sizes == [[8, 8], [6, 6], [4, 4]]
    with pytest.raises(ValueError, match="not a multiple"):
        class_sizes(configured=[5], schedule=None, iterations=1, class_names=names, private_label_counts=None,
                    num_nearest_neighbors=1, fold=2)
    with pytest.raises(ValueError, match="fewer than num_nearest_neighbors"):
        class_sizes(configured=[2], schedule=None, iterations=1, class_names=names, private_label_counts=None,
                    num_nearest_neighbors=3, fold=1)
    with pytest.raises(ValueError, match="T \\+ 1 = 3 entries"):
        resolve_size_schedule([1, 2], 2)


def test_engine_settings_name_the_bad_field():
    with pytest.raises(ValueError, match="selection must be one of"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), selection="best")
    with pytest.raises(ValueError, match="variation_degrees must have 2 values"):
        EngineSettings(iterations=2, variation_degrees=(0.5,))
    with pytest.raises(ValueError, match="variation_degrees\\[0\\] \\(iteration 1\\)"):
        EngineSettings(iterations=1, variation_degrees=(7.0,)).check_api(DrawText(image_size=28))


def test_noise_key_is_created_once_read_back_and_a_lost_key_is_warned(tmp_path):
    path, one = tmp_path / "k.key", ProcessGroupCollective()
    first = obtain_noise_key(mode="secret", seed=0, path=path, run_id="r", recorded_key_id=None, collective=one, info=lambda m: None)
    again = obtain_noise_key(mode="secret", seed=0, path=path, run_id="r", recorded_key_id=first.key_id, collective=one, info=lambda m: None)
    assert again.secret == first.secret and again.mode == "secret"
    assert first.secret != NoiseKey.from_seed(0).secret
    path.unlink()
    with pytest.warns(NoiseKeyLostWarning, match="missing"):
        fresh = obtain_noise_key(mode="secret", seed=0, path=path, run_id="r", recorded_key_id=first.key_id, collective=one, info=lambda m: None)
    assert fresh.secret != first.secret
    # Two ranks: rank 0 reads the file, every rank gets its key.
    keys = run_ranks(2, lambda c: obtain_noise_key(mode="secret", seed=0, path=path, run_id="r", recorded_key_id=fresh.key_id,
                                                   collective=c, info=lambda m: None).secret)
    assert keys == [fresh.secret, fresh.secret]


def _engine(iterations=2, **overrides):
    settings = dict(iterations=iterations, variation_degrees=(0.5, 0.3)[:iterations], lookahead_degree=2, seed=0)
    settings.update(overrides)
    engine = PEEngine(settings=EngineSettings(**settings), api=DrawText(image_size=28), embedding=PixelEmbedding(size=14))
    return engine


def test_the_plain_loop_makes_the_same_population_as_the_module(tmp_path):
    """The module is an adapter: Trainer.fit and run_loop over the engine give identical populations."""
    model = tiny_model(noise_multiplier=2.0, noise="seeded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_trainer(tmp_path / "fit").fit(model, datamodule=tiny_datamodule(100))

    dm = tiny_datamodule(100)
    dm.setup("fit")
    engine = _engine()
    engine.prepare(class_names=dm.class_names, sizes_per_iteration=[[8] * 10] * 3, private_images=dm.private_images,
                   private_labels=dm.private_labels, scratch=ScratchSpace(directory=tmp_path, limit_bytes=None),
                   device="cpu", collective=ProcessGroupCollective())
    seen = []

    class Seen:  # a PopulationHooks: run_loop calls the core's hook contract, its run in the place of pl_module
        evaluates_saved_runs = False

        def on_stage(self, trainer, pl_module, *, stage, done, total):
            pass

        def on_population(self, trainer, pl_module, *, population, iteration):
            m = pl_module.metrics[iteration]
            seen.append((iteration, sorted(k for k in m if k.startswith("pe/"))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final = run_loop(engine, noise_multiplier=2.0, key=NoiseKey.from_seed(0), vote_batch_size=7, hooks=[Seen()])
    np.testing.assert_array_equal(final.images, model.population.images)
    np.testing.assert_array_equal(final.parents, model.population.parents)
    assert [t for t, _ in seen] == [1, 2] and "pe/selected_unique" in seen[0][1]
    assert engine.noise_record == model.noise_record


def test_callbacks_and_the_accountant_implement_the_core_protocols():
    assert isinstance(PopulationCallback(), PopulationHooks)
    assert isinstance(PrivacyAccountant(epsilon=1.0), NoiseMultiplierSource)
    assert not isinstance(PopulationCallback(), NoiseMultiplierSource)


def test_the_module_and_the_engine_do_not_import_callbacks():
    files = [ROOT / "pe_lightning" / "evolution.py", *sorted((ROOT / "pe_lightning" / "engine").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.startswith("pe_lightning.callbacks") for n in names), (path, names)
                if "engine" in path.parts:
                    assert not any(n.startswith(("lightning", "pytorch_lightning")) for n in names), (path, names)


def test_the_accountant_states_sigma_and_never_writes_into_the_module(tmp_path):
    acc = PrivacyAccountant(epsilon=1.0)
    model = tiny_model()
    writes = []
    original = type(model).__setattr__

    class Watched(type(model)):
        def __setattr__(self, name, value):
            if name in ("noise_multiplier", "_noise_multiplier"):
                writes.append(name)
            original(self, name, value)

    model.__class__ = Watched
    tiny_trainer(tmp_path, callbacks=[acc]).fit(model, datamodule=tiny_datamodule(100))
    assert writes == []
    assert [r["noise_multiplier"] for r in model.noise_record] == [acc.noise_multiplier] * 2
    assert [e["noise_multiplier"] for e in acc.ledger.entries] == [acc.noise_multiplier] * 2


def test_the_stated_sigma_does_not_depend_on_when_the_ledger_is_restored():
    """Resume: asking before or after load_state_dict gives the same sigma (no hook-order dependence)."""
    record = ({"iteration": 1, "noise_multiplier": 3.0, "noise_mode": "seeded", "key_id": "x"},)
    run = RunView(iteration=1, iterations=3, class_names=("a",), output_dir=Path("."), noise_record=record)
    spent = PrivacyAccountant(epsilon=2.0)
    spent.noise_multiplier_for(RunView(iteration=0, iterations=3, class_names=("a",), output_dir=Path(".")))
    spent.ledger.record(iteration=1, noise_multiplier=3.0)
    state = spent.state_dict()

    early = PrivacyAccountant(epsilon=2.0)
    early.load_state_dict(state)
    late = PrivacyAccountant(epsilon=2.0)
    sigma_late_first = late.noise_multiplier_for(run)  # ledger accounted from the run's record
    late.load_state_dict(state)
    assert early.noise_multiplier_for(run) == pytest.approx(sigma_late_first) == pytest.approx(late.noise_multiplier_for(run))
    assert len(early.ledger) == len(late.ledger) == 1


def test_which_rank_makes_which_rows_is_one_rule_in_sharding():
    from pe_lightning.engine.sharding import made_by, my_chunks

    for world in (1, 2, 3):
        for rank in range(world):
            chunks = [np.arange(sl.start, sl.stop) for _, sl in my_chunks(23, 4, rank=rank, world_size=world)]
            mine = np.concatenate(chunks) if chunks else np.array([], dtype=np.int64)
            assert np.flatnonzero(made_by(np.arange(23), chunk_size=4, rank=rank, world_size=world)).tolist() == mine.tolist()


def test_the_engine_modules_import_no_circle():
    modules = {p.stem: p for p in (ROOT / "pe_lightning" / "engine").glob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pe_lightning.engine."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[name] = deps

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_run_loop_asks_the_one_source_of_sigma_and_the_accountant_records_what_the_engine_used(tmp_path):
    from pe_lightning.engine import LoopRun
    from pe_lightning.privacy import noise_multiplier

    dm = tiny_datamodule(40)
    dm.setup("fit")
    engine = _engine()
    engine.prepare(class_names=dm.class_names, sizes_per_iteration=[[4] * 10] * 3, private_images=dm.private_images,
                   private_labels=dm.private_labels, scratch=ScratchSpace(directory=tmp_path, limit_bytes=None))
    acc, run = PrivacyAccountant(epsilon=1.0), LoopRun(engine, output_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_loop(engine, noise_multiplier=acc, key=NoiseKey.from_seed(0), hooks=[acc], run=run)
    sigma = noise_multiplier(epsilon=1.0, iterations=2, delta=1e-5)
    assert [r["noise_multiplier"] for r in engine.noise_record] == [sigma, sigma]
    assert [e["noise_multiplier"] for e in acc.ledger.entries] == [sigma, sigma]
    assert run.metrics[2]["privacy/noise_multiplier"] == sigma and 0 < run.metrics[2]["privacy/epsilon"] <= 1.0
