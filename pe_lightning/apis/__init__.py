"""Foundation-model APIs (RANDOM and VARIATION).

The diffusers APIs (:class:`DiffusionUNetAPI`, :class:`DiTAPI`, :class:`StableDiffusionAPI`)
import diffusers only in ``setup``, so importing this package stays fast.
"""

from pe_lightning.apis.avatar import Avatar
from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.apis.diffusion import DiffusionUNetAPI
from pe_lightning.apis.dit import DiTAPI
from pe_lightning.apis.drawtext import DrawText
from pe_lightning.apis.improved_diffusion import ImprovedDiffusionAPI
from pe_lightning.apis.nearest_image import NearestImage
from pe_lightning.apis.stable_diffusion import StableDiffusionAPI

__all__ = ["APIOutput", "DiTAPI", "DiffusionUNetAPI", "DrawText", "ImageAPI", "ImprovedDiffusionAPI", "StableDiffusionAPI"]
__all__ += ["Avatar", "NearestImage"]  # weight-free simulators: python-avatars, a public image set
