"""HOG embeddings (pe_lightning.embeddings.hog) against scikit-image, fingerprints, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pe_lightning.embeddings import HOGEmbedding, MultiScaleHOGEmbedding
from pe_lightning.embeddings.hog import hog_features

skimage_feature = pytest.importorskip("skimage.feature")


def _digits(n: int = 24, size: int = 28) -> np.ndarray:
    """Glyph images rendered by DrawText (public), uint8 (n, size, size, 1)."""
    from pe_lightning.apis.drawtext import DrawText

    api = DrawText(image_size=size, texts=[str(d) for d in range(10)])
    return api.random(labels=np.arange(n) % 10, generator=torch.Generator().manual_seed(0)).images


def _noise(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _skimage(images: np.ndarray, emb: HOGEmbedding) -> np.ndarray:
    kw = dict(orientations=emb.orientations, pixels_per_cell=emb.pixels_per_cell, cells_per_block=emb.cells_per_block,
              block_norm=emb.block_norm, transform_sqrt=emb.transform_sqrt, feature_vector=True)
    if images.shape[-1] == 1:
        return np.stack([skimage_feature.hog(im[..., 0], **kw) for im in images])
    return np.stack([skimage_feature.hog(im, channel_axis=-1, **kw) for im in images])


CONFIGS = [
    {},  # the plan's: 9 orientations, 4x4 cells, per-cell L2
    {"orientations": 8, "pixels_per_cell": 7, "cells_per_block": 2, "block_norm": "L2-Hys"},
    {"block_norm": "L1", "cells_per_block": (2, 3), "pixels_per_cell": (4, 5)},
    {"block_norm": "L1-sqrt", "orientations": 6},
    {"transform_sqrt": True, "block_norm": "L2-Hys", "cells_per_block": 2},
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_matches_skimage_on_glyphs(kwargs):
    images = _digits()
    for dtype in ("float64", "float32"):
        emb = HOGEmbedding(**kwargs, dtype=dtype)
        ref = _skimage(images, emb)
        ours = emb.embed(images).numpy()
        if not kwargs.get("transform_sqrt"):  # integer gradients: no orientation lies on a bin edge
            np.testing.assert_allclose(ours, ref, atol=1e-5)
        else:
            # sqrt intensities make orientations exactly on a bin edge possible (tan 60 deg = sqrt(3) / sqrt(1)):
            # torch's and numpy's atan2 round those to either side, moving that pixel to the neighbouring bin.
            close = np.abs(ours - ref) <= 1e-5
            assert close.mean() > 0.99


def test_matches_skimage_on_rgb_with_the_dominant_channel_and_odd_sizes():
    images = _noise(4, 21, 30, 3)
    for kwargs in ({"cells_per_block": 2, "block_norm": "L2-Hys"}, {"pixels_per_cell": (5, 4)}):
        emb = HOGEmbedding(**kwargs, dtype="float64")
        np.testing.assert_allclose(emb.embed(images).numpy(), _skimage(images, emb), atol=1e-6)


def test_batches_devices_and_dtype():
    images = _digits(10)
    emb = HOGEmbedding()
    out = emb.embed(images)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (10, 7 * 7 * 9) and emb.dim == 441
    torch.testing.assert_close(emb.embed(torch.from_numpy(images), batch_size=3), out)
    if torch.cuda.is_available():
        gpu = HOGEmbedding()
        gpu.setup(device="cuda")
        torch.testing.assert_close(gpu.embed(images), out, atol=1e-4, rtol=1e-4)
        assert gpu.fingerprint != emb.fingerprint  # other arithmetic, other cache entry


def test_fingerprint_changes_with_every_argument():
    base = HOGEmbedding()
    changed = [
        HOGEmbedding(orientations=8), HOGEmbedding(pixels_per_cell=7), HOGEmbedding(pixels_per_cell=(4, 7)),
        HOGEmbedding(cells_per_block=2), HOGEmbedding(block_norm="L2-Hys"), HOGEmbedding(transform_sqrt=True),
        HOGEmbedding(image_shape=(28, 28, 1)), HOGEmbedding(dtype="float64"),
    ]
    prints = {base.fingerprint} | {e.fingerprint for e in changed}
    assert len(prints) == 1 + len(changed)
    assert HOGEmbedding().fingerprint == base.fingerprint  # deterministic
    ms = MultiScaleHOGEmbedding()
    ms_changed = [
        MultiScaleHOGEmbedding(pixels_per_cell=(4, 14)), MultiScaleHOGEmbedding(pixel_size=7),
        MultiScaleHOGEmbedding(pixel_size=7, pixel_weight=2.0), MultiScaleHOGEmbedding(orientations=12),
        MultiScaleHOGEmbedding(block_norm="L1"), MultiScaleHOGEmbedding(cells_per_block=2),
        MultiScaleHOGEmbedding(transform_sqrt=True), MultiScaleHOGEmbedding(dtype="float64"),
    ]
    prints = {ms.fingerprint, base.fingerprint} | {e.fingerprint for e in ms_changed}
    assert len(prints) == 2 + len(ms_changed)
    assert MultiScaleHOGEmbedding(pixels_per_cell=[4]).fingerprint != base.fingerprint  # another class


def test_multiscale_is_weighted_concatenation_of_scales_and_pixels():
    images = _digits(6)
    emb = MultiScaleHOGEmbedding(pixels_per_cell=(4, 7), pixel_size=7, pixel_weight=0.5)
    out = emb.embed(images)
    assert out.shape == (6, 441 + 4 * 4 * 9 + 49) and emb.dim == out.shape[1]
    fine = HOGEmbedding(pixels_per_cell=4).embed(images) / 7.0  # 49 blocks
    coarse = HOGEmbedding(pixels_per_cell=7).embed(images) / 4.0  # 16 blocks
    torch.testing.assert_close(out[:, :441], fine)
    torch.testing.assert_close(out[:, 441:585], coarse)
    pixels = out[:, 585:]
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 0.5 / 7 + 1e-6
    # each HOG scale with per-cell L2 carries norm <= 1
    assert float(out[:, :441].norm(dim=1).max()) <= 1 + 1e-5


def test_bad_arguments_and_inputs_name_the_field():
    with pytest.raises(ValueError, match="block_norm"):
        HOGEmbedding(block_norm="L3")
    with pytest.raises(ValueError, match="orientations"):
        HOGEmbedding(orientations=1)
    with pytest.raises(ValueError, match="pixels_per_cell"):
        HOGEmbedding(pixels_per_cell=(4, 0))
    with pytest.raises(ValueError, match="cells_per_block"):
        HOGEmbedding(cells_per_block=(1, 2, 3))
    with pytest.raises(ValueError, match="dtype"):
        HOGEmbedding(dtype="float16")
    with pytest.raises(ValueError, match="image_shape"):
        HOGEmbedding(image_shape=(28, 28, 2))
    with pytest.raises(ValueError, match="pixel_size"):
        MultiScaleHOGEmbedding(pixel_size=0)
    with pytest.raises(ValueError, match="pixel_weight"):
        MultiScaleHOGEmbedding(pixel_size=7, pixel_weight=0.0)
    with pytest.raises(ValueError, match="fewer than one block"):
        HOGEmbedding(pixels_per_cell=8, cells_per_block=3).embed(_noise(1, 16, 16, 1))
    emb = HOGEmbedding()
    emb.embed(_noise(2, 28, 28, 1))
    with pytest.raises(ValueError, match="441-d"):
        emb.embed(_noise(2, 32, 32, 1))
    with pytest.raises(ValueError, match="uint8"):
        emb.embed(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(RuntimeError, match="image_shape"):
        _ = HOGEmbedding().dim
    assert HOGEmbedding(image_shape=(32, 32, 3)).dim == 8 * 8 * 9


def test_hog_features_sees_shape_not_ink_mass():
    """A bar and the same bar twice as bright have the same per-cell-normalised HOG; a rotated bar does not."""
    bar = torch.zeros(1, 1, 16, 16)
    bar[..., 4:12, 7:9] = 100.0
    bright = bar * 2
    turned = bar.transpose(-1, -2)
    h = lambda x: hog_features(x, pixels_per_cell=(8, 8))  # noqa: E731
    torch.testing.assert_close(h(bar), h(bright))
    assert float((h(bar) - h(turned)).norm()) > 0.5
