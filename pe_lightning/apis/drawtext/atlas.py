"""DrawText's glyph atlas: every ``(font, text)`` glyph pre-rendered once per fit, at every stroke and blur level.

Each glyph is rendered with PIL at a high resolution, reduced to a distance field (to its
skeleton for ``stroke_mode="pen"``, to its outline for ``"outline"``), thresholded at a
few stroke levels, box-downsampled into tiles centred on the glyph's centre of mass and
pre-blurred at a few blur levels. The tiles form one stacked atlas
``(fonts*texts*strokes*blurs, 1, T, T)`` that the renderer gathers from.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["build_atlas"]


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


def build_atlas(
    font_paths: tuple[str, ...],
    texts: tuple[str, ...],
    stroke_mode: str,
    stroke_levels: tuple[float, ...],
    glyph_px: int,
    oversample: int,
    *,
    image_size: int,
    size_range: tuple[float, float],
    aspect_range: tuple[float, float],
    blur_range: tuple[float, float],
    num_blur_levels: int,
) -> dict:
    """The glyph atlas of one configuration, on the CPU.

    Args:
        font_paths, texts, stroke_mode, stroke_levels, glyph_px, oversample: the glyphs to
            render (see :func:`_build_glyphs`, whose result is cached across instances).
        image_size: output height and width, pixels.
        size_range, aspect_range, blur_range: the ranges of the ``size``, ``aspect`` and
            ``blur`` parameters, which set the blur levels in tile pixels.
        num_blur_levels: blur levels per tile.

    Returns:
        ``tiles`` float32 ``(K * L * B, 1, T, T)`` at index ``(glyph * L + level) * B + blur``;
        ``com`` ``(K, L, 2)`` centres of mass and ``box`` ``(K, L, 2)`` ink boxes in tile
        pixels; ``sigmas`` float32 ``(B,)`` blur levels in tile pixels; ``tile`` the side ``T``.
    """
    built = _build_glyphs(font_paths, texts, stroke_mode, stroke_levels, glyph_px, oversample)
    tiles = torch.from_numpy(np.array(built["tiles"]))  # (K, L, T0, T0)
    box = torch.from_numpy(np.array(built["box"]))
    num_glyphs, levels, tile0, _ = tiles.shape
    # Blur levels in tile pixels: sigma_tile = blur / scale, over the whole scale range.
    longest = torch.maximum(box[..., 0:1] * torch.tensor(aspect_range), box[..., 1:2])
    size_lo, size_hi = size_range
    scale_min = size_lo * image_size / float(longest.max())
    scale_max = size_hi * image_size / float(longest.min())
    blur_lo, blur_hi = blur_range
    sigmas = np.linspace(blur_lo / scale_max, blur_hi / scale_min, num_blur_levels)
    if num_blur_levels == 1:
        sigmas = np.array([0.0 if blur_hi == 0 else 0.5 * (blur_lo + blur_hi) / scale_min])
    margin = int(math.ceil(3 * sigmas.max()))
    tile = tile0 + 2 * margin
    flat = F.pad(tiles.reshape(-1, 1, tile0, tile0), (margin,) * 4)
    blurred = [_gaussian_blur(flat, float(s)) for s in sigmas]
    stack = torch.stack(blurred, 1).reshape(-1, tile, tile)  # index (k * L + l) * B + b
    return {
        "tiles": stack.unsqueeze(1).contiguous(),  # (K * L * B, 1, T, T)
        "com": torch.from_numpy(np.array(built["com"])) + margin,
        "box": box,
        "sigmas": torch.from_numpy(sigmas.astype(np.float32)),
        "tile": tile,
    }
