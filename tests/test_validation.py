"""The one set of integer / real checks: numpy and Python numbers alike, never bool, errors name the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pe_lightning.validation import check_int, check_real, is_int, is_number


def test_ints_and_numbers_accept_numpy_and_refuse_bool():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0) and not is_int("3")
    assert is_number(2.5) and is_number(np.float32(1)) and is_number(np.int8(1)) and not is_number(False)
    assert check_int("iterations", np.int32(4)) == 4 and type(check_int("iterations", np.int32(4))) is int
    assert check_real("epsilon", math.inf) == math.inf and check_real("epsilon", np.float64(0.5)) == 0.5


@pytest.mark.parametrize("value", [0, -1, True, 1.0, "2", None])
def test_check_int_names_the_field(value):
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got"):
        check_int("batch_size", value)


def test_check_real_names_the_field():
    with pytest.raises(ValueError, match="delta must be a real number, got '1'"):
        check_real("delta", "1")
    with pytest.raises(ValueError, match="delta must not be NaN"):
        check_real("delta", math.nan)


def test_privacy_settings_and_diffusers_share_the_checks():
    import pe_lightning.apis.diffusers.base as diffusers_base
    import pe_lightning.privacy as privacy

    assert diffusers_base.check_positive_int is check_int and diffusers_base.is_int is is_int
    assert privacy.check_int is check_int and privacy.check_real is check_real


def test_every_api_implements_random_and_variation_through_the_template():
    from pe_lightning.apis import Avatar, DrawText, HostedImageAPI, ImageAPI, NearestImage, RemoteImageAPI
    from pe_lightning.apis.diffusers import DiffusersAPI, DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI

    for cls in (Avatar, DrawText, HostedImageAPI, NearestImage, RemoteImageAPI, DiffusionUNetAPI, DiTAPI,
                ImprovedDiffusionAPI, StableDiffusionAPI):
        for call in ("random", "variation"):
            assert getattr(cls, call) is getattr(ImageAPI, call), f"{cls.__name__} overrides the template method {call}"
            assert not getattr(getattr(cls, f"_{call}"), "__isabstractmethod__", False), f"{cls.__name__} has no _{call}"
        assert not cls.__abstractmethods__, f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} abstract"
    for cls in (DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI):
        assert "_loaded" in vars(cls) and cls.check_ready is DiffusersAPI.check_ready


def test_the_variation_template_checks_before_the_api_runs():
    """A bad degree, image shape or label is refused by ImageAPI.variation, naming it, before _variation runs."""
    import torch

    from pe_lightning.apis import APIOutput, ImageAPI

    class Recorder(ImageAPI):
        image_shape = (4, 4, 1)
        calls: list = []

        def _random(self, *, labels, generator):
            self.calls.append(("random", labels.dtype))
            return APIOutput(images=np.zeros((len(labels), 4, 4, 1), np.uint8))

        def _variation(self, *, images, conditions, labels, degree, generator):
            self.calls.append(("variation", labels.dtype, type(degree)))
            return APIOutput(images=images.copy())

    api, g = Recorder(), torch.Generator().manual_seed(0)
    images = np.zeros((2, 4, 4, 1), np.uint8)
    for kwargs, field in (({"degree": -1.0}, "degree"), ({"images": images[:, :3]}, "images"),
                          ({"labels": np.array([0])}, "labels"), ({"labels": np.array([0.5, 1.0])}, "labels")):
        args = {"images": images, "conditions": {}, "labels": np.array([0, 1]), "degree": 1, "generator": g, **kwargs}
        with pytest.raises(ValueError, match=field):
            api.variation(**args)
    with pytest.raises(ValueError, match="labels"):
        api.random(labels=np.array([-1]), generator=g)
    assert api.calls == []
    api.variation(images=images, conditions={}, labels=np.array([0, 1], np.int32), degree=1, generator=g)
    api.random(labels=np.array([0, 1], np.int32), generator=g)
    assert api.calls == [("variation", np.int64, float), ("random", np.int64)]
