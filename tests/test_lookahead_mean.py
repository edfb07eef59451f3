"""The lookahead's embeddings beside the API's next variation: same numbers, bounded, only where it pays."""

from __future__ import annotations

import csv
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from pe_lightning.embeddings import HOGEmbedding
from pe_lightning.engine import lookahead_mean
from pe_lightning.engine.lookahead_mean import LookaheadMean, overlap_lookahead
from pe_lightning.engine.settings import EngineSettings
from pe_lightning.seeding import make_generator
from pe_lightning import DrawText
from pe_testing import tiny_datamodule, tiny_model, tiny_trainer


def _variations(k: int) -> list[np.ndarray]:
    api = DrawText(image_size=28)
    api.setup(class_names=[str(d) for d in range(10)])
    return [api.random(labels=np.arange(40) % 10, generator=make_generator(0, 0, "random", r)).images for r in range(k)]


def test_the_background_mean_is_bit_identical_and_keeps_at_most_one_embedding_pending():
    emb, images = HOGEmbedding(), _variations(5)
    done, threads = [], []

    def embed(batch):
        threads.append(threading.current_thread().name)
        out = emb.embed(batch)
        done.append(len(done))
        return out

    in_turn = LookaheadMean(emb.embed, pool=None)
    for batch in images:
        in_turn.add(batch)
    with ThreadPoolExecutor(1, thread_name_prefix="bg") as pool:
        beside = LookaheadMean(embed, pool=pool)
        for r, batch in enumerate(images):
            beside.add(batch)
            assert len(done) >= r  # variations 0..r-1 were embedded before r went to the thread: only r may be pending
        result = beside.mean()
    assert torch.equal(result, in_turn.mean())
    assert set(threads) == {"bg_0"} and beside.background_s > 0


def test_an_embedding_error_reaches_the_caller():
    def broken(batch):
        raise ValueError("images of shape (3, 3, 1) give 9-d features")

    with ThreadPoolExecutor(1) as pool:
        mean = LookaheadMean(broken, pool=pool)
        mean.add(np.zeros((2, 3, 3, 1), np.uint8))
        with pytest.raises(ValueError, match="9-d features"):
            mean.mean()


def test_overlap_only_for_cpu_embeddings_and_by_default_only_with_a_spare_core(monkeypatch):
    cpu, gpu = HOGEmbedding(), HOGEmbedding()
    gpu.device = torch.device("cuda", 1)  # not used: the rule reads the attribute only
    assert overlap_lookahead(cpu, setting=True) and not overlap_lookahead(cpu, setting=False)
    assert not overlap_lookahead(gpu, setting=True) and not overlap_lookahead(gpu, setting=None)
    monkeypatch.setattr(lookahead_mean.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(lookahead_mean.torch, "get_num_threads", lambda: 2)
    assert not overlap_lookahead(cpu, setting=None)  # torch's threads take both cores
    monkeypatch.setattr(lookahead_mean.torch, "get_num_threads", lambda: 1)
    assert overlap_lookahead(cpu, setting=None)


def test_settings_refuse_a_setting_that_is_not_true_false_or_null():
    with pytest.raises(ValueError, match="overlap_lookahead_embedding must be true, false or null"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), overlap_lookahead_embedding="yes")
    with pytest.raises(ValueError, match="reuse_lookahead must be true or false"):
        EngineSettings(iterations=1, variation_degrees=(0.5,), reuse_lookahead="false")


class _ThreadRecordingHOG(HOGEmbedding):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.threads = []

    def embed(self, images, *, batch_size=1024):
        self.threads.append(threading.current_thread().name)
        return super().embed(images, batch_size=batch_size)


@pytest.mark.parametrize("reuse", [True, False])
def test_a_run_with_the_lookahead_overlapped_releases_what_a_run_in_turn_releases(tmp_path, reuse):
    runs = {}
    for overlap in (True, False):
        embedding = _ThreadRecordingHOG()
        model = tiny_model(embedding=embedding, overlap_lookahead_embedding=overlap, reuse_lookahead=reuse,
                           noise="seeded", noise_multiplier=1.0, api_batch_size=30)
        folder = tmp_path / str(overlap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tiny_trainer(folder, logger=CSVLogger(folder, name="log")).fit(model, datamodule=tiny_datamodule(100))
        with open(next(folder.rglob("metrics.csv"))) as f:
            logged = {k for row in csv.DictReader(f) for k, v in row.items() if v}
        runs[overlap] = model, embedding.threads, logged
    (on, on_threads, on_metrics), (off, off_threads, off_metrics) = runs[True], runs[False]
    np.testing.assert_array_equal(on.population.images, off.population.images)
    np.testing.assert_array_equal(on.population.parents, off.population.parents)
    assert on.noise_record == off.noise_record
    assert any(name.startswith("pe-lookahead-embedding") for name in on_threads)
    assert all(name == threading.main_thread().name for name in off_threads)
    assert "time/embedding_overlapped_s" in on_metrics and "time/embedding_overlapped_s" not in off_metrics
