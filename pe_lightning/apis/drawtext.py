"""DrawText: a weight-free simulator "foundation model" that renders text with TrueType fonts.

Each sample is one string (a class name such as ``"7"``) drawn in one font, described by a
small set of parameters (the *API conditions*): font, text, stroke thickness, size, aspect
ratio, rotation, shear (slant), translation, blur and intensity. The RANDOM API draws the
parameters uniformly from their ranges; the VARIATION API perturbs the *parameters* of
existing samples (not their pixels) and renders them again.

Rendering is batched and fast (~93,000 RANDOM / ~67,000 VARIATION 28x28 images per second
on 2 CPU cores, benchmarks/api_throughput.py; ~50x
the one-image-at-a-time PIL rendering of the reference implementation):

1. Once per fit, every ``(font, text)`` glyph is rendered with PIL at a high resolution,
   reduced to a distance field (to its skeleton for ``stroke_mode="pen"``, to its outline
   for ``"outline"``), thresholded at a few stroke levels, box-downsampled into tiles
   centred on the glyph's centre of mass and pre-blurred at
   a few blur levels. The tiles form one stacked atlas ``(fonts*texts*strokes*blurs, T, T)``.
2. A batch is rendered by gathering each sample's tile (font, text, nearest stroke level,
   nearest blur level) and one bilinear ``grid_sample`` with per-sample affine maps
   (scale, aspect, shear, rotation, translation) plus the elastic warp (a bicubic
   upsampling of a ``G x G`` control grid). Both are linear in small per-sample
   coefficients, so the whole sampling grid is one matmul with a basis built once.
3. A tone curve (``tone_range``), the intensity and uint8 quantisation finish the images.

All randomness comes from the ``torch.Generator`` passed to each call.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.apis.base import APIOutput, ImageAPI

__all__ = ["DrawText", "FittedPriorWarning", "PRIORS"]


class FittedPriorWarning(UserWarning):
    """DrawText runs with ranges fitted to a data set's statistics (``prior="mnist_fitted"``).

    Information taken from a data set outside the DP mechanism: when that data set is the
    private one, the (epsilon, delta) guarantee does not cover it.
    """


#: Rendering priors. ``"public"`` (the default) encodes only public knowledge: the image
#: format (a ``S x S`` frame, uint8 gray levels) and typography (fonts, weights, slants);
#: nothing is taken from any data set. ``"mnist_fitted"`` holds the ranges that were fitted
#: to MNIST statistics (glyph box 20/28, centre of mass within 1 px, MNIST's pixel
#: histogram); opt-in only, warned with :class:`FittedPriorWarning`.
#:
#: Where each public default comes from:
#:
#: * ``size_range (0.3, 1.0)``: the glyph's longer side from a small glyph (about a third
#:   of the frame, still legible at 28 px: ~8 px) to one filling the frame.
#: * ``translate_range (-1, 1)`` with ``translate_units="frame"``: any position that keeps
#:   the glyph's box inside the frame (-1 / +1 = touching the left / right edge).
#: * ``rotation_range (-30, 30)`` degrees: text held at any angle short of turning one
#:   digit into another (6 / 9 need > 90 degrees).
#: * ``shear_range (-0.5, 0.5)``: slants from back-slanted to strongly italic
#:   (typographic italics are 0.2 - 0.35; handwriting slants further).
#: * ``aspect_range (0.5, 1.5)``: condensed to extended type widths.
#: * ``stroke_range`` outline ``(-0.04, 0.12)``: from the thinnest the DejaVu ExtraLight
#:   weight survives to heavier than Bold; pen ``(0.04, 0.25)``: hairline to a broad marker.
#: * ``blur_range (0, 1.0)`` pixels: from a sharp render to an out-of-focus scan.
#: * ``intensity_range (0.25, 1.0)``: ink from a quarter to full uint8 scale (faint to full contrast).
#: * ``tone_range (0, 1)``: the identity: ink coverage is the gray level (plain
#:   anti-aliasing, the generic convention of rendered text).
#: * ``warp_scale 0.1``: a smooth deformation of 5 % of the frame (one std), small next
#:   to a glyph, so that variation can bend a font towards a hand.
PRIORS: dict[str, dict] = {
    "public": dict(
        size_range=(0.3, 1.0), aspect_range=(0.5, 1.5), rotation_range=(-30.0, 30.0), shear_range=(-0.5, 0.5),
        stroke_range={"outline": (-0.04, 0.12), "pen": (0.04, 0.25)}, translate_range=(-1.0, 1.0),
        translate_units="frame", blur_range=(0.0, 1.0), intensity_range=(0.25, 1.0), tone_range=(0.0, 1.0),
        warp_scale=0.1, crossover_rate=0.5, adaptive_scale=True,
    ),
    "mnist_fitted": dict(
        size_range=(0.66, 0.72), aspect_range=(0.7, 1.2), rotation_range=(-12.0, 12.0), shear_range=(-0.25, 0.45),
        stroke_range={"outline": (-0.04, 0.03), "pen": (0.08, 0.19)}, translate_range=(0.0, 1.0),
        translate_units="pixels", blur_range=(0.0, 0.5), intensity_range=(0.95, 1.0), tone_range=(0.05, 0.8),
        warp_scale=0.15, crossover_rate=0.0, adaptive_scale=False,
    ),
}

#: Continuous parameters, in the order used internally; all stored as float32 ``(N,)``.
_CONTINUOUS = ("stroke", "size", "aspect", "rotation", "shear", "dx", "dy", "blur", "intensity")
#: Discrete parameters, stored as int64 ``(N,)``.
_DISCRETE = ("font", "text")
_FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")


def _default_fonts() -> list[str]:
    """The DejaVu TrueType fonts shipped with matplotlib, without the "Display" variants."""
    import matplotlib

    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = sorted(p for p in glob.glob(os.path.join(root, "DejaVu*.ttf")) if "Display" not in os.path.basename(p))
    if not paths:
        raise ValueError(f"fonts=None but no DejaVu*.ttf fonts were found in matplotlib's data folder {root}")
    return paths


def _resolve_fonts(fonts: Sequence[str] | None) -> list[str]:
    """Expand font files and folders into a sorted, de-duplicated list of font files."""
    if fonts is None:
        return _default_fonts()
    out: list[str] = []
    for entry in fonts:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"fonts entries must be non-empty path strings, got {entry!r}")
        path = os.path.expanduser(entry)
        if os.path.isdir(path):
            found = sorted(
                os.path.join(dirpath, name)
                for dirpath, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(_FONT_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"fonts: folder {entry!r} contains no .ttf/.otf/.ttc font files")
            out.extend(found)
        elif os.path.isfile(path):
            if not path.lower().endswith(_FONT_EXTENSIONS):
                raise ValueError(f"fonts: {entry!r} is not a .ttf/.otf/.ttc font file")
            out.append(path)
        else:
            raise ValueError(f"fonts: font path {entry!r} does not exist")
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _check_range(name: str, value: Sequence[float], *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> tuple[float, float]:
    """Validate a ``(lo, hi)`` pair of finite floats with ``lo <= hi`` inside optional bounds."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (lo, hi) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} must satisfy lo <= hi, got {value!r}")
    if low is not None and (lo < low or (low_open and lo <= low)):
        raise ValueError(f"{name} must lie {'above' if low_open else 'at or above'} {low}, got {value!r}")
    if high is not None and hi > high:
        raise ValueError(f"{name} must lie at or below {high}, got {value!r}")
    return lo, hi


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to a one-pixel-wide skeleton (vectorised)."""
    img = np.pad(mask, 1).astype(np.uint8)
    centre = img[1:-1, 1:-1]
    while True:
        changed = False
        for step in (0, 1):
            nb = [img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],
                  img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2]]  # P2..P9, clockwise from north
            p2, _, p4, _, p6, _, p8, _ = nb
            count = sum(n.astype(np.int8) for n in nb)
            transitions = sum(((nb[i] == 0) & (nb[(i + 1) % 8] == 1)).astype(np.int8) for i in range(8))
            if step == 0:
                side = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
            else:
                side = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
            remove = (centre == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return centre.astype(bool)


@functools.lru_cache(maxsize=8)
def _build_glyphs(
    font_paths: tuple[str, ...],
    texts: tuple[str, ...],
    stroke_mode: str,
    stroke_levels: tuple[float, ...],
    glyph_px: int,
    oversample: int,
) -> dict[str, np.ndarray]:
    """Render every ``(font, text)`` glyph at every stroke level into square tiles.

    Args:
        font_paths: font files (index = ``font`` condition).
        texts: strings (index = ``text`` condition).
        stroke_mode: ``"pen"`` (skeleton redrawn with a round pen of width ``stroke``) or
            ``"outline"`` (the font's outline grown/shrunk by ``stroke / 2`` on each side).
        stroke_levels: stroke values, as fractions of the glyph's longer side.
        glyph_px: longer side of the font's own glyph ink box in a tile, tile pixels.
        oversample: PIL renders at ``oversample`` times the tile resolution, then the
            masks are box-downsampled (anti-aliasing).

    Returns:
        ``tiles`` float32 ``(K, L, T, T)`` in [0, 1] for glyph ``k = font * len(texts) + text``
        and stroke level ``l``, each with an empty border; ``com`` float32 ``(K, L, 2)``, the
        (x, y) centre of mass of each tile in tile pixel-index coordinates; ``box`` float32
        ``(K, L, 2)``, the (width, height) of the ink box at each level, tile pixels. Arrays
        are read-only (shared between instances).
    """
    from PIL import Image, ImageDraw, ImageFont
    from scipy.ndimage import distance_transform_edt

    big = glyph_px * oversample  # longer side of the font's own glyph, hi-res pixels
    if stroke_mode == "pen":  # field = distance to the skeleton; ink where field < pen radius
        thresholds = [max(0.5, 0.5 * s * big) for s in stroke_levels]
    else:  # field = signed distance to the outline (< 0 inside); ink where field < radius
        thresholds = [0.5 * s * big for s in stroke_levels]
    pad = int(math.ceil(max(0.0, max(thresholds)))) + 2

    def render(font: "ImageFont.FreeTypeFont", text: str) -> np.ndarray:
        left, top, right, bottom = font.getbbox(text)
        margin = 4 + (bottom - top + right - left) // 10
        img = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
        ImageDraw.Draw(img).text((margin - left, margin - top), text, font=font, fill=255)
        return np.asarray(img) >= 128

    fields = []  # (field, com_y, com_x) in hi-res pixels
    for path in font_paths:
        for text in texts:
            probe = render(ImageFont.truetype(path, 100), text)
            ys, xs = np.nonzero(probe)
            if ys.size == 0:
                raise ValueError(f"texts: {text!r} draws no ink with font {path!r}")
            extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            ink = render(ImageFont.truetype(path, max(4, int(round(100 * big / extent)))), text)
            ys, xs = np.nonzero(ink)
            ink = np.pad(ink[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1], pad)
            cy, cx = (c.mean() for c in np.nonzero(ink))
            if stroke_mode == "pen":
                field = distance_transform_edt(~_thin(ink))
            else:
                field = np.where(ink, 0.5 - distance_transform_edt(ink), distance_transform_edt(~ink) - 0.5)
            fields.append((field.astype(np.float32), float(cy), float(cx)))

    # Common tile side: every glyph at its thickest level fits around its centre of mass,
    # with one tile pixel of slack for window rounding and a one-pixel empty border.
    half = 0.0
    for field, cy, cx in fields:
        ys, xs = np.nonzero(field < max(thresholds))
        half = max(half, cy - ys.min() + 0.5, ys.max() + 0.5 - cy, cx - xs.min() + 0.5, xs.max() + 0.5 - cx)
    tile = int(math.ceil(2 * half / oversample)) + 4
    win = tile * oversample

    tiles = np.zeros((len(fields), len(thresholds), tile, tile), np.float32)
    com = np.zeros((len(fields), len(thresholds), 2), np.float32)
    box = np.zeros((len(fields), len(thresholds), 2), np.float32)
    for k, (field, cy, cx) in enumerate(fields):
        oy, ox = int(round(cy - win / 2)), int(round(cx - win / 2))  # window origin, hi-res
        y0, x0 = max(0, oy), max(0, ox)
        y1, x1 = min(field.shape[0], oy + win), min(field.shape[1], ox + win)
        for level, threshold in enumerate(thresholds):
            ink = field < threshold
            ys, xs = np.nonzero(ink)
            if ys.size == 0:
                raise ValueError(
                    f"stroke_range: a stroke of {stroke_levels[level]:g} erases text {texts[k % len(texts)]!r} in "
                    f"font {font_paths[k // len(texts)]!r}; raise the lower end of stroke_range"
                )
            box[k, level] = ((xs.max() - xs.min() + 1) / oversample, (ys.max() - ys.min() + 1) / oversample)
            window = np.zeros((win, win), np.float32)
            window[y0 - oy: y1 - oy, x0 - ox: x1 - ox] = ink[y0:y1, x0:x1]
            tiles[k, level] = window.reshape(tile, oversample, tile, oversample).mean(axis=(1, 3))
            mass = tiles[k, level] / tiles[k, level].sum()
            com[k, level] = ((mass.sum(0) * np.arange(tile)).sum(), (mass.sum(1) * np.arange(tile)).sum())
    for array in (tiles, com, box):
        array.setflags(write=False)
    return {"tiles": tiles, "com": com, "box": box}


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(M, 1, H, W)`` images with zero padding (``sigma`` in pixels)."""
    if sigma <= 0:
        return images.clone()
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    images = F.conv2d(images, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    return F.conv2d(images, kernel.view(1, 1, 1, -1), padding=(0, radius))


class DrawText(ImageAPI):
    """Simulator API that renders text (e.g. digits) with TrueType fonts.

    White text on a black background. Each sample's glyph is scaled so that its ink box's
    longer side is ``size * image_size`` pixels, stretched horizontally by ``aspect``,
    slanted by ``shear``, rotated by ``rotation`` about its centre of mass, and placed with
    its centre of mass at the image centre plus ``(dx, dy)`` pixels; then blurred, passed
    through a fixed tone curve (``tone_range``) and scaled by ``intensity``. The default
    ranges (``prior="public"``, :data:`PRIORS`) encode only public knowledge (the frame and
    typography): glyphs from under a third of the frame to filling it, anywhere inside it, wide
    rotation, slant, width, weight, blur and contrast. PE is what moves the population onto
    the private data. ``prior="mnist_fitted"`` restores ranges fitted to MNIST (a 20-pixel
    box, centre of mass at the centre +- 1 px, MNIST's tone curve): an explicit opt-in that
    warns (:class:`FittedPriorWarning`) because, with MNIST private, what it encodes is not
    covered by the DP guarantee.
    ``stroke_mode="pen"`` redraws each font's skeleton with a round pen instead (monoline,
    handwriting-like strokes).

    Labelled runs: with ``class_conditional=True`` (the default) class ``c`` always draws
    ``texts[c]`` (``texts`` defaults to the class names given to :meth:`setup`). With
    ``class_conditional=False`` any sample may draw any text, as in the reference
    implementation; the drawn text index is then a condition, kept by variations.

    API conditions (one array per key, first dimension ``N``):

    * ``font`` int64: index into the resolved font list :attr:`font_paths`.
    * ``text`` int64: index into :attr:`texts`.
    * ``stroke`` float32: ``stroke_mode="pen"``: pen width; ``"outline"``: change of the
      font's stroke thickness (negative thins). Both as a fraction of the longer side of
      the font's own glyph (for a 20-pixel digit, 0.05 is 1 pixel). Rendered at the
      nearest of ``num_stroke_levels`` cached levels.
    * ``size`` float32: longer side of the glyph's ink box (after ``aspect``, before
      rotation and shear), as a fraction of ``image_size``.
    * ``aspect`` float32: horizontal / vertical scale of the glyph.
    * ``rotation`` float32: degrees, counter-clockwise, about the centre of mass.
    * ``shear`` float32: slant, ``x += shear * (height above the centre of mass)``;
      positive leans right, like italics.
    * ``dx``, ``dy`` float32: position of the centre of mass relative to the geometric
      image centre ``((S - 1) / 2, (S - 1) / 2)`` in pixel-index coordinates (positive =
      right / down). ``translate_units="pixels"``: pixels. ``"frame"`` (public default): a
      fraction in ``[-1, 1]`` of the room ``(1 - size) * S / 2`` that keeps a glyph of that
      ``size`` inside the frame (0 = centred, +-1 = touching an edge).
    * ``blur`` float32: Gaussian blur sigma, output pixels (on top of the anti-aliasing).
      Rendered at the nearest of ``num_blur_levels`` cached levels.
    * ``intensity`` float32: foreground brightness in [0, 1] (1 = 255).
    * ``warp`` float32 ``(N, 2, G, G)``: a smooth elastic deformation, handwriting-like:
      displacements (x, y) of a ``G x G`` grid of control points spanning the image,
      bicubically interpolated to every pixel; units are half the image size (0.1 = 1.4
      pixels at 28 px). RANDOM draws ``N(0, warp_scale^2)`` per control point; this is
      what lets PE bend font glyphs towards the private handwriting.

    Variation degree (units): a number in ``[0, 1]``. Each continuous parameter gets
    Gaussian noise with std ``degree * variation_scale * (hi - lo)`` of its range (of the
    batch's spread with ``adaptive_scale``, after a ``crossover_rate`` mix), reflected
    back into the range; the font is resampled uniformly with probability
    ``min(1, degree * font_resample_rate)``. ``text`` never changes. Degree 0 reproduces
    the input exactly; degree 1 with the default scales is close to a fresh RANDOM API
    sample of the same text. ``warp`` gets noise with std ``degree * 2 * variation_scale *
    warp_scale`` and is clipped to ``+-3 warp_scale``.

    Speed: one batched ``grid_sample`` from a glyph atlas built once per fit (fonts x
    texts x stroke levels x blur levels tiles, a few tens of MB by default; memory grows
    linearly in each factor, so lower the level counts for large font folders).

    Args:
        image_size: output height and width, pixels.
        channels: 1 (gray) or 3 (gray replicated to RGB).
        fonts: font files or folders (all .ttf/.otf/.ttc inside, recursively). ``None``: the
            12 DejaVu fonts shipped with matplotlib (not the "Display" variants).
        texts: the strings to draw. ``None``: the class names passed to :meth:`setup`.
        class_conditional: class ``c`` draws ``texts[c]``; otherwise a uniformly random text.
        stroke_mode: ``"outline"`` (the font's own outline, thickened or thinned) or
            ``"pen"`` (the font's skeleton drawn with a round pen: monoline strokes). With
            the DejaVu fonts, a classifier trained on RANDOM API images alone scores higher
            on real MNIST with ``"outline"``.
        prior: where the ranges left at ``None`` come from: ``"public"`` (default; public
            knowledge only, see :data:`PRIORS` for the source of each value) or
            ``"mnist_fitted"`` (fitted to MNIST; warns, not covered by DP when MNIST is private).
        size_range: range of ``size`` (fraction of ``image_size``). Public: ``(0.3, 1.0)``.
        aspect_range: range of ``aspect`` (x scale / y scale). Public: ``(0.5, 1.5)``.
        rotation_range: range of ``rotation``, degrees. Public: ``(-30, 30)``.
        shear_range: range of ``shear`` (dimensionless slope). Public: ``(-0.5, 0.5)``.
        stroke_range: range of ``stroke`` (fraction of the glyph's longer side). Public:
            ``(-0.04, 0.12)`` for ``"outline"``, ``(0.04, 0.25)`` for ``"pen"``.
        translate_range: range of ``dx`` and of ``dy``, in ``translate_units``. Public:
            ``(-1, 1)`` frame units (anywhere inside the frame).
        translate_units: ``"frame"`` (fraction of the room inside the frame; public
            default) or ``"pixels"`` (the fitted prior's unit).
        blur_range: range of ``blur`` (Gaussian sigma, output pixels). Public: ``(0, 1)``.
        intensity_range: range of ``intensity`` (within [0, 1]). Public: ``(0.25, 1.0)``.
        tone_range: ``(black, white)`` points of the tone curve applied to the anti-aliased
            ink coverage before ``intensity``: coverage <= black -> 0, >= white -> 1, linear
            between. Public: ``(0, 1)``, the identity (coverage is the gray level).
        variation_scale: noise std at degree 1, as a fraction of each continuous range.
        font_resample_rate: font resampling probability per unit degree.
        num_stroke_levels: stroke levels cached in the glyph atlas.
        num_blur_levels: blur levels cached in the glyph atlas.
        supersample: render at ``supersample`` times ``image_size`` and average-pool down.
        glyph_px: longer side of a glyph in the cache, pixels. ``None``: the largest output
            glyph, ``ceil(size_range[1] * image_size * supersample)``.
        warp_grid: ``G``, control points per side of the elastic warp (>= 2).
        warp_scale: std of the RANDOM warp displacements, half-image units (0 = no warp).
            Public: 0.1.
        crossover_rate: at a degree > 0, each continuous parameter of each output first
            takes, with this probability, the value of a uniformly drawn input of the same
            batch (any class), then gets its Gaussian step. Public prior: 0.5 (a wide prior's
            few selected parents share what they learnt about size, position, weight and
            contrast); fitted prior: 0. Post-processing: it reads only the population being
            varied, which is already DP.
        adaptive_scale: the Gaussian step of each continuous parameter is ``degree *
            variation_scale * min(hi - lo, sqrt(12) * std of that parameter over the batch)``
            instead of ``degree * variation_scale * (hi - lo)``: as the population
            concentrates, so do its steps (a uniform range has std ``(hi - lo) / sqrt 12``,
            so the two agree on a RANDOM population). Public prior: on; fitted: off.
            Post-processing for the same reason. Both options make a variation depend on the
            whole batch it is given (the module's ``api_batch_size`` chunks, the same for
            any number of processes).
        batch_size: images rendered per chunk (memory: ~20 KB per 28x28 image).
    """

    #: Largest valid variation degree.
    max_degree: float = 1.0
    #: PIL renders glyphs at this many times the cache resolution before box-downsampling.
    _oversample: int = 4

    def __init__(
        self,
        *,
        image_size: int = 28,
        channels: int = 1,
        fonts: list[str] | None = None,
        texts: list[str] | None = None,
        class_conditional: bool = True,
        stroke_mode: str = "outline",
        size_range: tuple[float, float] | None = None,
        aspect_range: tuple[float, float] | None = None,
        rotation_range: tuple[float, float] | None = None,
        shear_range: tuple[float, float] | None = None,
        stroke_range: tuple[float, float] | None = None,
        translate_range: tuple[float, float] | None = None,
        blur_range: tuple[float, float] | None = None,
        intensity_range: tuple[float, float] | None = None,
        variation_scale: float = 0.5,
        font_resample_rate: float = 1.0,
        num_stroke_levels: int = 8,
        num_blur_levels: int = 5,
        tone_range: tuple[float, float] | None = None,
        supersample: int = 1,
        glyph_px: int | None = None,
        batch_size: int = 2048,
        warp_grid: int = 4,
        warp_scale: float | None = None,
        translate_units: str | None = None,
        prior: str = "public",
        crossover_rate: float | None = None,
        adaptive_scale: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(class_conditional, bool):
            raise ValueError(f"class_conditional must be a bool, got {class_conditional!r}")
        if stroke_mode not in ("pen", "outline"):
            raise ValueError(f"stroke_mode must be 'pen' or 'outline', got {stroke_mode!r}")
        if texts is not None:
            if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"texts must be a non-empty list of non-blank strings, got {texts!r}")
            texts = list(texts)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {sorted(PRIORS)}, got {prior!r}")
        if prior != "public":
            import warnings

            warnings.warn(
                f"DrawText prior={prior!r}: these ranges were fitted to MNIST statistics, outside the DP mechanism; "
                "when MNIST (or data like it) is the private set, the (epsilon, delta) guarantee does NOT cover "
                "what they encode. Use prior='public' (the default) for a covered run.",
                FittedPriorWarning,
                stacklevel=2,
            )
        defaults = PRIORS[prior]
        size_range = defaults["size_range"] if size_range is None else size_range
        aspect_range = defaults["aspect_range"] if aspect_range is None else aspect_range
        rotation_range = defaults["rotation_range"] if rotation_range is None else rotation_range
        shear_range = defaults["shear_range"] if shear_range is None else shear_range
        stroke_range = defaults["stroke_range"][stroke_mode] if stroke_range is None else stroke_range
        translate_range = defaults["translate_range"] if translate_range is None else translate_range
        translate_units = defaults["translate_units"] if translate_units is None else translate_units
        blur_range = defaults["blur_range"] if blur_range is None else blur_range
        intensity_range = defaults["intensity_range"] if intensity_range is None else intensity_range
        tone_range = defaults["tone_range"] if tone_range is None else tone_range
        warp_scale = defaults["warp_scale"] if warp_scale is None else warp_scale
        crossover_rate = defaults["crossover_rate"] if crossover_rate is None else crossover_rate
        adaptive_scale = defaults["adaptive_scale"] if adaptive_scale is None else adaptive_scale
        if isinstance(crossover_rate, bool) or not isinstance(crossover_rate, (int, float)) or not 0 <= crossover_rate <= 1:
            raise ValueError(f"crossover_rate must be a number in [0, 1], got {crossover_rate!r}")
        if not isinstance(adaptive_scale, bool):
            raise ValueError(f"adaptive_scale must be a bool, got {adaptive_scale!r}")
        self.crossover_rate = float(crossover_rate)
        self.adaptive_scale = adaptive_scale
        if translate_units not in ("frame", "pixels"):
            raise ValueError(f"translate_units must be 'frame' or 'pixels', got {translate_units!r}")
        self.prior = prior
        self.translate_units = translate_units
        translate_bound = 1.0 if translate_units == "frame" else image_size / 2
        self.image_size = image_size
        self.channels = channels
        self.image_shape = (image_size, image_size, channels)
        self.fonts = None if fonts is None else list(fonts)
        self.font_paths = _resolve_fonts(self.fonts)
        self.class_conditional = class_conditional
        self.stroke_mode = stroke_mode
        self.ranges: dict[str, tuple[float, float]] = {
            "stroke": _check_range("stroke_range", stroke_range, low=0.0 if stroke_mode == "pen" else -0.5,
                                   high=1.0),
            "size": _check_range("size_range", size_range, low=0.0, high=2.0, low_open=True),
            "aspect": _check_range("aspect_range", aspect_range, low=0.0, high=10.0, low_open=True),
            "rotation": _check_range("rotation_range", rotation_range, low=-180.0, high=180.0),
            "shear": _check_range("shear_range", shear_range, low=-3.0, high=3.0),
            "dx": _check_range("translate_range", translate_range, low=-translate_bound, high=translate_bound),
            "blur": _check_range("blur_range", blur_range, low=0.0, high=image_size / 8),
            "intensity": _check_range("intensity_range", intensity_range, low=0.0, high=1.0),
        }
        self.ranges["dy"] = self.ranges["dx"]
        self.tone_range = _check_range("tone_range", tone_range, low=0.0, high=1.0)
        if self.tone_range[1] <= self.tone_range[0]:
            raise ValueError(f"tone_range must satisfy black < white, got {tone_range!r}")
        for name, value in (("variation_scale", variation_scale), ("font_resample_rate", font_resample_rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, value in (("num_stroke_levels", num_stroke_levels), ("num_blur_levels", num_blur_levels),
                            ("supersample", supersample), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if glyph_px is not None and (isinstance(glyph_px, bool) or not isinstance(glyph_px, int) or glyph_px < 4):
            raise ValueError(f"glyph_px must be None or an int >= 4, got {glyph_px!r}")
        if isinstance(warp_grid, bool) or not isinstance(warp_grid, int) or warp_grid < 2:
            raise ValueError(f"warp_grid must be an int >= 2, got {warp_grid!r}")
        if isinstance(warp_scale, bool) or not isinstance(warp_scale, (int, float)) or not (
            math.isfinite(warp_scale) and 0 <= warp_scale <= 1
        ):
            raise ValueError(f"warp_scale must be a number in [0, 1], got {warp_scale!r}")
        self.warp_grid = warp_grid
        self.warp_scale = float(warp_scale)
        self.texts_arg = texts
        self.variation_scale = float(variation_scale)
        self.font_resample_rate = float(font_resample_rate)
        self.num_stroke_levels = num_stroke_levels if self.ranges["stroke"][1] > self.ranges["stroke"][0] else 1
        self.num_blur_levels = num_blur_levels if self.ranges["blur"][1] > 0 else 1
        self.supersample = supersample
        self.glyph_px = glyph_px or int(math.ceil(self.ranges["size"][1] * image_size * supersample))
        self.batch_size = batch_size
        self.class_names: list[str] | None = None
        self.device = torch.device("cpu")
        self._cache: dict | None = None
        self._cache_key: tuple | None = None

    # ------------------------------------------------------------------ setup and cache

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Bind to ``device``, record the class names and build the glyph atlas (once).

        Args:
            device: where batches are rendered.
            class_names: private class names in label order; the default ``texts``.

        Raises:
            ValueError: no texts at all, or ``class_conditional`` with
                ``len(texts) != len(class_names)``.
        """
        self.device = torch.device(device)
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if not class_names:
                raise ValueError("class_names must be non-empty")
            self.class_names = class_names
        texts = self.texts
        if self.class_conditional and self.class_names is not None and len(texts) != len(self.class_names):
            raise ValueError(
                f"class_conditional=True draws texts[c] for class c, but texts has {len(texts)} entries and "
                f"class_names has {len(self.class_names)}; pass one text per class or class_conditional=False"
            )
        self._ensure_cache()

    @property
    def texts(self) -> list[str]:
        """The strings drawn (index = ``text`` condition): ``texts`` or the class names."""
        if self.texts_arg is not None:
            return self.texts_arg
        if self.class_names is not None:
            return self.class_names
        raise ValueError("DrawText has no texts: pass texts=[...] or call setup(class_names=...) first")

    @property
    def stroke_levels(self) -> tuple[float, ...]:
        """Stroke values cached in the atlas (evenly spaced over ``stroke_range``)."""
        lo, hi = self.ranges["stroke"]
        return tuple(float(v) for v in np.linspace(lo, hi, self.num_stroke_levels))

    def _ensure_cache(self) -> dict:
        """Build (once) the glyph atlas: tiles ``(K * L * B, 1, T, T)`` and their metadata."""
        key = (tuple(self.font_paths), tuple(self.texts), self.stroke_mode, self.stroke_levels, self.glyph_px,
               self._oversample)
        if self._cache is None or self._cache_key != key:
            built = _build_glyphs(*key)
            tiles = torch.from_numpy(np.array(built["tiles"]))  # (K, L, T0, T0)
            box = torch.from_numpy(np.array(built["box"]))
            num_glyphs, levels, tile0, _ = tiles.shape
            # Blur levels in tile pixels: sigma_tile = blur / scale, over the whole scale range.
            longest = torch.maximum(box[..., 0:1] * torch.tensor(self.ranges["aspect"]), box[..., 1:2])
            size_lo, size_hi = self.ranges["size"]
            scale_min = size_lo * self.image_size / float(longest.max())
            scale_max = size_hi * self.image_size / float(longest.min())
            blur_lo, blur_hi = self.ranges["blur"]
            sigmas = np.linspace(blur_lo / scale_max, blur_hi / scale_min, self.num_blur_levels)
            if self.num_blur_levels == 1:
                sigmas = np.array([0.0 if blur_hi == 0 else 0.5 * (blur_lo + blur_hi) / scale_min])
            margin = int(math.ceil(3 * sigmas.max()))
            tile = tile0 + 2 * margin
            flat = F.pad(tiles.reshape(-1, 1, tile0, tile0), (margin,) * 4)
            blurred = [_gaussian_blur(flat, float(s)) for s in sigmas]
            stack = torch.stack(blurred, 1).reshape(-1, tile, tile)  # index (k * L + l) * B + b
            self._cache = {
                "tiles": stack.unsqueeze(1).contiguous(),  # (K * L * B, 1, T, T)
                "com": torch.from_numpy(np.array(built["com"])) + margin,
                "box": box,
                "sigmas": torch.from_numpy(sigmas.astype(np.float32)),
                "tile": tile,
            }
            self._cache_key = key
        if self._cache["tiles"].device != self.device:
            for name in ("tiles", "com", "box", "sigmas"):
                self._cache[name] = self._cache[name].to(self.device)
        return self._cache

    # ------------------------------------------------------------------ validation

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` is a finite number in ``[0, max_degree]``."""
        try:
            value = float(degree)
        except (TypeError, ValueError):
            raise ValueError(f"variation degree must be a number, got {degree!r}") from None
        if not (math.isfinite(value) and 0.0 <= value <= self.max_degree):
            raise ValueError(f"variation degree must be a finite number in [0, {self.max_degree}], got {degree!r}")

    def _check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
            raise ValueError(f"labels must have shape ({'N' if n is None else n},), got {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if self.class_conditional:
            limit, what = len(self.texts), f"the {len(self.texts)} texts (class c draws texts[c])"
        elif self.class_names is not None:
            limit, what = len(self.class_names), f"the {len(self.class_names)} class_names"
        else:
            limit, what = None, "non-negative labels"
        if labels.size and (labels.min() < 0 or (limit is not None and labels.max() >= limit)):
            raise ValueError(
                f"labels must lie in [0, {limit if limit is not None else 'inf'}) for {what}, "
                f"got min {labels.min()} max {labels.max()}"
            )
        return labels

    # ------------------------------------------------------------------ APIs

    def random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: draw every parameter uniformly from its range and render.

        Args:
            labels: int64 ``(N,)`` class of each sample.
            generator: the only source of randomness.

        Returns:
            uint8 images ``(N, image_size, image_size, channels)`` and their conditions.
        """
        labels = self._check_labels(labels)
        n = labels.shape[0]
        gdev = generator.device
        params: dict[str, torch.Tensor] = {
            "font": torch.randint(len(self.font_paths), (n,), generator=generator, device=gdev).cpu(),
        }
        if self.class_conditional:
            params["text"] = torch.from_numpy(labels)
        else:
            params["text"] = torch.randint(len(self.texts), (n,), generator=generator, device=gdev).cpu()
        u = torch.rand((len(_CONTINUOUS), n), generator=generator, device=gdev).cpu()
        for i, name in enumerate(_CONTINUOUS):
            lo, hi = self.ranges[name]
            params[name] = (lo + (hi - lo) * u[i]).float()
        g = self.warp_grid
        warp = torch.randn((n, 2, g, g), generator=generator, device=gdev).cpu() * self.warp_scale
        params["warp"] = warp.clamp(-3 * self.warp_scale, 3 * self.warp_scale)
        return self._output(params)

    def variation(
        self,
        *,
        images: np.ndarray,
        conditions: dict[str, np.ndarray],
        labels: np.ndarray,
        degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION_API: perturb each sample's parameters and render again.

        Args:
            images: uint8 ``(N, image_size, image_size, channels)``; only the shape is used.
            conditions: the inputs' conditions (keys as in the class docstring).
            labels: int64 ``(N,)`` class of each input.
            degree: in ``[0, 1]``; see the class docstring.
            generator: the only source of randomness.

        Returns:
            ``N`` images and their conditions, in input order.
        """
        self.validate_degree(degree)
        degree = float(degree)
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"images must be an array of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {getattr(images, 'shape', type(images).__name__)}"
            )
        n = images.shape[0]
        labels = self._check_labels(labels, n)
        params = self._check_conditions(conditions, n)
        if self.class_conditional and not torch.equal(params["text"], torch.from_numpy(labels)):
            raise ValueError("conditions['text'] must equal labels when class_conditional=True")
        gdev = generator.device
        noise = torch.randn((len(_CONTINUOUS), n), generator=generator, device=gdev).cpu()
        flip = torch.rand((n,), generator=generator, device=gdev).cpu()
        new_font = torch.randint(len(self.font_paths), (n,), generator=generator, device=gdev).cpu()
        g = self.warp_grid
        warp_noise = torch.randn((n, 2, g, g), generator=generator, device=gdev).cpu()
        if self.crossover_rate > 0 or self.adaptive_scale:  # drawn after the streams above, which stay unchanged
            donor = torch.randint(max(n, 1), (len(_CONTINUOUS), n), generator=generator, device=gdev).cpu()
            take = torch.rand((len(_CONTINUOUS), n), generator=generator, device=gdev).cpu() < self.crossover_rate
        if degree > 0:
            std = degree * 2 * self.variation_scale * self.warp_scale
            params["warp"] = (params["warp"] + std * warp_noise).clamp(-3 * self.warp_scale, 3 * self.warp_scale)
            for i, name in enumerate(_CONTINUOUS):
                lo, hi = self.ranges[name]
                spread = hi - lo
                if self.adaptive_scale and n > 1:  # the batch's own spread (a uniform range has std range / sqrt 12)
                    spread = min(spread, math.sqrt(12.0) * float(params[name].std()))
                if self.crossover_rate > 0:
                    params[name] = torch.where(take[i], params[name][donor[i]], params[name])
                std = degree * self.variation_scale * spread
                params[name] = self._reflect(params[name] + std * noise[i], lo, hi)
            resample = flip < min(1.0, degree * self.font_resample_rate)
            params["font"] = torch.where(resample, new_font, params["font"])
        return self._output(params)

    # ------------------------------------------------------------------ internals

    def _check_conditions(self, conditions: dict[str, np.ndarray], n: int) -> dict[str, torch.Tensor]:
        if not isinstance(conditions, dict):
            raise ValueError(f"conditions must be a dict of arrays, got {type(conditions).__name__}")
        missing = [k for k in (*_DISCRETE, *_CONTINUOUS) if k not in conditions]
        if missing:
            raise ValueError(f"conditions are missing keys {missing} (DrawText needs {[*_DISCRETE, *_CONTINUOUS]})")
        params: dict[str, torch.Tensor] = {}
        for key, limit in (("font", len(self.font_paths)), ("text", len(self.texts))):
            value = np.asarray(conditions[key])
            if value.shape != (n,) or (value.size and not np.issubdtype(value.dtype, np.integer)):
                raise ValueError(
                    f"conditions[{key!r}] must be an integer array of shape ({n},), got {value.dtype} {value.shape}"
                )
            if value.size and (value.min() < 0 or value.max() >= limit):
                raise ValueError(
                    f"conditions[{key!r}] must lie in [0, {limit}), got min {value.min()} max {value.max()}"
                )
            params[key] = torch.from_numpy(value.astype(np.int64))
        for key in _CONTINUOUS:
            value = np.asarray(conditions[key])
            if value.shape != (n,) or (value.size and not np.all(np.isfinite(value))):
                raise ValueError(f"conditions[{key!r}] must be a finite float array of shape ({n},), got {value.shape}")
            params[key] = torch.from_numpy(value.astype(np.float32))
        g = self.warp_grid
        if "warp" not in conditions:
            raise ValueError(f"conditions are missing key 'warp' (float32 array of shape ({n}, 2, {g}, {g}))")
        warp = np.asarray(conditions["warp"])
        if warp.shape != (n, 2, g, g) or (warp.size and not np.all(np.isfinite(warp))):
            raise ValueError(f"conditions['warp'] must be a finite float array of shape ({n}, 2, {g}, {g}), got {warp.shape}")
        params["warp"] = torch.from_numpy(warp.astype(np.float32))
        return params

    @staticmethod
    def _reflect(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        """Fold values into ``[lo, hi]`` by reflecting at the ends (in-range values unchanged)."""
        if hi <= lo:
            return torch.full_like(x, lo)
        width = hi - lo
        folded = torch.remainder(x - lo, 2 * width)
        folded = lo + torch.where(folded > width, 2 * width - folded, folded)
        return torch.where((x >= lo) & (x <= hi), x, folded).float()

    def _output(self, params: dict[str, torch.Tensor]) -> APIOutput:
        conditions = {k: params[k].cpu().numpy().astype(np.int64) for k in _DISCRETE}
        conditions.update({k: params[k].cpu().numpy().astype(np.float32) for k in _CONTINUOUS})
        conditions["warp"] = params["warp"].cpu().numpy().astype(np.float32)
        return APIOutput(images=self.render(conditions), conditions=conditions)

    @torch.no_grad()
    def render(self, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """Render images from conditions (deterministic; no randomness).

        Args:
            conditions: arrays of shape ``(N,)`` for every condition key.

        Returns:
            uint8 ``(N, image_size, image_size, channels)``.

        Raises:
            ValueError: missing keys, wrong shapes, out-of-range indices or non-finite values.
        """
        n = int(np.asarray(conditions.get("font", np.zeros(0))).shape[0]) if isinstance(conditions, dict) else -1
        tensors = {k: v.to(self.device) for k, v in self._check_conditions(conditions, n).items()}
        out = np.empty((n, self.image_size, self.image_size, self.channels), np.uint8)
        if n == 0:
            return out
        cache = self._ensure_cache()
        for start in range(0, n, self.batch_size):
            chunk = {k: v[start: start + self.batch_size] for k, v in tensors.items()}
            gray = self._render_chunk(chunk, cache).cpu().numpy()
            out[start: start + gray.shape[0]] = gray[..., None]
        return out

    def _warp_upsampling(self, res: int) -> torch.Tensor:
        """``(G * G, res * res)`` matrix ``B`` with ``upsample(w).flatten() == w.flatten() @ B``.

        ``upsample`` is the bicubic interpolation (``align_corners=True``) of a ``G x G``
        control grid to ``res x res`` pixels. Interpolation is linear in its input, so
        applying it to the ``G * G`` unit grids gives its matrix exactly (computed in float64).
        """
        g = self.warp_grid
        unit = torch.eye(g * g, dtype=torch.float64).view(g * g, 1, g, g)
        field = F.interpolate(unit, size=(res, res), mode="bicubic", align_corners=True)
        return field.reshape(g * g, res * res)

    def _pixel_basis(self, res: int, device: torch.device) -> torch.Tensor:
        """Matrix mapping each sample's flattened coefficients to its ``grid_sample`` grid.

        Without the warp: ``(6, res * res * 2)`` for the affine map ``A`` flattened as in
        :meth:`_render_chunk`. With the warp: ``(6 + 2 * G * G, res * res * 2)``; the extra
        rows take ``M[k, d] = sum_c warp[c, k] * A[c, d]`` (control point ``k``, grid axis
        ``d``) to ``sum_k B[k, p] * M[k, d]``, the warp term of pixel ``p``
        (``B`` from :meth:`_warp_upsampling`). Built once per ``(res, G, device)``.
        """
        warp = self.warp_scale > 0
        key = (res, self.warp_grid if warp else 0, str(device))
        if getattr(self, "_basis_key", None) != key:
            u = (torch.arange(res, dtype=torch.float64) * 2 + 1) / res - 1  # pixel centres in [-1, 1]
            base = torch.stack((u.repeat(res), u.repeat_interleave(res), torch.ones(res * res, dtype=torch.float64)),
                               dim=1)  # (P, 3)
            eye = torch.eye(2, dtype=torch.float64)
            basis = torch.einsum("pc,ij->cipj", base, eye).reshape(6, res * res * 2)
            if warp:
                up = self._warp_upsampling(res)  # (G * G, P)
                basis = torch.cat((basis, torch.einsum("kp,ij->kipj", up, eye).reshape(-1, res * res * 2)))
            self._basis, self._basis_key = basis.float().contiguous().to(device), key
        return self._basis

    def _tiles_and_affine(self, p: dict[str, torch.Tensor], cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Atlas tile index ``(n,)`` and flattened affine map ``(n, 6)`` of each sample of a chunk."""
        com, box, sigmas, tile = cache["com"], cache["box"], cache["sigmas"], cache["tile"]
        levels, blurs = box.shape[1], sigmas.shape[0]
        n = p["font"].shape[0]
        dev = self.device
        size_out = self.image_size

        glyph = p["font"].long() * len(self.texts) + p["text"].long()
        lo, hi = self.ranges["stroke"]
        if levels > 1:
            level = ((p["stroke"].float() - lo) * ((levels - 1) / (hi - lo))).round().clamp(0, levels - 1).long()
        else:
            level = torch.zeros(n, dtype=torch.long, device=dev)
        wh = box[glyph, level]  # (n, 2) ink box, tile pixels
        aspect = p["aspect"].float()
        scale = p["size"].float() * size_out / torch.maximum(aspect * wh[:, 0], wh[:, 1])  # out px per tile px
        if blurs > 1:
            pos = (p["blur"].float() / scale - sigmas[0]) * ((blurs - 1) / float(sigmas[-1] - sigmas[0]))
            blur_level = pos.round().clamp(0, blurs - 1).long()
        else:
            blur_level = torch.zeros(n, dtype=torch.long, device=dev)
        index = (glyph * levels + level) * blurs + blur_level

        theta = torch.deg2rad(p["rotation"].float())
        cos, sin, shear = torch.cos(theta), torch.sin(theta), p["shear"].float()
        # Forward map (tile offsets from the centre of mass -> output offsets, y down):
        #   M = R @ [[1, -shear], [0, 1]] @ diag(aspect, 1),  R = [[cos, sin], [-sin, cos]]
        # (R turns counter-clockwise on screen). Its inverse, analytically:
        #   M^-1 = diag(1 / aspect, 1) @ [[1, shear], [0, 1]] @ [[cos, -sin], [sin, cos]]
        inv00, inv01 = (cos + shear * sin) / aspect, (shear * cos - sin) / aspect
        inv10, inv11 = sin, cos
        # Output pixel centre u in [-1, 1] (align_corners=False) is u * S / 2 output pixels
        # from the geometric centre; its tile coordinate is com + M^-1 (u * S / 2 - t) / scale.
        k = (size_out / 2) / scale
        dx, dy = p["dx"].float(), p["dy"].float()
        if self.translate_units == "frame":  # fraction of the room that keeps the glyph's box inside
            room = ((1.0 - p["size"].float()) * (size_out / 2)).clamp_min(0.0)
            dx, dy = dx * room, dy * room
        centre = com[glyph, level]  # (n, 2)
        b0 = centre[:, 0] - (inv00 * dx + inv01 * dy) / scale
        b1 = centre[:, 1] - (inv10 * dx + inv11 * dy) / scale
        # Normalised tile coordinates (align_corners=False) of every output pixel centre:
        # grid[i, p, :] = [u_x(p), u_y(p), 1] @ A_i with A_i (3, 2), computed for all samples as
        # one GEMM (n, 6) @ (6, P * 2) that writes grid_sample's (n, res, res, 2) layout directly.
        k = k * (2 / tile)
        c0, c1 = b0 * (2 / tile) + (1 / tile - 1), b1 * (2 / tile) + (1 / tile - 1)
        # (n, 6): A_i flattened as [(x, 0), (x, 1), (y, 0), (y, 1), (1, 0), (1, 1)]
        affine = torch.stack((inv00 * k, inv10 * k, inv01 * k, inv11 * k, c0, c1), dim=1)
        return index, affine

    def _sampling_grid(self, affine: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
        """``grid_sample`` grid ``(n, res, res, 2)`` from the affine maps ``(n, 6)`` and warps ``(n, 2, G, G)``."""
        n = affine.shape[0]
        res = self.image_size * self.supersample
        if self.warp_scale > 0:
            # Elastic warp in output space: u -> u + w(u), w the bicubic upsampling of the G x G
            # control grid; the tile coordinate moves by w(u) @ A[:2]. Upsampling is linear, so
            # w(u) @ A[:2] = sum_k B[k, u] (warp[:, k] @ A[:2]): (n, G*G, 2) coefficients that the
            # same GEMM maps through the precomputed upsampling matrix B.
            moved = torch.bmm(warp.float().flatten(2).transpose(1, 2), affine[:, :4].view(n, 2, 2))
            affine = torch.cat((affine, moved.flatten(1)), dim=1)
        return torch.matmul(affine, self._pixel_basis(res, affine.device)).view(n, res, res, 2)

    def _render_chunk(self, p: dict[str, torch.Tensor], cache: dict) -> torch.Tensor:
        """Render one chunk of conditions; returns uint8 ``(n, S, S)``."""
        tiles = cache["tiles"]
        n = p["font"].shape[0]
        size_out = self.image_size
        index, affine = self._tiles_and_affine(p, cache)
        grid = self._sampling_grid(affine, p["warp"])
        img = F.grid_sample(tiles.index_select(0, index), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        if self.supersample > 1:
            img = F.avg_pool2d(img, self.supersample)
        black, white = self.tone_range
        img = img.view(n, size_out, size_out).sub_(black).clamp_(0, white - black)
        img = img.mul_(p["intensity"].float().view(n, 1, 1) * (255 / (white - black)))
        return img.round_().clamp_(0, 255).to(torch.uint8)
