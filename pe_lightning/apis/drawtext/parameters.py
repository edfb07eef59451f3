"""DrawText's parameter model: the API conditions, their priors, and how RANDOM and VARIATION set them.

Each sample is described by two discrete parameters (:data:`DISCRETE`: ``font``, ``text``),
nine continuous ones (:data:`CONTINUOUS`) and an elastic ``warp`` grid; the ranges left at
``None`` come from a prior in :data:`PRIORS`. RANDOM draws every parameter uniformly from
its range; VARIATION adds Gaussian steps to the parameters (not the pixels), reflected back
into the ranges, and resamples the font. The meaning and units of each parameter are
documented on :class:`~pe_lightning.apis.drawtext.DrawText`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["CONTINUOUS", "DISCRETE", "PRIORS", "DrawTextParameters", "FittedPriorWarning", "apply_prior", "check_range"]


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
CONTINUOUS = ("stroke", "size", "aspect", "rotation", "shear", "dx", "dy", "blur", "intensity")
#: Discrete parameters, stored as int64 ``(N,)``.
DISCRETE = ("font", "text")


def apply_prior(prior: str, stroke_mode: str, values: dict[str, Any]) -> dict[str, Any]:
    """Fill the arguments left at ``None`` from :data:`PRIORS`.

    Args:
        prior: a key of :data:`PRIORS`; any other than ``"public"`` warns
            (:class:`FittedPriorWarning`, attributed to the code that built the DrawText).
        stroke_mode: ``"pen"`` or ``"outline"`` (the prior's ``stroke_range`` has one per mode).
        values: the prior's keys (``size_range``, ..., ``adaptive_scale``) as given, ``None``
            for "the prior's".

    Returns:
        ``values`` with every ``None`` replaced by the prior's value.

    Raises:
        ValueError: ``prior`` is not a key of :data:`PRIORS`.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {sorted(PRIORS)}, got {prior!r}")
    if prior != "public":
        warnings.warn(
            f"DrawText prior={prior!r}: these ranges were fitted to MNIST statistics, outside the DP mechanism; "
            "when MNIST (or data like it) is the private set, the (epsilon, delta) guarantee does NOT cover "
            "what they encode. Use prior='public' (the default) for a covered run.",
            FittedPriorWarning,
            stacklevel=3,  # DrawText(...)'s caller
        )
    defaults = PRIORS[prior]
    out = dict(values)
    for key, value in values.items():
        if value is None:
            out[key] = defaults[key][stroke_mode] if key == "stroke_range" else defaults[key]
    return out


def check_range(name: str, value: Sequence[float], *, low: float | None = None, high: float | None = None,
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


class DrawTextParameters:
    """The parameter model of :class:`~pe_lightning.apis.drawtext.DrawText` (a mixin).

    Uses the instance's ``font_paths``, ``texts``, ``class_conditional``, ``ranges``,
    ``warp_grid``, ``warp_scale``, ``variation_scale``, ``font_resample_rate``,
    ``crossover_rate`` and ``adaptive_scale``.
    """

    def _random_parameters(self, labels: np.ndarray, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """RANDOM's parameters of ``len(labels)`` samples (checked int64 labels), drawn uniformly from the ranges."""
        n = labels.shape[0]
        gdev = generator.device
        params: dict[str, torch.Tensor] = {
            "font": torch.randint(len(self.font_paths), (n,), generator=generator, device=gdev).cpu(),
        }
        if self.class_conditional:
            params["text"] = torch.from_numpy(labels)
        else:
            params["text"] = torch.randint(len(self.texts), (n,), generator=generator, device=gdev).cpu()
        u = torch.rand((len(CONTINUOUS), n), generator=generator, device=gdev).cpu()
        for i, name in enumerate(CONTINUOUS):
            lo, hi = self.ranges[name]
            params[name] = (lo + (hi - lo) * u[i]).float()
        g = self.warp_grid
        warp = torch.randn((n, 2, g, g), generator=generator, device=gdev).cpu() * self.warp_scale
        params["warp"] = warp.clamp(-3 * self.warp_scale, 3 * self.warp_scale)
        return params

    def _vary_parameters(self, params: dict[str, torch.Tensor], degree: float, generator: torch.Generator
                         ) -> dict[str, torch.Tensor]:
        """VARIATION's step of checked parameters ``params`` (updated in place and returned) at ``degree``."""
        n = params["font"].shape[0]
        gdev = generator.device
        noise = torch.randn((len(CONTINUOUS), n), generator=generator, device=gdev).cpu()
        flip = torch.rand((n,), generator=generator, device=gdev).cpu()
        new_font = torch.randint(len(self.font_paths), (n,), generator=generator, device=gdev).cpu()
        g = self.warp_grid
        warp_noise = torch.randn((n, 2, g, g), generator=generator, device=gdev).cpu()
        if self.crossover_rate > 0 or self.adaptive_scale:  # drawn after the streams above, which stay unchanged
            donor = torch.randint(max(n, 1), (len(CONTINUOUS), n), generator=generator, device=gdev).cpu()
            take = torch.rand((len(CONTINUOUS), n), generator=generator, device=gdev).cpu() < self.crossover_rate
        if degree > 0:
            std = degree * 2 * self.variation_scale * self.warp_scale
            params["warp"] = (params["warp"] + std * warp_noise).clamp(-3 * self.warp_scale, 3 * self.warp_scale)
            for i, name in enumerate(CONTINUOUS):
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
        return params

    def _check_conditions(self, conditions: dict[str, np.ndarray], n: int) -> dict[str, torch.Tensor]:
        """Validate ``n`` samples' conditions; CPU tensors, int64 for :data:`DISCRETE`, float32 for the others."""
        if not isinstance(conditions, dict):
            raise ValueError(f"conditions must be a dict of arrays, got {type(conditions).__name__}")
        missing = [k for k in (*DISCRETE, *CONTINUOUS) if k not in conditions]
        if missing:
            raise ValueError(f"conditions are missing keys {missing} (DrawText needs {[*DISCRETE, *CONTINUOUS]})")
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
        for key in CONTINUOUS:
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
