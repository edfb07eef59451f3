"""Tests of the embeddings (offline: no weights are downloaded)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pe_lightning.embeddings import Embedding, InceptionEmbedding, PixelEmbedding
from pe_lightning.embeddings.inception import INCEPTION_WEIGHTS_FILENAME, INCEPTION_WEIGHTS_URL


def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, c), generator=gen, dtype=torch.uint8).numpy()


# --------------------------------------------------------------------------- pixels


def test_pixels_default_is_flattened_scaled_pixels() -> None:
    imgs = random_images(5, 28, 28, 1)
    emb = PixelEmbedding()
    assert isinstance(emb, Embedding)
    out = emb.embed(imgs)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (5, 784)
    torch.testing.assert_close(out, torch.from_numpy(imgs.reshape(5, -1).astype(np.float32) / 255))
    assert emb.dim == 784
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    # torch input, any batch size: same result
    torch.testing.assert_close(emb.embed(torch.from_numpy(imgs), batch_size=2), out)


def test_pixels_rgb_keeps_hwc_order() -> None:
    imgs = random_images(3, 4, 5, 3)
    out = PixelEmbedding().embed(imgs)
    assert out.shape == (3, 60)
    torch.testing.assert_close(out, torch.from_numpy(imgs.reshape(3, -1).astype(np.float32) / 255))


def test_pixels_resize_grayscale_shapes_and_ranges() -> None:
    rgb = random_images(4, 32, 32, 3)
    out = PixelEmbedding(size=16, grayscale=True).embed(rgb, batch_size=3)
    assert out.shape == (4, 256) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert PixelEmbedding(size=8).embed(rgb).shape == (4, 192)
    assert PixelEmbedding(grayscale=True).embed(random_images(2, 28, 28, 1)).shape == (2, 784)
    # constant images stay constant after the antialiased resize; luma of pure red
    red = np.zeros((1, 10, 10, 3), np.uint8)
    red[..., 0] = 255
    feat = PixelEmbedding(size=4, grayscale=True).embed(red)
    torch.testing.assert_close(feat, torch.full((1, 16), 0.299))


def test_pixels_l2_norms() -> None:
    imgs = random_images(6, 28, 28, 1)
    imgs[0] = 0  # an all-black image stays the zero vector
    out = PixelEmbedding(normalize="l2").embed(imgs)
    norms = out.norm(dim=1)
    assert float(norms[0]) == 0.0
    torch.testing.assert_close(norms[1:], torch.ones(5))
    raw = PixelEmbedding().embed(imgs)
    torch.testing.assert_close(out[1:], raw[1:] / raw[1:].norm(dim=1, keepdim=True))


def test_pixels_dim_before_embed() -> None:
    emb = PixelEmbedding(size=8)
    with pytest.raises(RuntimeError, match="image_shape"):
        _ = emb.dim
    assert PixelEmbedding(size=8, grayscale=True).dim == 64
    assert PixelEmbedding(image_shape=(28, 28, 1)).dim == 784
    assert PixelEmbedding(size=8, image_shape=(32, 32, 3)).dim == 192
    emb.embed(random_images(1, 32, 32, 3))
    assert emb.dim == 192
    with pytest.raises(ValueError, match="192-d"):
        emb.embed(random_images(1, 32, 32, 1))  # 64-d: not comparable
    assert PixelEmbedding().embed(np.zeros((0, 28, 28, 1), np.uint8)).shape == (0, 784)


def test_pixels_fingerprint() -> None:
    fp = PixelEmbedding().fingerprint
    assert fp == PixelEmbedding().fingerprint
    assert fp == PixelEmbedding(size=None, grayscale=False, normalize="none").fingerprint
    assert len(fp) == 16
    others = {
        PixelEmbedding(size=14).fingerprint,
        PixelEmbedding(grayscale=True).fingerprint,
        PixelEmbedding(normalize="l2").fingerprint,
        PixelEmbedding(size=14, normalize="l2").fingerprint,
    }
    assert len(others) == 4 and fp not in others
    expected = {"size": 14, "grayscale": False, "normalize": "none", "image_shape": None}
    assert PixelEmbedding(size=14).config() == expected
    # embedding does not change the fingerprint
    emb = PixelEmbedding()
    emb.embed(random_images(1, 28, 28, 1))
    assert emb.fingerprint == fp


@pytest.mark.parametrize(
    "kwargs, field",
    [({"normalize": "l1"}, "normalize"), ({"size": 0}, "size"), ({"image_shape": (28, 28, 2)}, "image_shape")],
)
def test_pixels_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PixelEmbedding(**kwargs)


def test_pixels_bad_input() -> None:
    emb = PixelEmbedding()
    with pytest.raises(ValueError, match="uint8"):
        emb.embed(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        emb.embed(np.zeros((2, 28, 28, 2), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        emb.embed(np.zeros((28, 28, 1), np.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        emb.embed(np.zeros((2, 28, 28, 1), np.uint8), batch_size=0)


# --------------------------------------------------------------------------- inception


def test_inception_url_matches_torch_fidelity() -> None:
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    assert INCEPTION_WEIGHTS_URL == tfi.URL_INCEPTION_V3
    assert INCEPTION_WEIGHTS_URL.endswith("/" + INCEPTION_WEIGHTS_FILENAME)


def test_inception_init_is_lazy_and_missing_file_is_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    emb = InceptionEmbedding(weights_path=str(missing))  # no load in __init__
    assert emb.dim == 2048
    with pytest.raises(RuntimeError) as info:
        emb.setup()
    msg = str(info.value)
    assert str(missing) in msg and INCEPTION_WEIGHTS_FILENAME in msg and INCEPTION_WEIGHTS_URL in msg
    assert "weights_path" in msg


def test_inception_offline_without_cache_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(tfi, "load_state_dict_from_url", no_network)
    with pytest.raises(RuntimeError) as info:
        InceptionEmbedding().setup()
    msg = str(info.value)
    assert INCEPTION_WEIGHTS_URL in msg and "weights_path" in msg and str(tmp_path / "hub") in msg


def test_inception_corrupt_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="could not load Inception weights"):
        InceptionEmbedding(weights_path=str(bad)).setup()


def test_inception_forward_shapes(random_inception_weights: str) -> None:
    """4 images through the full network (~0.3 s each on 2 CPU cores)."""
    emb = InceptionEmbedding(weights_path=random_inception_weights)
    emb.setup(device="cpu")
    seen: list[torch.Tensor] = []
    emb._net.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))

    gray = random_images(2, 28, 28, 1)
    out = emb.embed(gray, batch_size=2)
    assert out.shape == (2, 2048) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all() and out.abs().max() > 1e-3
    assert not torch.allclose(out[0], out[1])  # different images, different features
    # the network got uint8 NCHW with the gray channel replicated to 3
    assert [tuple(x.shape) for x in seen] == [(2, 3, 28, 28)]
    assert seen[0].dtype == torch.uint8
    torch.testing.assert_close(seen[0], torch.from_numpy(gray).permute(0, 3, 1, 2).expand(-1, 3, -1, -1))

    rgb = torch.from_numpy(random_images(2, 32, 32, 3, seed=1))
    out_rgb = emb.embed(rgb, batch_size=1)  # two forward passes
    assert out_rgb.shape == (2, 2048) and torch.isfinite(out_rgb).all()
    assert [tuple(x.shape) for x in seen[1:]] == [(1, 3, 32, 32)] * 2
    torch.testing.assert_close(torch.cat(seen[1:]), rgb.permute(0, 3, 1, 2))

    emb.setup()  # idempotent: no reload
    assert emb.fingerprint == InceptionEmbedding(weights_path=random_inception_weights).fingerprint
    assert emb.fingerprint != InceptionEmbedding().fingerprint


def test_embeddings_return_ordinary_tensors_that_can_be_updated_in_place(random_inception_weights: str) -> None:
    """Regression: Inception returned inference-mode tensors, and the lookahead mean (``emb.add_(e)``,
    ``emb.div_(k)``) then raised 'Inplace update to inference tensor outside InferenceMode'."""
    images = random_images(2, 16, 16, 3)
    for emb in (InceptionEmbedding(weights_path=random_inception_weights), PixelEmbedding()):
        out = emb.embed(images)
        assert not out.is_inference() and not out.requires_grad
        expected = out * 2 / 3
        out.add_(emb.embed(images)).div_(3)  # what PrivateEvolution does with k lookahead embeddings
        torch.testing.assert_close(out, expected)


@pytest.mark.slow
def test_pe_fit_with_inception_and_lookahead(random_inception_weights: str, tmp_path: Path) -> None:
    """The crash path itself: a fit with Inception voting and lookahead >= 2 passes iteration 1 (~5 s)."""
    from pe_testing import tiny_datamodule, tiny_model, tiny_trainer

    model = tiny_model(embedding=InceptionEmbedding(weights_path=random_inception_weights), iterations=1,
                       variation_degrees=[0.5], num_samples_per_class=1, lookahead_degree=2, noise_multiplier=1.0)
    tiny_trainer(tmp_path, max_epochs=1).fit(model, datamodule=tiny_datamodule(num_private=20))
    assert model.iteration == 1 and len(model.population) == 10


def test_inception_forward_passes_are_capped_at_max_batch_size(random_inception_weights: str) -> None:
    emb = InceptionEmbedding(weights_path=random_inception_weights, max_batch_size=2)
    emb.setup()
    seen: list[int] = []
    emb._net.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    images = random_images(3, 16, 16, 3)
    capped = emb.embed(images, batch_size=2048)  # PrivateEvolution's default embedding_batch_size
    assert seen == [2, 1]
    whole = InceptionEmbedding(weights_path=random_inception_weights, max_batch_size=8).embed(images)
    torch.testing.assert_close(capped, whole, rtol=1e-5, atol=1e-5)  # sub-batches do not change the features
    assert InceptionEmbedding().max_batch_size == 256
    assert emb.fingerprint == InceptionEmbedding(weights_path=random_inception_weights).fingerprint
    with pytest.raises(ValueError, match="max_batch_size"):
        InceptionEmbedding(max_batch_size=0)


def test_fingerprint_includes_device_and_float32_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU and GPU features (or GPU features with and without TF32) differ: their caches must not mix."""
    from pe_lightning.devices import numerics

    assert numerics("cpu") == {"device": "cpu", "float32_matmul_precision": torch.get_float32_matmul_precision()}
    for emb in (PixelEmbedding(), InceptionEmbedding()):
        cpu = emb.fingerprint
        emb.device = torch.device("meta")  # any other device
        assert emb.fingerprint != cpu
        emb.device = torch.device("cpu")
        assert emb.fingerprint == cpu
        precision = torch.get_float32_matmul_precision()
        try:
            torch.set_float32_matmul_precision("high" if precision == "highest" else "highest")  # TF32 on/off
            assert emb.fingerprint != cpu
        finally:
            torch.set_float32_matmul_precision(precision)


def test_to_device_keeps_cpu_tensors_and_values():
    from pe_lightning.devices import to_device

    x = torch.arange(6, dtype=torch.uint8).reshape(2, 3)
    assert to_device(x, "cpu") is x
    if torch.cuda.is_available():  # pinned, non-blocking path
        y = to_device(x, "cuda")
        torch.cuda.synchronize()
        assert y.is_cuda and torch.equal(y.cpu(), x)


# Per shipped embedding: valid constructor arguments, and another valid value for every argument.
_FINGERPRINT_CASES = {
    "PixelEmbedding": ({}, {"size": 14, "grayscale": True, "normalize": "l2", "image_shape": (28, 28, 1)}),
    "InceptionEmbedding": ({}, {"weights_path": "/elsewhere/inception.pth", "max_batch_size": 7}),
    "CleanInceptionEmbedding": ({}, {"resolution": 32, "weights_path": "/elsewhere/inception.pth", "max_batch_size": 7}),
    "HOGEmbedding": ({}, {"orientations": 8, "pixels_per_cell": 7, "cells_per_block": 2, "block_norm": "L1",
                          "transform_sqrt": True, "image_shape": (28, 28, 1), "dtype": "float64"}),
    "MultiScaleHOGEmbedding": ({}, {"pixels_per_cell": (4,), "pixel_size": 7, "pixel_weight": 2.0, "orientations": 8,
                                    "cells_per_block": 2, "block_norm": "L1", "transform_sqrt": True,
                                    "image_shape": (28, 28, 1), "dtype": "float64"}),
    "CLIPEmbedding": (
        {"model": "tiny", "pretrained": None},
        {"model": "other", "pretrained": "openai", "cache_dir": "/elsewhere", "normalize": False, "precision": "bf16",
         "init_seed": 1, "model_config": {"embed_dim": 8, "vision_cfg": {}, "text_cfg": {}}},
    ),
}


def _shipped_embeddings() -> list[type]:
    import inspect
    import pkgutil
    import importlib

    import pe_lightning.embeddings as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    found, todo = [], list(Embedding.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("pe_lightning.") and not inspect.isabstract(cls):
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def test_every_shipped_embeddings_fingerprint_changes_with_every_argument_that_changes_its_features() -> None:
    import inspect

    shipped = _shipped_embeddings()
    assert {c.__name__ for c in shipped} >= {"PixelEmbedding", "InceptionEmbedding", "CLIPEmbedding"}
    for cls in shipped:
        assert cls.__name__ in _FINGERPRINT_CASES, f"add {cls.__name__} to _FINGERPRINT_CASES"
        base, other = _FINGERPRINT_CASES[cls.__name__]
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert sorted(other) == sorted(params), f"{cls.__name__}: give another value for every argument"
        assert cls.fingerprint_ignores <= set(params)
        fingerprint = cls(**base).fingerprint
        for name, value in other.items():
            changed = cls(**{**base, name: value}).fingerprint
            if name in cls.fingerprint_ignores:
                assert changed == fingerprint, f"{cls.__name__}({name}=...) is declared not to change the features"
            else:
                assert changed != fingerprint, f"{cls.__name__}({name}=...) does not change the fingerprint"


def test_an_embedding_must_state_its_config() -> None:
    class Forgetful(Embedding):
        dim = 3

        def embed(self, images, *, batch_size=1024):
            return torch.zeros(len(images), 3)

    with pytest.raises(TypeError, match="abstract method.*config"):
        Forgetful()
