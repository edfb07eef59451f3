"""Voting: backends agree, each private sample votes once, noise scale, threshold, selection, zero-histogram guard."""

import math

import numpy as np
import pytest
import torch

from pe_lightning.noise import NoiseKey

from pe_lightning.engine.release import add_gaussian_noise, apply_threshold
from pe_lightning.engine.selection import ZeroHistogramWarning, select_parents
from pe_lightning.neighbors import nearest_neighbors
from pe_lightning.voting import assign_votes, vote_histogram


def _data(m=300, n=120, d=16, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(m, d, generator=g),
        torch.randint(0, classes, (m,), generator=g),
        torch.randn(n, d, generator=g),
        torch.arange(n) % classes,
    )


@pytest.mark.parametrize("k", [1, 3])
def test_faiss_and_torch_backends_give_the_same_neighbours(k):
    q, _, keys, _ = _data()
    a = nearest_neighbors(q, keys, k=k, backend="faiss")
    b = nearest_neighbors(q, keys, k=k, backend="torch", chunk_size=7)
    assert torch.equal(a, b)
    brute = torch.cdist(q, keys).topk(k, largest=False).indices
    assert torch.equal(b, brute)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_votes_stay_within_class_and_each_private_sample_votes_once(backend):
    p, pl, s, sl = _data()
    a = assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s, synthetic_labels=sl, k=1, backend=backend)
    assert a.shape == (len(p), 1)
    assert torch.equal(sl[a[:, 0]], pl)  # votes only for own class
    h = vote_histogram(a, num_synthetic=len(s))
    assert h.sum().item() == len(p)  # one vote per private sample


def test_k_nearest_votes_have_l2_sensitivity_one():
    p, pl, s, sl = _data()
    k = 4
    a = assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s, synthetic_labels=sl, k=k)
    full = vote_histogram(a, num_synthetic=len(s))
    without_one = vote_histogram(a[1:], num_synthetic=len(s))
    assert torch.linalg.vector_norm(full - without_one).item() == pytest.approx(1.0)
    assert len(torch.unique(a[0])) == k  # k distinct synthetic samples


def test_histogram_rejects_missing_votes():
    with pytest.raises(ValueError, match="did not vote"):
        vote_histogram(torch.tensor([[0], [-1]]), num_synthetic=3)


def test_class_with_too_few_synthetic_samples_is_an_error():
    p, pl, s, sl = _data()
    with pytest.raises(ValueError, match="synthetic samples"):
        assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s[:2], synthetic_labels=sl[:2], k=1)


def test_noise_has_the_requested_std_and_is_a_function_of_key_and_iteration():
    h = torch.zeros(200_000, dtype=torch.float64)
    sigma = 7.5
    key = NoiseKey.generate()
    n1 = add_gaussian_noise(h, noise_multiplier=sigma, key=key, iteration=3)
    n2 = add_gaussian_noise(h, noise_multiplier=sigma, key=key, iteration=3)
    assert torch.equal(n1, n2)  # every rank holding the key draws the same noise
    assert not torch.equal(n1, add_gaussian_noise(h, noise_multiplier=sigma, key=key, iteration=4))
    assert not torch.equal(n1, add_gaussian_noise(h, noise_multiplier=sigma, key=NoiseKey.generate(), iteration=3))
    assert n1.std().item() == pytest.approx(sigma, rel=0.01)
    assert abs(n1.mean().item()) < 0.1
    assert torch.equal(add_gaussian_noise(h, noise_multiplier=0.0, key=key, iteration=1), h)
    with pytest.raises(ValueError, match="noise_multiplier"):
        add_gaussian_noise(h, noise_multiplier=float("nan"), key=key, iteration=1)


def test_threshold_clips_at_zero():
    out = apply_threshold(torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64), threshold=2.0)
    assert out.tolist() == [0.0, 0.0, 3.0]


def test_selection_is_within_class_and_proportional():
    labels = torch.tensor([0, 0, 1, 1, 1])
    weights = torch.tensor([1.0, 3.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    idx = select_parents(weights=weights, labels=labels, num_per_class=[4000, 6000], generator=torch.Generator().manual_seed(0))
    assert len(idx) == 10_000
    assert (labels[idx[:4000]] == 0).all() and (labels[idx[4000:]] == 1).all()
    counts = torch.bincount(idx, minlength=5).double()
    assert counts[1] / counts[0] == pytest.approx(3.0, rel=0.1)
    assert counts[2] == 0  # zero weight is never selected


def test_all_zero_histogram_falls_back_to_uniform_with_a_warning():
    labels = torch.tensor([0, 0, 0, 1, 1])
    weights = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    with pytest.warns(ZeroHistogramWarning, match="class '0'"):
        idx = select_parents(weights=weights, labels=labels, num_per_class=[3000, 10], generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(idx[:3000], minlength=3).double()
    assert not torch.isnan(counts).any()
    assert (counts > 800).all()  # roughly uniform over the three class-0 samples
    assert (idx[3000:] == 3).all()


def test_selection_rejects_nan_weights():
    with pytest.raises(ValueError, match="NaN"):
        select_parents(weights=torch.tensor([math.nan]), labels=torch.tensor([0]), num_per_class=[1], generator=torch.Generator())


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="search backend"):
        nearest_neighbors(torch.zeros(1, 2), torch.zeros(1, 2), backend="annoy")


@pytest.mark.parametrize("k", [1, 3])
def test_torch_backend_in_small_blocks_equals_one_block(k, monkeypatch):
    q, _, keys, _ = _data(m=500, n=300, d=32)
    whole = nearest_neighbors(q, keys, k=k, backend="torch", chunk_size=10_000, max_chunk_bytes=2**40)
    blocks = []
    real_addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        out = real_addmm(*args, **kwargs)
        blocks.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    budget = 37 * len(keys) * 4  # 37 private rows per block: the last block is ragged
    chunked = nearest_neighbors(q, keys, k=k, backend="torch", max_chunk_bytes=budget)
    assert torch.equal(chunked, whole)
    assert len(blocks) == math.ceil(len(q) / 37) and max(blocks) <= budget
    # A budget below one row still makes progress, one query row at a time.
    blocks.clear()
    assert torch.equal(nearest_neighbors(q[:5], keys, k=k, backend="torch", max_chunk_bytes=1), whole[:5])
    assert blocks == [len(keys) * 4] * 5
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        nearest_neighbors(q, keys, backend="torch", max_chunk_bytes=0)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_votes_do_not_depend_on_how_classes_are_laid_out(backend):
    # Synthetic samples grouped by class (contiguous slices, searched as views) or interleaved
    # (gathered copies) give the same votes, and so do small torch blocks.
    p, pl, s, sl = _data(m=400, n=150, classes=3)
    order = torch.argsort(sl, stable=True)
    grouped = assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s[order],
                           synthetic_labels=sl[order], backend=backend)
    interleaved = assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s, synthetic_labels=sl,
                               backend=backend, max_chunk_bytes=64)
    assert torch.equal(order[grouped], interleaved)
    one_class = assign_votes(private_embeddings=p, private_labels=torch.zeros_like(pl), synthetic_embeddings=s,
                             synthetic_labels=torch.zeros_like(sl), backend=backend)
    assert torch.equal(one_class, nearest_neighbors(p, s, backend=backend))


# ------------------------------------------------------------------ search on GPU (faiss-gpu faked over the real faiss)


class _FaissWithGPU:
    """The real faiss module plus faiss-gpu's entry points; ``knn_gpu`` runs the real exact search on what it is given."""

    def __init__(self, faiss, num_gpus: int = 1):
        import faiss.contrib.torch_utils  # noqa: F401 - the real faiss.knn then takes torch tensors

        self._faiss, self.num_gpus, self.calls, self.resources = faiss, num_gpus, [], 0

    def __getattr__(self, name):
        return getattr(self._faiss, name)

    def get_num_gpus(self):
        return self.num_gpus

    def StandardGpuResources(self):  # noqa: N802 - faiss's name
        self.resources += 1
        return object()

    def knn_gpu(self, res, xq, xb, k, metric, device):
        self.calls.append({"xq": xq, "xb": xb, "device": device})
        return self._faiss.knn(xq, xb, k, metric=metric)


def test_auto_backend_picks_by_device_and_says_which(monkeypatch, caplog):
    import faiss

    import pe_lightning.neighbors as voting

    monkeypatch.setattr(voting, "_ANNOUNCED", set())
    assert voting.resolve_backend("auto", "cpu") == "faiss"  # unchanged on the CPU
    assert voting.resolve_backend("auto", "cuda:1") == "torch"  # faiss-cpu: torch's matmuls on the GPU, no host copies
    monkeypatch.setattr(voting, "_faiss", lambda: _FaissWithGPU(faiss))
    assert voting.resolve_backend("auto", "cuda") == "faiss"  # faiss-gpu: knn_gpu on the tensors
    monkeypatch.setattr(voting, "_faiss", lambda: _FaissWithGPU(faiss, num_gpus=0))
    assert voting.resolve_backend("auto", "cuda") == "torch"  # faiss-gpu that sees no GPU

    def no_faiss():
        raise ImportError("no faiss")

    monkeypatch.setattr(voting, "_faiss", no_faiss)
    assert voting.resolve_backend("auto", "cpu") == "torch"
    q, _, keys, _ = _data()
    with caplog.at_level("INFO"):
        nearest_neighbors(q, keys, backend="auto")
        nearest_neighbors(q, keys, backend="auto")
    said = [r.getMessage() for r in caplog.records if "search_backend='auto'" in r.getMessage()]
    assert said == ["[PE] nearest-neighbour search (search_backend='auto') on cpu: torch (faiss is not installed)"]


@pytest.mark.parametrize("k", [1, 3])
def test_faiss_gpu_path_searches_the_tensors_without_copies_or_index(k, monkeypatch):
    import faiss

    import pe_lightning.neighbors as voting
    from pe_lightning.neighbors import _faiss_knn_gpu

    monkeypatch.setattr(voting, "_GPU_RESOURCES", {})
    fake = _FaissWithGPU(faiss)
    q, _, keys, _ = _data()
    first = _faiss_knn_gpu(fake, q, keys, k, faiss.METRIC_L2)
    second = _faiss_knn_gpu(fake, q[:50], keys, k, faiss.METRIC_L2)
    assert torch.equal(first, nearest_neighbors(q, keys, k=k, backend="torch"))
    assert torch.equal(second, first[:50])
    assert first.dtype == torch.int64 and first.device == q.device
    for call in fake.calls:  # the tensors themselves: no numpy round trip, no copy
        assert isinstance(call["xb"], torch.Tensor) and call["xb"].data_ptr() == keys.data_ptr()
        assert isinstance(call["xq"], torch.Tensor) and call["xq"].data_ptr() == q.data_ptr()
    assert fake.resources == 1 and len(fake.calls) == 2  # one StandardGpuResources per device and process, not per call


def test_names_that_moved_out_of_voting_still_import_from_it():
    import pe_lightning.voting as voting
    from pe_lightning import neighbors
    from pe_lightning.engine import release, selection

    assert voting.select_parents is selection.select_parents and voting.SELECTION_MODES == selection.SELECTION_MODES
    assert voting.add_gaussian_noise is release.add_gaussian_noise and voting.apply_threshold is release.apply_threshold
    assert voting.resolve_backend is neighbors.resolve_backend and voting.DISTANCES == neighbors.DISTANCES
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        voting.nope
