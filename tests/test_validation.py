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


def test_every_diffusers_api_implements_variation_through_the_template():
    from pe_lightning.apis.diffusers import DiffusersAPI, DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI

    for cls in (DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI):
        assert "variation" not in vars(cls), f"{cls.__name__} overrides the template method"
        assert "_variation" in vars(cls) and "_variation_loaded" in vars(cls)
        assert cls.variation is DiffusersAPI.variation
