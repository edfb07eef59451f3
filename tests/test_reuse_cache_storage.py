"""Lookahead reuse, the private-embedding cache and memory-mapped storage (issue 6 / issue 5)."""

from __future__ import annotations

import numpy as np
import pytest

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks import PopulationCallback
from pe_lightning.seeding import make_generator
from pe_testing import shared_noise_key, tiny_datamodule, tiny_model, tiny_trainer


class Populations(PopulationCallback):
    def __init__(self):
        self.populations, self.memmapped = {}, {}

    def on_population(self, trainer, pl_module, *, population, iteration):
        self.populations[iteration] = population.take(np.arange(len(population)))  # in-memory copy
        self.populations[iteration].parents = population.parents.copy()
        self.memmapped[iteration] = isinstance(population.images, np.memmap)


def _fit(tmp_path, **overrides):
    rec = Populations()
    model = tiny_model(noise_multiplier=0.5, noise_key_file=shared_noise_key(tmp_path.parent), **overrides)
    tiny_trainer(tmp_path, callbacks=[rec]).fit(model, datamodule=tiny_datamodule(150))
    return model, rec


def test_reused_children_are_their_parents_lookahead_variations(tmp_path):
    model, rec = _fit(tmp_path, reuse_lookahead=True, lookahead_degree=3, api_batch_size=32)
    api, k = model.api, 3
    for t in (1, 2):
        prev, new = rec.populations[t - 1], rec.populations[t]
        parents = new.parents
        seen: dict[int, int] = {}
        for slot, p in enumerate(parents):
            m = seen.get(p, 0)
            seen[p] = m + 1
            if m >= k:
                continue  # a fresh variation: this parent was selected more than k times
            chunk = p // 32
            sl = slice(chunk * 32, min(chunk * 32 + 32, len(prev)))
            redo = api.variation(
                images=prev.images[sl], conditions={c: v[sl] for c, v in prev.conditions.items()}, labels=prev.labels[sl],
                degree=model.variation_degrees[t - 1], generator=make_generator(model.seed, t, "lookahead", m, chunk),
            )
            np.testing.assert_array_equal(new.images[slot], redo.images[p - sl.start])


def test_reuse_changes_only_what_follows_the_noisy_histogram(tmp_path):
    """Same seed: the first iteration's selection is identical with and without reuse (same votes, same noise)."""
    plain, rec_plain = _fit(tmp_path / "a", reuse_lookahead=False)
    reuse, rec_reuse = _fit(tmp_path / "b", reuse_lookahead=True)
    np.testing.assert_array_equal(rec_plain.populations[1].parents, rec_reuse.populations[1].parents)
    np.testing.assert_array_equal(rec_plain.populations[0].images, rec_reuse.populations[0].images)
    assert not np.array_equal(rec_plain.populations[1].images, rec_reuse.populations[1].images)
    assert reuse.trainer.callback_metrics["pe/reused_lookahead_fraction"] > 0.5
    assert plain.trainer.callback_metrics["pe/reused_lookahead_fraction"] == 0


class CountingEmbedding(PixelEmbedding):
    calls: list[int] = []

    def embed(self, images, *, batch_size=1024):
        CountingEmbedding.calls.append(len(images))
        return super().embed(images, batch_size=batch_size)


def test_private_embeddings_are_cached_on_disk_by_data_and_embedding(tmp_path):
    cache = tmp_path.parent / f"{tmp_path.name}-cache"  # the private side, outside the output root

    def run(num_private, size=14):
        CountingEmbedding.calls = []
        model = tiny_model(noise_multiplier=1.0, iterations=1, variation_degrees=0.3, embedding=CountingEmbedding(size=size),
                           lookahead_degree=0, embedding_cache_dir=str(cache), noise_key_file=shared_noise_key(tmp_path))
        tiny_trainer(tmp_path, max_epochs=1).fit(model, datamodule=tiny_datamodule(num_private))
        return sum(n for n in CountingEmbedding.calls if n == num_private), model

    first, m1 = run(120)
    assert first == 120 and len(list(cache.glob("private-*.npy"))) == 1
    second, m2 = run(120)
    assert second == 0, "the second run on the same data must read the cache"
    np.testing.assert_array_equal(m1.population.images, m2.population.images)
    assert run(130)[0] == 130, "other private data: a miss"
    assert run(120, size=12)[0] == 120, "another embedding configuration: a miss"
    assert len(list(cache.glob("private-*.npy"))) == 3
    for f in cache.glob("private-*.npy"):  # a corrupt entry is recomputed, not trusted
        f.write_bytes(b"garbage")
    assert run(120)[0] == 120


def test_spilled_to_disk_run_equals_in_memory_run_and_cleans_up(tmp_path):
    mem, _ = _fit(tmp_path / "mem", reuse_lookahead=True, spill_to_disk_mb=None)
    disk, rec = _fit(tmp_path / "disk", reuse_lookahead=True, spill_to_disk_mb=0, output_dir=str(tmp_path / "disk" / "out"))
    assert all(rec.memmapped.values()) and not any(_fit(tmp_path / "m2", spill_to_disk_mb=None)[1].memmapped.values())
    np.testing.assert_array_equal(mem.population.images, disk.population.images)
    np.testing.assert_array_equal(mem.population.parents, disk.population.parents)
    assert not list((tmp_path / "disk" / "out" / ".scratch").glob("*/*")), "scratch files must be removed after fit"
    assert (tmp_path / "disk" / "out" / "final" / "population.npz").is_file()


def test_spill_to_disk_mb_is_validated():
    with pytest.raises(ValueError, match="spill_to_disk_mb"):
        tiny_model(spill_to_disk_mb=-1)


def _variations(k: int, n: int, chunk: int, seed: int = 0):
    """Random (r, chunk) -> APIOutput with images (m, 4, 4, 1) and two conditions."""
    from pe_lightning.apis.base import APIOutput

    rng = np.random.default_rng(seed)
    outs = {}
    for r in range(k):
        for i, start in enumerate(range(0, n, chunk)):
            m = min(chunk, n - start)
            outs[r, i] = APIOutput(
                images=rng.integers(0, 256, (m, 4, 4, 1), dtype=np.uint8),
                conditions={"font": rng.integers(0, 9, m), "warp": rng.normal(size=(m, 2, 2)).astype(np.float32)},
            )
    return outs


@pytest.mark.parametrize("limit", [None, 0], ids=["in-memory", "spilled"])
def test_lookahead_store_take_returns_the_requested_variations(tmp_path, limit):
    from pe_lightning.engine.lookahead_store import LookaheadStore
    from pe_lightning.engine.scratch import ScratchSpace

    k, n, chunk = 3, 23, 5
    outs = _variations(k, n, chunk)
    scratch = ScratchSpace(directory=tmp_path, limit_bytes=limit)
    store = LookaheadStore(scratch=scratch, k=k, n=n, chunk_size=chunk, image_shape=(4, 4, 1))
    assert store.spilled == (limit == 0)
    for (r, i), out in outs.items():
        store.put(r, i, out)
    store.evict()
    rng = np.random.default_rng(1)
    r, p = rng.integers(0, k, 40), rng.integers(0, n, 40)
    got = store.take(r, p)
    for j in range(40):
        src = outs[int(r[j]), int(p[j]) // chunk]
        np.testing.assert_array_equal(got.images[j], src.images[p[j] % chunk])
        assert got.conditions["font"][j] == src.conditions["font"][p[j] % chunk]
        np.testing.assert_array_equal(got.conditions["warp"][j], src.conditions["warp"][p[j] % chunk])
    assert store.take(r[:0], p[:0]).images.shape == (0, 4, 4, 1)
    scratch.close()


def test_lookahead_store_rejects_wrong_shapes_and_names_missing_chunks(tmp_path):
    from pe_lightning.apis.base import APIOutput
    from pe_lightning.engine.lookahead_store import LookaheadStore
    from pe_lightning.engine.scratch import ScratchSpace

    store = LookaheadStore(scratch=ScratchSpace(directory=tmp_path, limit_bytes=None), k=2, n=10, chunk_size=4, image_shape=(4, 4, 1))
    with pytest.raises(ValueError, match=r"variation 1 of chunk 2 .*expected \(2, 4, 4, 1\)"):
        store.put(1, 2, APIOutput(images=np.zeros((4, 4, 4, 1), np.uint8)))
    store.put(0, 0, APIOutput(images=np.zeros((4, 4, 4, 1), np.uint8)))
    with pytest.raises(KeyError, match="variation 1 of chunk 0"):
        store.take(np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="k, n and chunk_size"):
        LookaheadStore(scratch=ScratchSpace(directory=tmp_path, limit_bytes=None), k=0, n=10, chunk_size=4, image_shape=(4, 4, 1))
