"""DrawText's renderer: conditions to uint8 images, a batch at a time, from the glyph atlas.

A batch is rendered by gathering each sample's atlas tile (font, text, nearest stroke level,
nearest blur level) and one bilinear ``grid_sample`` with per-sample affine maps (scale,
aspect, shear, rotation, translation) plus the elastic warp (a bicubic upsampling of a
``G x G`` control grid). Both are linear in small per-sample coefficients, so the whole
sampling grid is one matmul with a basis built once. A tone curve (``tone_range``), the
intensity and uint8 quantisation finish the images. Rendering is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.apis.drawtext.atlas import build_atlas
from pe_lightning.apis.drawtext.atlas_cache import load_or_build

__all__ = ["GlyphRenderer"]


class GlyphRenderer:
    """The renderer of :class:`~pe_lightning.apis.drawtext.DrawText` (a mixin).

    Uses the instance's ``font_paths``, ``texts``, ``stroke_mode``, ``ranges``,
    ``num_stroke_levels``, ``num_blur_levels``, ``glyph_px``, ``_oversample``,
    ``image_size``, ``channels``, ``supersample``, ``translate_units``, ``tone_range``,
    ``warp_grid``, ``warp_scale``, ``batch_size``, ``device`` and ``_check_conditions``
    (:class:`~pe_lightning.apis.drawtext.parameters.DrawTextParameters`); keeps the atlas in
    ``_cache`` / ``_cache_key``.
    """

    @property
    def stroke_levels(self) -> tuple[float, ...]:
        """Stroke values cached in the atlas (evenly spaced over ``stroke_range``)."""
        lo, hi = self.ranges["stroke"]
        return tuple(float(v) for v in np.linspace(lo, hi, self.num_stroke_levels))

    def _ensure_cache(self) -> dict:
        """Build (once; or read from disk) the glyph atlas: tiles ``(K * L * B, 1, T, T)`` and their metadata."""
        key = (tuple(self.font_paths), tuple(self.texts), self.stroke_mode, self.stroke_levels, self.glyph_px,
               self._oversample)
        if self._cache is None or self._cache_key != key:
            self._cache = load_or_build(  # read from the on-disk atlas cache when it is there (atlas_cache.py)
                build_atlas, *key, image_size=self.image_size, size_range=self.ranges["size"],
                aspect_range=self.ranges["aspect"], blur_range=self.ranges["blur"], num_blur_levels=self.num_blur_levels,
            )
            self._cache_key = key
        if self._cache["tiles"].device != self.device:
            for name in ("tiles", "com", "box", "sigmas"):
                self._cache[name] = self._cache[name].to(self.device)
        return self._cache

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
