"""Search distances: L2, cosine and inner product agree between faiss and torch and with brute force."""

import pytest
import torch

from pe_lightning.neighbors import DISTANCES, nearest_neighbors
from pe_lightning.voting import assign_votes


def _data(m=300, n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Unequal norms, so that cosine and inner product rank differently.
    scale = torch.rand(n, 1, generator=g) * 3 + 0.1
    return torch.randn(m, d, generator=g), torch.randn(n, d, generator=g) * scale


def _brute_force(q: torch.Tensor, keys: torch.Tensor, k: int, distance: str) -> torch.Tensor:
    if distance == "l2":
        return torch.cdist(q.double(), keys.double()).topk(k, largest=False).indices
    if distance == "cosine":
        q, keys = torch.nn.functional.normalize(q.double(), dim=1), torch.nn.functional.normalize(keys.double(), dim=1)
    return (q.double() @ keys.double().T).topk(k, largest=True).indices


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("distance", DISTANCES)
def test_backends_agree_with_each_other_and_with_brute_force(distance, k):
    q, keys = _data()
    a = nearest_neighbors(q, keys, k=k, backend="faiss", distance=distance)
    b = nearest_neighbors(q, keys, k=k, backend="torch", distance=distance, chunk_size=7)
    c = nearest_neighbors(q, keys, k=k, backend="torch", distance=distance, max_chunk_bytes=4 * len(keys) * 3)
    assert torch.equal(a, b) and torch.equal(b, c)
    assert torch.equal(b, _brute_force(q, keys, k, distance))


def test_the_three_distances_rank_differently():
    q, keys = _data()
    found = {d: nearest_neighbors(q, keys, k=1, backend="torch", distance=d) for d in DISTANCES}
    assert not torch.equal(found["l2"], found["cosine"])
    assert not torch.equal(found["cosine"], found["ip"])


def test_default_is_l2_exactly():
    q, keys = _data()
    for backend in ("faiss", "torch"):
        assert torch.equal(nearest_neighbors(q, keys, k=3, backend=backend),
                           nearest_neighbors(q, keys, k=3, backend=backend, distance="l2"))


def test_cosine_is_scale_invariant_and_handles_zero_vectors():
    q, keys = _data()
    keys[5] = 0.0
    for backend in ("faiss", "torch"):
        a = nearest_neighbors(q, keys, k=2, backend=backend, distance="cosine")
        b = nearest_neighbors(q * 7.0, keys * torch.linspace(0.5, 4.0, len(keys))[:, None], k=2, backend=backend,
                              distance="cosine")
        assert torch.equal(a, b)
        assert not (a == 5).any()  # similarity 0 never beats the best of 120 random directions


@pytest.mark.parametrize("distance", DISTANCES)
def test_votes_use_the_distance_in_both_backends(distance):
    g = torch.Generator().manual_seed(1)
    p, s = torch.randn(200, 8, generator=g), torch.randn(90, 8, generator=g) * (torch.rand(90, 1, generator=g) + 0.2)
    pl, sl = torch.randint(0, 3, (200,), generator=g), torch.arange(90) % 3
    votes = {
        backend: assign_votes(private_embeddings=p, private_labels=pl, synthetic_embeddings=s, synthetic_labels=sl,
                              k=2, backend=backend, distance=distance)
        for backend in ("faiss", "torch")
    }
    assert torch.equal(votes["faiss"], votes["torch"])
    assert torch.equal(sl[votes["torch"]], pl[:, None].expand(-1, 2))
    # Within class c, the votes are the class's nearest synthetic samples under this distance.
    c = 1
    rows, cols = torch.nonzero(pl == c).flatten(), torch.nonzero(sl == c).flatten()
    assert torch.equal(votes["torch"][rows], cols[_brute_force(p[rows], s[cols], 2, distance)])


def test_unknown_distance_is_named():
    q, keys = _data()
    with pytest.raises(ValueError, match="distance must be one of .*'manhattan'"):
        nearest_neighbors(q, keys, distance="manhattan")
    with pytest.raises(ValueError, match="distance must be one of"):
        assign_votes(private_embeddings=q, private_labels=torch.zeros(len(q), dtype=torch.int64),
                     synthetic_embeddings=keys, synthetic_labels=torch.zeros(len(keys), dtype=torch.int64),
                     distance="L2")
