"""NearestImage: a public image set as RANDOM / VARIATION (k nearest public neighbours), every source form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pe_lightning.apis import NearestImage
from pe_lightning.apis import nearest_image as nearest_image_module
from pe_lightning.data.public import load_public_images
from pe_lightning.embeddings import PixelEmbedding

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["bar", "dot"]


def _image(kind: str, i: int) -> np.ndarray:
    """16 x 16 grayscale: a blurred vertical bar or a blurred dot at column ``x_i``.

    The columns ``x_i`` are spaced ever wider, so that nearby ``i`` are nearer in pixels and no
    two distances tie.
    """
    x = 1.5 + 0.9 * i + 0.04 * i * i
    rows, cols = np.mgrid[0:16, 0:16].astype(np.float64)
    if kind == "bar":
        img = np.exp(-((cols - x) ** 2) / (2 * 1.2 ** 2))
    else:
        img = 0.8 * np.exp(-((cols - x) ** 2 + (rows - 8) ** 2) / (2 * 1.5 ** 2))
    return np.round(255 * img).astype(np.uint8)


@pytest.fixture(scope="module")
def public_dir(tmp_path_factory) -> Path:
    """``<class>/<i>.png``: 12 bars and 10 dots at different columns."""
    root = tmp_path_factory.mktemp("public")
    for kind, n in (("bar", 12), ("dot", 10)):
        (root / kind).mkdir()
        for i in range(n):
            Image.fromarray(_image(kind, i)).save(root / kind / f"{i:02d}.png")
    return root


def _api(source, **kw) -> NearestImage:
    kw = {"image_size": 16, "channels": 1, "max_neighbors": 4, "search_backend": "torch", **kw}
    api = NearestImage(source=str(source), **kw)
    api.setup(class_names=CLASSES if kw.get("class_conditional", True) else None)
    return api


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_neighbours(images: np.ndarray, members: np.ndarray, k: int) -> dict[int, set[int]]:
    """The k nearest other members of each member, raw pixels, L2 (the test's own computation)."""
    x = torch.from_numpy(images[members].reshape(len(members), -1).astype(np.float64))
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return {int(members[i]): {int(members[j]) for j in d[i].topk(k, largest=False).indices} for i in range(len(members))}


def test_random_draws_public_images_of_the_class_deterministically(public_dir):
    api = _api(public_dir)
    labels = np.array([0] * 30 + [1] * 30)
    out = api.random(labels=labels, generator=_gen())
    assert out.images.shape == (60, 16, 16, 1) and out.images.dtype == np.uint8
    idx = out.conditions["public_index"]
    assert [api.public.class_names[c] for c in api.public.labels[idx]] == [CLASSES[c] for c in labels]
    assert np.array_equal(out.images, api.public.images[idx])
    again = api.random(labels=labels, generator=_gen())
    assert np.array_equal(again.conditions["public_index"], idx) and np.array_equal(again.images, out.images)
    assert not np.array_equal(api.random(labels=labels, generator=_gen(1)).conditions["public_index"], idx)
    assert len(np.unique(idx[:30])) > 6  # uniform over the class's 12 images, not stuck on one


@pytest.mark.parametrize("k", [1, 3])
def test_variation_returns_one_of_the_k_nearest_public_neighbours(public_dir, k):
    api = _api(public_dir)
    start = api.random(labels=np.array([0] * 40 + [1] * 40), generator=_gen())
    seen: dict[int, set[int]] = {}
    for seed in range(30):
        out = api.variation(images=start.images, conditions=start.conditions, labels=np.array([0] * 40 + [1] * 40),
                            degree=k, generator=_gen(seed))
        for old, new in zip(start.conditions["public_index"], out.conditions["public_index"]):
            seen.setdefault(int(old), set()).add(int(new))
        assert np.array_equal(out.images, api.public.images[out.conditions["public_index"]])
    for c in range(2):
        members = np.nonzero(api.public.labels == c)[0]
        expected = _brute_neighbours(api.public.images, members, k)
        for old, news in seen.items():
            if old in expected:
                # Only the k nearest, never the image itself, and (over 30 draws) each of them.
                assert news == expected[old], (old, news, expected[old])


def test_degree_zero_returns_the_same_images(public_dir):
    api = _api(public_dir)
    labels = np.array([0, 1, 1, 0])
    start = api.random(labels=labels, generator=_gen())
    out = api.variation(images=start.images, conditions=start.conditions, labels=labels, degree=0, generator=_gen(5))
    assert np.array_equal(out.conditions["public_index"], start.conditions["public_index"])
    assert np.array_equal(out.images, start.images)


def test_degree_is_an_integer_k_up_to_max_neighbors(public_dir):
    api = NearestImage(source=str(public_dir), max_neighbors=8)
    api.validate_degree(0)
    api.validate_degree(8.0)
    for bad in (0.5, 9, -1, float("nan"), "many"):
        with pytest.raises(ValueError, match="variation degree"):
            api.validate_degree(bad)


def test_k_is_capped_by_the_class_size(public_dir):
    # max_neighbors 20 > 9 other dots: a dot's variation draws from all 9 others.
    api = _api(public_dir, max_neighbors=20)
    assert set(api._graph["width"][api.public.labels == 1]) == {9}
    labels = np.ones(200, dtype=np.int64)
    start = api.random(labels=labels, generator=_gen())
    out = api.variation(images=start.images, conditions=start.conditions, labels=labels, degree=20, generator=_gen(1))
    assert (api.public.labels[out.conditions["public_index"]] == 1).all()
    assert (out.conditions["public_index"] != start.conditions["public_index"]).all()


def test_unconditional_pool_mixes_classes_and_neighbours_cross_them(public_dir):
    api = _api(public_dir, class_conditional=False)
    out = api.random(labels=np.zeros(200, dtype=np.int64), generator=_gen())
    assert set(api.public.labels[out.conditions["public_index"]]) == {0, 1}
    assert set(api._graph["width"]) == {4}


def test_cosine_graph_matches_brute_force(public_dir):
    api = _api(public_dir, distance="cosine", max_neighbors=2, search_backend="faiss")
    x = torch.nn.functional.normalize(torch.from_numpy(api.public.images.reshape(22, -1).astype(np.float64)), dim=1)
    members = np.nonzero(api.public.labels == 0)[0]
    sim = x[members] @ x[members].T
    sim.fill_diagonal_(-2)
    top = sim.topk(1).indices[:, 0].numpy()  # the most similar other bar is always listed first
    assert np.array_equal(api._graph["neighbors"][members, 0], members[top])


def test_graph_is_built_once_and_cached_on_disk(public_dir, tmp_path, monkeypatch):
    cache = tmp_path / "graphs"
    first = _api(public_dir, graph_cache_dir=str(cache))
    files = list(cache.glob("nearest_image_graph_*.npz"))
    assert len(files) == 1
    calls = []
    real = nearest_image_module.nearest_neighbors
    monkeypatch.setattr(nearest_image_module, "nearest_neighbors", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first.setup(class_names=CLASSES)  # same instance, same classes: kept in memory
    second = _api(public_dir, graph_cache_dir=str(cache))  # a new instance: read from disk
    assert calls == []
    assert np.array_equal(first._graph["neighbors"], second._graph["neighbors"])
    _api(public_dir, graph_cache_dir=str(cache), max_neighbors=3)  # other settings: a new graph
    assert calls and len(list(cache.glob("nearest_image_graph_*.npz"))) == 2


def test_npz_source_with_and_without_labels(public_dir, tmp_path):
    images = load_public_images(str(public_dir), image_size=16, channels=1)
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, images=images.images[..., 0], labels=images.labels, class_names=np.array(CLASSES))
    api = _api(labelled)
    assert api.public.class_names == CLASSES and np.array_equal(api.public.images, images.images)
    plain = tmp_path / "plain.npz"
    np.savez(plain, images=images.images)
    api = _api(plain, class_conditional=False, channels=3, image_size=8)
    assert api.public.labels is None and api.public.images.shape == (22, 8, 8, 3)
    assert api.random(labels=np.zeros(3, dtype=np.int64), generator=_gen()).images.shape == (3, 8, 8, 3)


def test_folder_of_loose_images_is_an_unlabelled_set(public_dir, tmp_path):
    for i, path in enumerate(sorted((public_dir / "bar").glob("*.png"))):
        (tmp_path / f"{i}.png").write_bytes(path.read_bytes())
    api = _api(tmp_path, class_conditional=False)
    assert api.public.labels is None and len(api.public.images) == 12


def test_hugging_face_dataset_saved_to_disk(public_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    ref = load_public_images(str(public_dir), image_size=16, channels=1)
    features = datasets.Features({"img": datasets.Image(), "kind": datasets.ClassLabel(names=CLASSES)})
    ds = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(x[..., 0]) for x in ref.images], "kind": ref.labels.tolist()}, features=features
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    api = _api(f"hf:{tmp_path / 'hf'}", hf_image_column="img", hf_label_column="kind")
    assert api.public.class_names == CLASSES
    assert np.array_equal(api.public.images, ref.images) and np.array_equal(api.public.labels, ref.labels)
    with pytest.raises(ValueError, match="no image column 'image'.*hf_image_column"):
        _api(f"hf:{tmp_path / 'hf'}", hf_label_column="kind")


def test_sklearn_digits_is_a_ten_class_offline_set():
    public = load_public_images("sklearn:digits", image_size=28, channels=1)
    assert public.images.shape == (1797, 28, 28, 1) and public.class_names == [str(c) for c in range(10)]
    assert public.images[:, :3].max() == 0 and public.images[:, 10:18].max() == 255  # MNIST-like margin


def test_bad_inputs_are_named(public_dir, tmp_path):
    with pytest.raises(ValueError, match=r"private classes \['cat'\].*public classes: \['bar', 'dot'\]"):
        NearestImage(source=str(public_dir), image_size=16).setup(class_names=["bar", "cat"])
    np.savez(tmp_path / "plain.npz", images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="has no labels.*class_conditional: false"):
        NearestImage(source=str(tmp_path / "plain.npz")).setup(class_names=["a"])
    np.savez(tmp_path / "nothing.npz", pixels=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="no 'images' array"):
        NearestImage(source=str(tmp_path / "nothing.npz"), class_conditional=False).setup()
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        NearestImage(source=str(tmp_path / "no_such_folder")).setup(class_names=["a"])
    with pytest.raises(ValueError, match="distance must be one of"):
        NearestImage(source="x", distance="hamming")
    with pytest.raises(ValueError, match="max_neighbors"):
        NearestImage(source="x", max_neighbors=0)
    api = _api(public_dir)
    start = api.random(labels=np.array([0, 1]), generator=_gen())
    with pytest.raises(ValueError, match=r"public_index.*must lie in \[0, 22\)"):
        api.variation(images=start.images, conditions={"public_index": np.array([0, 99])}, labels=np.array([0, 1]),
                      degree=1, generator=_gen())
    with pytest.raises(ValueError, match="not a public image of the sample's class"):
        api.variation(images=start.images, conditions=start.conditions, labels=np.array([1, 0]), degree=1,
                      generator=_gen())
    with pytest.raises(RuntimeError, match="call setup"):
        NearestImage(source=str(public_dir)).random(labels=np.zeros(1, dtype=np.int64), generator=_gen())


def test_builds_through_the_cli_config(public_dir):
    """The shipped config parses and its API section builds the class (jsonargparse, nested embedding)."""
    from pe_lightning.cli import main

    cli = main(["--config", str(ROOT / "configs/mnist_nearest_image.yaml"),
                f"--model.init_args.api.init_args.source={public_dir}"], run=False)
    api = cli.model.api
    assert isinstance(api, NearestImage) and isinstance(api.embedding, PixelEmbedding)
    assert api.max_neighbors == 32 and cli.model.variation_degrees == [32, 16, 8, 4]


def test_pe_fit_evolves_public_digits_of_each_class(tmp_path):
    """A PE fit with NearestImage: every synthetic digit is a public digit of its own class.

    (``tests/test_shipped_configs.py`` runs ``configs/mnist_nearest_image.yaml`` through ``python -m``.)
    """
    from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

    api = NearestImage(source="sklearn:digits", max_neighbors=8)
    model = tiny_model(api=api, noise_multiplier=1.0, variation_degrees=[8, 2], num_samples_per_class=6)
    tiny_trainer(tmp_path).fit(model, datamodule=tiny_datamodule(100))
    pop = model.population
    assert pop.images.shape == (60, 28, 28, 1) and model.iteration == 2
    index = pop.conditions["public_index"]
    assert np.array_equal(pop.images, api.public.images[index])
    assert [api.public.class_names[c] for c in api.public.labels[index]] == [str(c) for c in pop.labels]
