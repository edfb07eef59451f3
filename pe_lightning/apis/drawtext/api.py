"""The :class:`DrawText` ImageAPI: its arguments, RANDOM and VARIATION calls.

It joins the pieces of the package: the fonts (:mod:`.fonts`), the parameter model
(:mod:`.parameters`: what RANDOM draws and VARIATION perturbs), and the renderer
(:mod:`.renderer`, drawing from the glyph atlas of :mod:`.atlas`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI, check_api_labels
from pe_lightning.apis.drawtext.fonts import resolve_fonts
from pe_lightning.apis.drawtext.parameters import (
    CONTINUOUS,
    DISCRETE,
    DrawTextParameters,
    apply_prior,
    check_range,
)
from pe_lightning.apis.drawtext.renderer import GlyphRenderer

__all__ = ["DrawText"]


class DrawText(DrawTextParameters, GlyphRenderer, ImageAPI):
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
        values = apply_prior(prior, stroke_mode, dict(  # the prior's value for every argument left at None
            size_range=size_range, aspect_range=aspect_range, rotation_range=rotation_range, shear_range=shear_range,
            stroke_range=stroke_range, translate_range=translate_range, translate_units=translate_units,
            blur_range=blur_range, intensity_range=intensity_range, tone_range=tone_range, warp_scale=warp_scale,
            crossover_rate=crossover_rate, adaptive_scale=adaptive_scale,
        ))
        size_range, aspect_range = values["size_range"], values["aspect_range"]
        rotation_range, shear_range = values["rotation_range"], values["shear_range"]
        stroke_range, translate_range = values["stroke_range"], values["translate_range"]
        translate_units, blur_range = values["translate_units"], values["blur_range"]
        intensity_range, tone_range = values["intensity_range"], values["tone_range"]
        warp_scale, crossover_rate, adaptive_scale = values["warp_scale"], values["crossover_rate"], values["adaptive_scale"]
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
        self.font_paths = resolve_fonts(self.fonts)
        self.class_conditional = class_conditional
        self.stroke_mode = stroke_mode
        self.ranges: dict[str, tuple[float, float]] = {
            "stroke": check_range("stroke_range", stroke_range, low=0.0 if stroke_mode == "pen" else -0.5, high=1.0),
            "size": check_range("size_range", size_range, low=0.0, high=2.0, low_open=True),
            "aspect": check_range("aspect_range", aspect_range, low=0.0, high=10.0, low_open=True),
            "rotation": check_range("rotation_range", rotation_range, low=-180.0, high=180.0),
            "shear": check_range("shear_range", shear_range, low=-3.0, high=3.0),
            "dx": check_range("translate_range", translate_range, low=-translate_bound, high=translate_bound),
            "blur": check_range("blur_range", blur_range, low=0.0, high=image_size / 8),
            "intensity": check_range("intensity_range", intensity_range, low=0.0, high=1.0),
        }
        self.ranges["dy"] = self.ranges["dx"]
        self.tone_range = check_range("tone_range", tone_range, low=0.0, high=1.0)
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

    # ------------------------------------------------------------------ setup

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

    # ------------------------------------------------------------------ validation

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` is a finite number in ``[0, max_degree]``."""
        try:
            value = float(degree)
        except (TypeError, ValueError):
            raise ValueError(f"variation degree must be a number, got {degree!r}") from None
        if not (math.isfinite(value) and 0.0 <= value <= self.max_degree):
            raise ValueError(f"variation degree must be a finite number in [0, {self.max_degree}], got {degree!r}")

    def check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        """Labels in ``[0, len(texts))`` (class-conditional), ``[0, len(class_names))`` or ``>= 0``."""
        if self.class_conditional:
            limit, what = len(self.texts), f"the {len(self.texts)} texts (class c draws texts[c])"
        elif self.class_names is not None:
            limit, what = len(self.class_names), f"the {len(self.class_names)} class_names"
        else:
            limit, what = None, "non-negative labels"
        return check_api_labels(labels, n=n, limit=limit, what=what)

    # ------------------------------------------------------------------ APIs

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: draw every parameter uniformly from its range and render.

        Args:
            labels: int64 ``(N,)`` class of each sample.
            generator: the only source of randomness.

        Returns:
            uint8 images ``(N, image_size, image_size, channels)`` and their conditions.
        """
        return self._output(self._random_parameters(labels, generator))

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION_API: perturb each sample's parameters and render again (checked by :meth:`ImageAPI.variation`).

        Args:
            images: uint8 ``(N, image_size, image_size, channels)``; only the shape is used.
            conditions: the inputs' conditions (keys as in the class docstring).
            labels: int64 ``(N,)`` class of each input.
            degree: in ``[0, 1]``; see the class docstring.
            generator: the only source of randomness.

        Returns:
            ``N`` images and their conditions, in input order.
        """
        params = self._check_conditions(conditions, images.shape[0])
        if self.class_conditional and not torch.equal(params["text"], torch.from_numpy(labels)):
            raise ValueError("conditions['text'] must equal labels when class_conditional=True")
        return self._output(self._vary_parameters(params, degree, generator))

    # ------------------------------------------------------------------ internals

    def _output(self, params: dict[str, torch.Tensor]) -> APIOutput:
        conditions = {k: params[k].cpu().numpy().astype(np.int64) for k in DISCRETE}
        conditions.update({k: params[k].cpu().numpy().astype(np.float32) for k in CONTINUOUS})
        conditions["warp"] = params["warp"].cpu().numpy().astype(np.float32)
        return APIOutput(images=self.render(conditions), conditions=conditions)
