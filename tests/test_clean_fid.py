"""The paper's FID protocol pieces against the ``clean-fid`` package itself (no Inception weights needed)."""

from __future__ import annotations

import cleanfid.fid as cleanfid_fid  # the clean-fid package (dev dependency, pinned); imports offline, downloads nothing
import cleanfid.resize as cleanfid_resize
import numpy as np
import pytest
import torch

from pe_lightning.embeddings import CleanInceptionEmbedding, InceptionEmbedding
from pe_lightning.embeddings.clean_inception import inception_pool_features
from pe_lightning.metrics import feature_statistics, frechet_distance
from pe_lightning.metrics.clean_resize import clean_resize, resize_uint8


def _images(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (n, size // 4 + 1, size // 4 + 1, channels)).repeat(4, 1).repeat(4, 2)[:, :size, :size]
    noise = rng.integers(-30, 31, (n, size, size, channels))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)  # edges and flat areas, both exercise the filter


@pytest.mark.parametrize("size", [28, 32, 64, 299, 512])
def test_clean_resize_equals_clean_fids_resizer(size):
    images = _images(3, size)
    ours = clean_resize(images).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([cleanfid_resize.build_resizer("clean")(im) for im in images])  # PIL bicubic, floats, to 299
    assert ours.shape == theirs.shape == (3, 299, 299, 3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-3)  # 0..255 scale; PIL keeps float32


def test_clean_resize_repeats_gray_to_rgb_like_clean_fid():
    gray = _images(2, 32, channels=1)
    ours = clean_resize(gray).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([cleanfid_resize.build_resizer("clean")(np.repeat(im, 3, axis=2)) for im in gray])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-3)


@pytest.mark.parametrize("source,target", [(64, 32), (256, 64), (32, 64)])
def test_resize_uint8_equals_dpsdas_pre_resize(source, target):
    images = _images(4, source)
    ours = resize_uint8(images, size=target).numpy()
    resizer = cleanfid_resize.make_resizer("PIL", False, "bicubic", (target, target))
    theirs = np.stack([np.around(np.clip(resizer(im), 0, 255)).astype(np.uint8) for im in images])  # DPSDA round_to_uint8
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # only values within float rounding of a half-integer


def test_resize_uint8_keeps_images_already_at_the_size():
    images = _images(2, 32)
    assert np.array_equal(resize_uint8(images, size=32).numpy(), images)


@pytest.mark.parametrize("dim,n1,n2", [(8, 50, 80), (64, 300, 200)])
def test_frechet_distance_equals_clean_fids(dim, n1, n2):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(n1, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(0.3, 1.2, size=(n2, dim)) @ rng.normal(size=(dim, dim))
    ours = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert ours == pytest.approx(cleanfid_fid.fid_from_feats(a, b), rel=1e-7)
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    assert ours == pytest.approx(cleanfid_fid.frechet_distance(mu1, s1, mu2, s2), rel=1e-7)


def test_pool_features_on_299px_floats_equal_torch_fidelitys_forward(random_inception_weights):
    """The float path runs the same layers as torch-fidelity (whose TF1 resize is the identity at 299 px)."""
    net = InceptionEmbedding(weights_path=random_inception_weights)
    net.setup(device="cpu")
    x = torch.from_numpy(_images(2, 299)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        (expected,) = net._net(x)
        ours = inception_pool_features(net._net, x.float())
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="299"):
        inception_pool_features(net._net, x[:, :, :64, :64].float())


def test_clean_inception_embeds_at_the_private_resolution(random_inception_weights):
    emb = CleanInceptionEmbedding(resolution=32, weights_path=random_inception_weights)
    big = _images(3, 64)
    features = emb.embed(big, batch_size=2)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    # a 64 px image is embedded as its 32 px bicubic version, as DPSDA's Inception(res=32)
    torch.testing.assert_close(features, emb.embed(resize_uint8(big, size=32).numpy()))
    assert not torch.allclose(features, CleanInceptionEmbedding(weights_path=random_inception_weights).embed(big))
    plain = InceptionEmbedding(weights_path=random_inception_weights)
    assert not torch.allclose(emb.embed(big[:, :32, :32]), plain.embed(big[:, :32, :32]))  # bilinear vs bicubic
    assert emb.fingerprint != CleanInceptionEmbedding(resolution=64, weights_path=random_inception_weights).fingerprint
    assert emb.fingerprint != plain.fingerprint


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "32"])
def test_clean_inception_rejects_a_bad_resolution(bad):
    with pytest.raises(ValueError, match="resolution"):
        CleanInceptionEmbedding(resolution=bad)
