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


def _skimage_bins(g_row: np.ndarray, g_col: np.ndarray, orientations: int) -> np.ndarray:
    """skimage's binning rule (``_hoghistogram``, float64): bin ``i`` holds ``180 i / n <= theta < 180 (i + 1) / n``."""
    theta = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    width = 180.0 / orientations
    out = np.full(theta.shape, -1)
    for i in range(orientations):
        out[(theta < width * (i + 1)) & (theta >= width * i)] = i
    return out


@pytest.mark.parametrize("orientations", [9, 8, 6, 12, 13, 14])
def test_every_integer_gradient_of_uint8_images_lands_in_skimages_bin(orientations):
    """uint8 images have integer gradients in [-255, 255]: all 511 x 511 pairs bin as skimage bins them.

    Angles exactly on a bin edge (0, 45, 90, 135 degrees; with 8, 12 or 14 bins some are edges) are where
    another arithmetic, e.g. ``floor(deg * n / 180)`` before wrapping negative angles, puts a pixel in the
    neighbouring bin.
    """
    from pe_lightning.embeddings.hog import _gradients, _orientation_slots

    g = np.arange(-255, 256, dtype=np.float64)
    g_row, g_col = np.meshgrid(g, g, indexing="ij")
    expected = _skimage_bins(g_row, g_col, orientations)
    for dtype in (torch.float32, torch.float64):
        # the row gradient negated as _gradients gives it: 0.0 - g keeps zeros +0
        slots = _orientation_slots(torch.from_numpy(0.0 - g_row).to(dtype), torch.from_numpy(g_col).to(dtype), orientations)
        bins = slots.clamp(max=orientations - 1).numpy()  # slot n: theta rounded up to 180, folded into the last bin
        np.testing.assert_array_equal(bins, expected, err_msg=str(dtype))
    # and the gradients they come from: central differences, the row one negated, +0 on the border
    x = torch.tensor([[[[0.0, 3.0, 5.0], [7.0, 1.0, 2.0], [4.0, 4.0, 9.0]]]])
    neg_row, col = _gradients(x)
    assert neg_row[0, 0].tolist() == [[0, 0, 0], [-4, -1, -4], [0, 0, 0]]
    assert col[0, 0].tolist() == [[0, 5, 0], [0, -5, 0], [0, 5, 0]]
    assert not bool((torch.signbit(neg_row) & (neg_row == 0)).any())  # no -0.0


def test_chunks_and_shared_scales_do_not_change_the_features(monkeypatch):
    """CPU chunking (a chunk per image here) and the multi-scale embedding's shared per-pixel work give the same numbers."""
    import pe_lightning.embeddings.hog as hog

    images = np.concatenate([_digits(5), _noise(5, 28, 28, 1)])
    rgb = _noise(4, 21, 30, 3)
    whole = HOGEmbedding().embed(images), MultiScaleHOGEmbedding(pixel_size=7).embed(images), HOGEmbedding().embed(rgb)
    monkeypatch.setattr(hog, "_CHUNK_PIXELS", 1)
    chunked = HOGEmbedding().embed(images), MultiScaleHOGEmbedding(pixel_size=7).embed(images), HOGEmbedding().embed(rgb)
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    ms = whole[1]
    torch.testing.assert_close(ms[:, 441:585], HOGEmbedding(pixels_per_cell=7).embed(images) / 4.0, rtol=0, atol=0)


def test_hog_features_refuses_non_finite_and_non_float_input_and_reads_minus_zero_as_zero():
    x = torch.from_numpy(_noise(3, 16, 16, 1)).permute(0, 3, 1, 2).float()
    with pytest.raises(ValueError, match="finite"):
        hog_features(torch.where(x > 250, torch.nan, x))
    with pytest.raises(ValueError, match="float"):
        hog_features(x.to(torch.uint8))
    x[..., 5:9, :] = 0.0
    minus = x.clone()
    minus[minus == 0] = -0.0  # a -0 - (+0) gradient would otherwise read as -180 degrees, not 0
    assert torch.equal(hog_features(minus), hog_features(x))


@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (2, 21, 30, 3), (2, 9, 1, 1), (2, 1, 9, 1), (1, 2, 2, 3), (5, 8, 12, 1)])
def test_uint8_lookup_path_is_bit_identical_to_the_float_path(shape):
    """uint8 images take the look-up path (integer gradient pairs -> table of bins and magnitudes); floats the per-pixel one."""
    from pe_lightning.embeddings.hog import _gradients, _pair_index

    images = _noise(*shape, seed=sum(shape))
    images[0, : shape[1] // 2] = 0  # flat regions: zero gradients
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    neg_row, col = _gradients(x.double())
    assert torch.equal(_pair_index(x).double(), (neg_row + 255) * 511 + col + 255)
    cell = (min(2, shape[1]), min(2, shape[2]))
    for kwargs in ({"pixels_per_cell": cell}, {"pixels_per_cell": cell, "orientations": 13, "block_norm": "L1"},
                   {"pixels_per_cell": (1, 1), "cells_per_block": 1, "block_norm": "L2-Hys"}):
        for dtype in ("float32", "float64"):
            emb = HOGEmbedding(**kwargs, dtype=dtype)
            assert emb._features(torch.from_numpy(images)).dtype == getattr(torch, dtype)
            looked_up = emb.embed(images)
            per_pixel = hog_features(x.to(getattr(torch, dtype)), **{k: emb.config()[k] for k in
                                     ("orientations", "pixels_per_cell", "cells_per_block", "block_norm")}).float()
            assert torch.equal(looked_up, per_pixel), (kwargs, dtype)


def test_chunk_size_follows_the_thread_count_without_changing_the_features(monkeypatch):
    """One torch thread: chunks of 8 x _CHUNK_PIXELS (no pool to wake); more: _CHUNK_PIXELS. Same numbers either way."""
    import pe_lightning.embeddings.hog as hog

    x = torch.zeros(2000, 1, 28, 28, dtype=torch.uint8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert hog._chunk_step(x) == (hog._CHUNK_PIXELS * hog._ONE_THREAD_FACTOR) // 784
    images = np.concatenate([_digits(30), _noise(30, 28, 28, 1)] * 8)
    one = HOGEmbedding().embed(images), MultiScaleHOGEmbedding(pixel_size=7).embed(images)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert hog._chunk_step(x) == hog._CHUNK_PIXELS // 784
    two = HOGEmbedding().embed(images), MultiScaleHOGEmbedding(pixel_size=7).embed(images)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_the_deterministic_histogram_gives_the_same_features(monkeypatch):
    """On CUDA under deterministic algorithms (``Trainer(deterministic=True)``) ``bincount`` with weights
    refuses to run; the HOG then sums with ``index_add_``. Forced here on the CPU: the same features."""
    import pe_lightning.embeddings.hog as hog

    images, rgb = np.concatenate([_digits(6), _noise(6, 28, 28, 1)]), _noise(4, 21, 30, 3)
    embeddings = [HOGEmbedding(), MultiScaleHOGEmbedding(pixel_size=7), HOGEmbedding(**CONFIGS[1])]
    before = [e.embed(images) for e in embeddings] + [HOGEmbedding().embed(rgb)]
    real, calls = hog._weighted_counts, []

    def index_add_path(index, weights, *, length, deterministic=None):
        calls.append(length)
        return real(index, weights, length=length, deterministic=True)

    monkeypatch.setattr(hog, "_weighted_counts", index_add_path)
    after = [e.embed(images) for e in embeddings] + [HOGEmbedding().embed(rgb)]
    assert calls
    for a, b in zip(before, after):
        assert torch.equal(a, b)
