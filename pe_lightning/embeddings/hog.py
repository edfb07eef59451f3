"""Histogram-of-oriented-gradients embeddings (weight-free, training-free, batched in torch).

A vote in pixel space rewards thick, blurred, centred glyphs; a vote on gradient
orientations sees *shape* (which strokes go which way, where). Both embeddings here are
public, fixed functions of an image (no weights, nothing fitted to any data set), so they
can embed private and synthetic images alike.

:class:`HOGEmbedding` is the HOG of Dalal & Triggs as :func:`skimage.feature.hog` computes
it (``tests/test_hog.py`` checks the two agree on the same images), batched on any torch
device. :class:`MultiScaleHOGEmbedding` concatenates HOGs of several cell sizes (fine
strokes and coarse layout) and, optionally, a coarse pixel channel.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.devices import to_device
from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.pixels import embed_in_chunks

__all__ = ["BLOCK_NORMS", "HOGEmbedding", "MultiScaleHOGEmbedding", "hog_features"]

#: Block normalisations, as :func:`skimage.feature.hog` names them.
BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: skimage's ``eps`` in the block normalisation.
_EPS = 1e-5


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)  # type: ignore[arg-type]
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be an int >= 1 or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


#: Pixels per image chunk on the CPU. At 2**15 every per-pixel op stays at torch's intra-op grain size
#: (32,768 elements), so it runs on the calling thread: no thread pool wake-up per op. On a loaded
#: machine with 2 torch threads, chunks of 2**16 or 2**17 pixels were 5-35x slower (docs/results.md).
_CHUNK_PIXELS = 1 << 15
#: With one torch thread there is no pool to wake: chunks this many times larger (2**18 pixels) mean fewer
#: ops per image, about 20 % less CPU time than 2**15 for 28 x 28 digits (docs/results.md).
_ONE_THREAD_FACTOR = 8


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-g_row, g_col)`` of ``(B, C, H, W)``: central differences, ``+0`` on the border rows/columns (skimage's).

    The row gradient comes negated (``x[r-1] - x[r+1]``) so that a zero difference is ``+0`` in it:
    ``atan2(+0, g_col < 0)`` is then ``+pi`` and its negation is the ``-180`` degrees that
    :func:`_orientation_slots` wraps to 0 without a remainder.
    """
    neg_row, col = torch.empty_like(x), torch.empty_like(x)
    torch.sub(x[:, :, :-2, :], x[:, :, 2:, :], out=neg_row[:, :, 1:-1, :])
    torch.sub(x[:, :, :, 2:], x[:, :, :, :-2], out=col[:, :, :, 1:-1])
    for border in (neg_row[:, :, 0, :], neg_row[:, :, -1, :], col[:, :, :, 0], col[:, :, :, -1]):
        border.zero_()
    return neg_row, col


def _orientation_slots(neg_row: torch.Tensor, col: torch.Tensor, orientations: int) -> torch.Tensor:
    """int32 orientation bin of each pixel in ``[0, orientations]``, skimage's binning in its arithmetic.

    Overwrites ``neg_row`` and ``col`` (scratch space: no new float maps).

    skimage: ``theta = rad2deg(atan2(g_row, g_col)) % 180``, bin ``i`` holds ``180 i / n <= theta <
    180 (i + 1) / n``; computed here as ``int(theta * n / 180)`` with the same roundings
    (``tests/test_hog.py`` checks every integer gradient pair of uint8 images against skimage's
    rule). Slot ``n`` is a ``theta`` that rounded up to 180 (a tiny negative angle); the caller
    folds it into bin ``n - 1``, as a clamp would.
    """
    deg = neg_row.atan2_(col).mul_(-180.0 / math.pi)  # rad2deg(atan2(g_row, g_col)), in [-180, 180)
    deg.add_(torch.lt(deg, 0, out=col), alpha=180.0)  # % 180 (col: 1.0 where negative)
    return deg.mul_(orientations / 180.0).to(torch.int32)


#: Largest absolute gradient of an image in 0..255 (a central difference of two intensities).
_G = 255
#: Gradient pairs per axis in an image of 0..255: ``-255..255``.
_PAIRS = 2 * _G + 1


@functools.lru_cache(maxsize=16)
def _pair_tables(orientations: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bins, magnitudes)`` of every integer gradient pair, flat ``(511 * 511,)``, indexed as :func:`_pair_index`.

    ``bins`` (uint8 where ``orientations <= 256``, a quarter of int32's cache footprint; int32 otherwise; in
    ``[0, orientations)``) and ``magnitudes`` (``dtype``) are what the float path
    (:func:`_orientation_slots` with its last slot folded into the last bin, :func:`torch.hypot`)
    computes for the pair, in the same arithmetic on the same device, so looking a pixel up here
    gives the float path's numbers for images of integer intensities in 0..255. Cached per
    ``(orientations, dtype, device)``; callers must not modify them.
    """
    g = torch.arange(-_G, _G + 1, dtype=dtype, device=device)  # zeros are +0 (see _gradients)
    neg_row = g[:, None].expand(_PAIRS, _PAIRS).contiguous()
    col = g[None, :].expand(_PAIRS, _PAIRS).contiguous()
    magnitudes = torch.hypot(neg_row, col).view(-1)
    bins = _orientation_slots(neg_row, col, orientations).clamp_(max=orientations - 1).view(-1)
    return (bins.to(torch.uint8) if orientations <= 256 else bins), magnitudes


def _pair_index(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` (any strides) -> int32 ``(neg_row + 255) * 511 + col + 255`` of each pixel, ``(B, C, H, W)``.

    ``neg_row`` and ``col`` are :func:`_gradients`' (central differences, 0 on the border rows and
    columns), computed in integers: the row of :func:`_pair_tables` that holds the pixel's bin and magnitude.
    The intensities are copied into a flat int32 buffer with ``W`` zeros at both ends and both differences
    taken on it (shifts of 1 and ``W``: contiguous ops), which pairs pixels across the borders of a plane;
    those border rows and columns are then set to 0 (small strided fills, cheaper than multiplying by masks).
    """
    height, width = x.shape[-2:]
    pixels = x.numel()
    padded = torch.empty(pixels + 2 * width, dtype=torch.int32, device=x.device)
    padded[:width] = 0
    padded[width + pixels :] = 0
    padded[width : width + pixels].view(x.shape).copy_(x)
    index = padded[width + 1 : width + 1 + pixels] - padded[width - 1 : width - 1 + pixels]  # col: x[k + 1] - x[k - 1]
    neg_row = padded[:pixels] - padded[2 * width : 2 * width + pixels]  # x[k - W] - x[k + W]
    cols, rows = index.view(-1, height, width), neg_row.view(-1, height, width)
    for border in (cols[:, :, 0], cols[:, :, -1], rows[:, 0], rows[:, -1]):
        border.zero_()
    return index.add_(neg_row, alpha=_PAIRS).add_(_G * _PAIRS + _G).view(x.shape)


@functools.lru_cache(maxsize=16)
def _cell_base(batch: int, n_r: int, cr: int, n_c: int, cc: int, slots: int, *, device: torch.device) -> torch.Tensor:
    """``(B, n_r * cr, n_c * cc)``: ``(image * cells + cell of the pixel) * slots``, the flat histogram offset.

    int32 where the histogram fits (int64 otherwise). Cached per shape (the same chunk shapes
    repeat every call); callers must not modify it.
    """
    dtype = torch.int32 if batch * n_r * n_c * slots < 2**31 else torch.int64
    rows = torch.arange(n_r * cr, device=device, dtype=dtype) // cr
    cols = torch.arange(n_c * cc, device=device, dtype=dtype) // cc
    cell = rows[:, None] * n_c + cols[None, :]
    image = torch.arange(batch, device=device, dtype=dtype)[:, None, None] * (n_r * n_c)
    return (image + cell).mul_(slots)


def _weighted_counts(index: torch.Tensor, weights: torch.Tensor, *, length: int, deterministic: bool | None = None) -> torch.Tensor:
    """``(length,)``: the sum of ``weights`` at each value of ``index`` (``torch.bincount`` with weights).

    On CUDA under ``torch.use_deterministic_algorithms(True)`` (``Trainer(deterministic=True)``),
    where ``bincount`` with weights refuses to run, the same sums come from ``index_add_``, which
    torch runs deterministically there. ``deterministic`` forces that path (``None``: on CUDA when
    deterministic algorithms are on). On the CPU both run in element order and agree exactly.
    """
    if deterministic is None:
        deterministic = index.is_cuda and torch.are_deterministic_algorithms_enabled()
    if deterministic:
        return torch.zeros(length, dtype=weights.dtype, device=weights.device).index_add_(0, index.long(), weights)
    return torch.bincount(index, weights=weights, minlength=length)


def _normalise_blocks(blocks: torch.Tensor, method: str, *, out: torch.Tensor) -> None:
    """skimage's ``_hog_normalize_block`` over the last dim (one block's ``cells_r * cells_c * orientations``), into ``out``."""
    if method in ("L1", "L1-sqrt"):
        torch.div(blocks, blocks.abs().sum(dim=-1, keepdim=True).add_(_EPS), out=out)
        if method == "L1-sqrt":
            out.sqrt_()
        return
    torch.div(blocks, blocks.square().sum(dim=-1, keepdim=True).add_(_EPS**2).sqrt_(), out=out)
    if method == "L2-Hys":
        out.clamp_(max=0.2)
        out.div_(out.square().sum(dim=-1, keepdim=True).add_(_EPS**2).sqrt_())


def _check_cells(height: int, width: int, cell: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """``(cells_r, cells_c)`` of an image, or a ValueError when fewer than one block fits."""
    (cr, cc), (br, bc) = cell, block
    n_r, n_c = height // cr, width // cc
    if n_r < br or n_c < bc:
        raise ValueError(
            f"images of {height}x{width} pixels hold {n_r}x{n_c} cells of {cr}x{cc} pixels, "
            f"fewer than one block of {br}x{bc} cells: use smaller pixels_per_cell or cells_per_block"
        )
    return n_r, n_c


def _bins_and_magnitudes(x: torch.Tensor, *, orientations: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 orientation bins in ``[0, orientations)`` and gradient magnitudes (``dtype``) of ``(B, C, H, W)``, each ``(B, H, W)``.

    Float ``x``: computed per pixel (:func:`_gradients`, :func:`torch.hypot`, :func:`_orientation_slots`).
    uint8 ``x``: each pixel's integer gradient pair is looked up in
    :func:`_pair_tables`, which hold the float path's numbers for every pair, so both paths agree
    exactly on such images; the look-up needs no ``atan2`` or ``hypot`` per pixel.
    With several channels each pixel takes the channel of largest magnitude (the first one on ties, as numpy's argmax).
    """
    if x.is_floating_point():
        neg_row, col = _gradients(x)
        magnitude = torch.hypot(neg_row, col)
        if x.shape[1] > 1:
            channel = magnitude.argmax(dim=1, keepdim=True)
            neg_row, col, magnitude = (t.gather(1, channel) for t in (neg_row, col, magnitude))
        bins = _orientation_slots(neg_row[:, 0], col[:, 0], orientations)
        return bins.clamp_(max=orientations - 1), magnitude[:, 0]  # slot n: theta rounded up to 180, the last bin
    bin_table, magnitude_table = _pair_tables(orientations, dtype, x.device)
    index = _pair_index(x)
    magnitude = magnitude_table.index_select(0, index.view(-1)).view(index.shape)
    if x.shape[1] > 1:
        channel = magnitude.argmax(dim=1, keepdim=True)
        index, magnitude = index.gather(1, channel), magnitude.gather(1, channel)
    return bin_table.index_select(0, index.view(-1)).view(index.shape)[:, 0], magnitude[:, 0]


def _hog_chunk(x: torch.Tensor, *, orientations: int, cells: Sequence[tuple[int, int]], grids: Sequence[tuple[int, int]],
               block: tuple[int, int], block_norm: str, out: Sequence[torch.Tensor], divisors: Sequence[float]) -> None:
    """Write the HOG of ``(B, C, H, W)`` for each cell size of ``cells``, divided by ``divisors``, into ``out`` (``(B, D_s)`` each).

    The per-pixel work is shared by the cell sizes. ``x`` is float or uint8 (:func:`_bins_and_magnitudes`);
    ``grids`` holds each cell size's ``(cells_r, cells_c)`` (:func:`_check_cells`, checked once by the caller).
    """
    bins, magnitude = _bins_and_magnitudes(x, orientations=orientations, dtype=out[0].dtype)
    batch = bins.shape[0]
    (br, bc), n = block, orientations
    for (cr, cc), (n_r, n_c), target, divisor in zip(cells, grids, out, divisors):
        crop = (slice(None), slice(0, n_r * cr), slice(0, n_c * cc))
        # Each pixel's magnitude added to slot (image, cell, orientation) of one flat histogram: no one-hot.
        flat = bins[crop] + _cell_base(batch, n_r, cr, n_c, cc, n, device=bins.device)
        hist = _weighted_counts(flat.reshape(-1), magnitude[crop].reshape(-1), length=batch * n_r * n_c * n)
        cell_means = hist.to(magnitude.dtype).view(batch, n_r, n_c, n).div_(cr * cc)  # (B, n_r, n_c, orientations)
        if (br, bc) != (1, 1):  # (B, blocks_r, blocks_c, br * bc * orientations): skimage's order
            blocks = cell_means.unfold(1, br, 1).unfold(2, bc, 1).permute(0, 1, 2, 4, 5, 3)
            cell_means = blocks.reshape(batch, n_r - br + 1, n_c - bc + 1, br * bc * n)
        _normalise_blocks(cell_means, block_norm, out=target.view(cell_means.shape))
        if divisor != 1:
            target.div_(divisor)


def _chunk_step(x: torch.Tensor) -> int:
    """Images per chunk of ``(B, C, H, W)``: all of them off the CPU; on it :data:`_CHUNK_PIXELS` worth
    (times :data:`_ONE_THREAD_FACTOR` when torch runs one thread)."""
    if x.device.type != "cpu":
        return max(1, x.shape[0])
    pixels = _CHUNK_PIXELS * (_ONE_THREAD_FACTOR if torch.get_num_threads() == 1 else 1)
    return max(1, pixels // max(1, math.prod(x.shape[1:])))


def _hog_into(x: torch.Tensor, *, orientations: int, cells: Sequence[tuple[int, int]], block: tuple[int, int],
              block_norm: str, transform_sqrt: bool, out: Sequence[torch.Tensor], divisors: Sequence[float] | None = None) -> None:
    """Write :func:`hog_features` of ``(B, C, H, W)`` for each cell size of ``cells`` into ``out`` (``(B, D_s)`` each, may be column slices).

    ``x`` is float, or uint8 intensities (any strides: a permuted NHWC batch): those are converted chunk by
    chunk, to int32 for the look-up path (:func:`_bins_and_magnitudes`) or, with ``transform_sqrt``, to
    ``out``'s dtype. Every op on the CPU is one chunk's (:data:`_CHUNK_PIXELS`): nothing here wakes torch's
    thread pool. Each scale is divided by its entry of ``divisors`` (default 1).
    """
    grids = [_check_cells(x.shape[2], x.shape[3], cell, block) for cell in cells]
    divisors = [1.0] * len(cells) if divisors is None else divisors
    step = _chunk_step(x)
    for i in range(0, x.shape[0], step):
        chunk = x[i : i + step]
        if transform_sqrt:
            chunk = chunk.to(out[0].dtype).sqrt_() if chunk.dtype == torch.uint8 else chunk.sqrt()
        _hog_chunk(chunk, orientations=orientations, cells=cells, grids=grids, block=block, block_norm=block_norm,
                   out=[o[i : i + step] for o in out], divisors=divisors)


def _feature_dims(shape: Sequence[int], *, orientations: int, cells: Sequence[tuple[int, int]], block: tuple[int, int]) -> list[int]:
    """``D`` of each cell size's HOG for images of ``(H, W)`` (``shape[:2]``)."""
    (br, bc) = block
    dims = []
    for cell in cells:
        n_r, n_c = _check_cells(shape[0], shape[1], cell, block)
        dims.append((n_r - br + 1) * (n_c - bc + 1) * br * bc * orientations)
    return dims


def hog_features(
    images: torch.Tensor,
    *,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (4, 4),
    cells_per_block: tuple[int, int] = (1, 1),
    block_norm: str = "L2",
    transform_sqrt: bool = False,
) -> torch.Tensor:
    """HOG descriptors of a batch, in :func:`skimage.feature.hog`'s order and arithmetic.

    Per image (skimage's steps, on every image of the batch at once): optional square root
    of the intensities; central-difference gradients (zero on the border rows/columns);
    with several channels, each pixel takes the channel of largest gradient magnitude;
    unsigned orientations in ``[0, 180)`` degrees, hard-binned into ``orientations`` bins;
    each cell's histogram is the mean over its pixels of the magnitude in each bin (cells
    cover ``floor(H / cell)`` x ``floor(W / cell)``; leftover pixels are ignored); every
    ``cells_per_block`` window of cells (stride one cell) is normalised with ``block_norm``.

    Args:
        images: float ``(B, C, H, W)``, finite, intensities in skimage's units (0..255 for uint8 images).
        orientations: orientation bins over 180 degrees.
        pixels_per_cell: ``(rows, cols)`` pixels of a cell.
        cells_per_block: ``(rows, cols)`` cells of a normalisation block.
        block_norm: one of :data:`BLOCK_NORMS`.
        transform_sqrt: square-root (gamma) compression first.

    Returns:
        float ``(B, D)``, ``D = blocks_r * blocks_c * cells_r * cells_c * orientations`` with
        ``blocks = cells - cells_per_block + 1`` along each axis.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (B, C, H, W) tensor, got {images.dtype} of shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images must be finite (no NaN or inf intensities)")
    cells, block = [tuple(pixels_per_cell)], tuple(cells_per_block)
    (dim,) = _feature_dims(images.shape[2:], orientations=orientations, cells=cells, block=block)  # type: ignore[arg-type]
    out = images.new_empty((images.shape[0], dim))
    # + 0.0 turns -0.0 into +0.0: the gradients' zeros must be +0 (see _gradients).
    _hog_into(images + 0.0, orientations=orientations, cells=cells, block=block, block_norm=block_norm,  # type: ignore[arg-type]
              transform_sqrt=transform_sqrt, out=[out])
    return out


class HOGEmbedding(Embedding):
    """HOG of each image (:func:`hog_features`), optionally unit-normed, as the voting feature.

    The default (9 orientations, 4 x 4-pixel cells, each cell its own L2-normalised block)
    is the variant that, on the MNIST protocol, made votes follow digit shape (issue 23;
    docs/results.md). RGB input uses skimage's dominant-channel rule; images are used at
    their own size, so ``D`` depends on the input shape (fixed by the first :meth:`embed`,
    or up front with ``image_shape``).

    Args:
        orientations: orientation bins over 180 degrees (>= 2).
        pixels_per_cell: pixels per cell, an int or ``(rows, cols)``.
        cells_per_block: cells per normalisation block, an int or ``(rows, cols)``.
        block_norm: one of :data:`BLOCK_NORMS` (skimage's names).
        transform_sqrt: square-root (gamma) compression of the intensities first.
        image_shape: optional expected ``(H, W, C)`` input, to know :attr:`dim` before embedding.
        dtype: ``"float32"`` (default) or ``"float64"``, the arithmetic of the features (returned
            as float32 either way). With integer intensities both agree with skimage to
            rounding; with ``transform_sqrt`` an orientation can lie exactly on a bin edge
            (``tan 60 deg = sqrt(3) / sqrt(1)``), where torch's and numpy's ``atan2`` may round to
            different sides and that pixel lands in the neighbouring bin.
    """

    def __init__(
        self,
        *,
        orientations: int = 9,
        pixels_per_cell: int | Sequence[int] = 4,
        cells_per_block: int | Sequence[int] = 1,
        block_norm: str = "L2",
        transform_sqrt: bool = False,
        image_shape: Sequence[int] | None = None,
        dtype: str = "float32",
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        if not (isinstance(orientations, int) and not isinstance(orientations, bool) and orientations >= 2):
            raise ValueError(f"orientations must be an int >= 2, got {orientations!r}")
        if block_norm not in BLOCK_NORMS:
            raise ValueError(f"block_norm must be one of {BLOCK_NORMS}, got {block_norm!r}")
        self.orientations = orientations
        self.pixels_per_cell = _pair(pixels_per_cell, "pixels_per_cell")
        self.cells_per_block = _pair(cells_per_block, "cells_per_block")
        self.block_norm = block_norm
        self.transform_sqrt = bool(transform_sqrt)
        self.dtype = dtype
        self.image_shape = _check_shape(image_shape)
        self.device = torch.device("cpu")
        self._dim = self._dim_for(self.image_shape) if self.image_shape is not None else None

    def _dim_for(self, shape: Sequence[int]) -> int:
        return _feature_dims(shape, orientations=self.orientations, cells=[self.pixels_per_cell], block=self.cells_per_block)[0]

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Bind the computation to ``device`` (no weights to load)."""
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        """Feature dimension ``D`` (known from ``image_shape`` or after the first :meth:`embed`)."""
        if self._dim is None:
            raise RuntimeError(f"{type(self).__name__}.dim depends on the image size: pass image_shape=(H, W, C) or embed once first")
        return self._dim

    def config(self) -> dict:
        return {
            "orientations": self.orientations,
            "pixels_per_cell": list(self.pixels_per_cell),
            "cells_per_block": list(self.cells_per_block),
            "block_norm": self.block_norm,
            "transform_sqrt": self.transform_sqrt,
            "dtype": self.dtype,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
        }

    def _nchw(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` -> the ``(B, C, H, W)`` view on :attr:`device` that :meth:`_hog_into` reads (no copy on it)."""
        return to_device(batch, self.device).permute(0, 3, 1, 2)

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` on any device -> ``(B, D)`` in :attr:`dtype` on :attr:`device`.

        The uint8 batch goes in as it is (a permuted view): :func:`_hog_into` converts it chunk by chunk, and
        without ``transform_sqrt`` looks each pixel's bin and magnitude up (:func:`_pair_tables`), the same
        numbers as the float path's.
        """
        x = self._nchw(batch)
        out = torch.empty((x.shape[0], self._dim_for(tuple(batch.shape[1:]))), dtype=_DTYPES[self.dtype], device=x.device)
        self._hog_into(x, out)
        return out

    def _features_into(self, batch: torch.Tensor, rows: torch.Tensor) -> None:
        """Write :meth:`_features` of ``batch`` into ``rows`` (float32 CPU ``(B, D)``, :func:`embed_in_chunks`'s).

        Directly where ``rows`` are on :attr:`device` in :attr:`dtype` (no copy of a whole batch); through
        :meth:`_features` otherwise.
        """
        if rows.device == self.device and rows.dtype == _DTYPES[self.dtype]:
            self._hog_into(self._nchw(batch), rows)
        else:
            rows.copy_(self._features(batch).cpu())

    def _hog_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """uint8 ``(B, C, H, W)`` -> its features, written into ``out`` ``(B, D)``."""
        _hog_into(x, orientations=self.orientations, cells=[self.pixels_per_cell], block=self.cells_per_block,
                  block_norm=self.block_norm, transform_sqrt=self.transform_sqrt, out=[out])

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, C)``, numpy or torch (any device), C in {1, 3}.
            batch_size: images per chunk.

        Returns:
            float32 CPU tensor ``(N, D)``.
        """
        return embed_in_chunks(self, images, batch_size=batch_size,
                               hint=f"image_shape={self.image_shape}; give images of one size")


def _check_shape(image_shape: Sequence[int] | None) -> tuple[int, int, int] | None:
    if image_shape is None:
        return None
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape!r}")
    return shape  # type: ignore[return-value]


class MultiScaleHOGEmbedding(HOGEmbedding):
    """HOGs at several cell sizes, concatenated, plus an optional coarse pixel channel.

    Each part is scaled to carry the same weight in an L2 distance: a HOG with
    per-block normalisation has norm about ``sqrt(blocks)``, so scale ``s`` is divided by
    ``sqrt(blocks_s)``; the pixel part (``x / 255`` after an antialiased resize to
    ``pixel_size`` x ``pixel_size``, channels averaged) is divided by ``sqrt(pixel_size**2)``
    and multiplied by ``pixel_weight``. Small cells see strokes, large cells the layout
    of the glyph, pixels where the ink is.

    Args:
        pixels_per_cell: the cell sizes, one HOG each (ints, pixels; default ``(4, 7)``).
        pixel_size: side of the coarse pixel channel; ``None`` (default): no pixel channel.
        pixel_weight: weight of the pixel channel relative to one HOG scale.
        orientations, cells_per_block, block_norm, transform_sqrt, image_shape, dtype: as in
            :class:`HOGEmbedding`, shared by every scale.
    """

    def __init__(
        self,
        *,
        pixels_per_cell: Sequence[int] = (4, 7),
        pixel_size: int | None = None,
        pixel_weight: float = 1.0,
        orientations: int = 9,
        cells_per_block: int | Sequence[int] = 1,
        block_norm: str = "L2",
        transform_sqrt: bool = False,
        image_shape: Sequence[int] | None = None,
        dtype: str = "float32",
    ) -> None:
        scales = [_pair(c, "pixels_per_cell") for c in (pixels_per_cell if not isinstance(pixels_per_cell, int) else [pixels_per_cell])]
        if not scales:
            raise ValueError("pixels_per_cell must name at least one cell size")
        if pixel_size is not None and not (isinstance(pixel_size, int) and not isinstance(pixel_size, bool) and pixel_size >= 1):
            raise ValueError(f"pixel_size must be None or an int >= 1, got {pixel_size!r}")
        if not (math.isfinite(pixel_weight) and pixel_weight > 0):
            raise ValueError(f"pixel_weight must be finite and > 0, got {pixel_weight!r}")
        self.scales = scales
        self.pixel_size = pixel_size
        self.pixel_weight = float(pixel_weight)
        super().__init__(orientations=orientations, pixels_per_cell=scales[0], cells_per_block=cells_per_block,
                         block_norm=block_norm, transform_sqrt=transform_sqrt, image_shape=image_shape, dtype=dtype)

    def _scale_blocks(self, shape: Sequence[int], cell: tuple[int, int]) -> tuple[int, int]:
        """``(D, blocks)`` of one scale for images of ``shape``."""
        (dim,) = _feature_dims(shape, orientations=self.orientations, cells=[cell], block=self.cells_per_block)
        return dim, dim // (self.cells_per_block[0] * self.cells_per_block[1] * self.orientations)

    def _dim_for(self, shape: Sequence[int]) -> int:
        return sum(self._scale_blocks(shape, c)[0] for c in self.scales) + (self.pixel_size or 0) ** 2

    def config(self) -> dict:
        out = super().config()
        out.update(pixels_per_cell=[list(c) for c in self.scales], pixel_size=self.pixel_size, pixel_weight=self.pixel_weight)
        return out

    def _hog_into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        shape = tuple(x.shape[2:])
        dims, blocks = zip(*(self._scale_blocks(shape, cell) for cell in self.scales))
        offsets = [sum(dims[:i]) for i in range(len(dims))]
        # gradients and orientations computed once per chunk for every scale, each written into its columns
        _hog_into(x, orientations=self.orientations, cells=self.scales, block=self.cells_per_block,
                  block_norm=self.block_norm, transform_sqrt=self.transform_sqrt,
                  out=[out.narrow(1, o, d) for o, d in zip(offsets, dims)], divisors=[math.sqrt(b) for b in blocks])
        if self.pixel_size is not None:
            pixels, step = out[:, sum(dims) :], _chunk_step(x)
            for i in range(0, x.shape[0], step):  # chunked like the HOG: no op wakes torch's thread pool
                p = F.interpolate(x[i : i + step].to(out.dtype).mean(dim=1, keepdim=True) / 255.0,
                                  size=(self.pixel_size, self.pixel_size), mode="bilinear", align_corners=False, antialias=True)
                torch.mul(p.flatten(1), self.pixel_weight / self.pixel_size, out=pixels[i : i + step])
