"""The FID callback's metric keeps torchmetrics' FrechetInceptionDistance states, bit for bit, without importing it."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from pe_lightning import PixelEmbedding
from pe_lightning.callbacks.fid import EmbeddingFeature, _FrechetFromSums

STATES = [f"{side}_features_{what}" for side in ("real", "fake") for what in ("sum", "cov_sum", "num_samples")]


def _batches(seed: int, n: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.integers(0, 256, (m, 12, 12, 1), dtype=np.uint8)) for m in (n, n // 2, 1)]


def test_updates_and_resets_match_torchmetrics_fid_bit_for_bit():
    embedding = PixelEmbedding(size=6)
    embedding.setup(device="cpu")
    feature = EmbeddingFeature(embedding, num_features=36, batch_size=7)
    ours = _FrechetFromSums(feature=feature)
    theirs = FrechetInceptionDistance(feature=feature, reset_real_features=False)
    for metric in (ours, theirs):
        for batch in _batches(0, 20):
            metric.update(batch, real=True)
        for batch in _batches(1, 16):
            metric.update(batch, real=False)
    for name in STATES:
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype, name
    assert ours.orig_dtype == theirs.orig_dtype
    before = float(ours.compute())
    for metric in (ours, theirs):
        metric.reset()  # the fake states only
        for batch in _batches(2, 10):
            metric.update(batch, real=False)
    for name in STATES:
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    assert int(ours.real_features_num_samples) == 31 and int(ours.fake_features_num_samples) == 16
    assert np.isfinite(before) and float(ours.compute()) != before
    assert ours._reductions == theirs._reductions  # every state summed over DDP ranks, as torchmetrics does
