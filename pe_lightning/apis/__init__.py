"""Foundation-model APIs (RANDOM and VARIATION), by role.

* :mod:`.base`: the :class:`ImageAPI` interface and :class:`APIOutput`;
* :mod:`.diffusers`: the diffusion-model APIs on one shared base (:class:`DiffusionUNetAPI`,
  :class:`DiTAPI`, :class:`StableDiffusionAPI`, :class:`ImprovedDiffusionAPI`); they import
  diffusers only in ``setup``, so importing this package stays fast;
* :mod:`.drawtext`, :mod:`.avatar`, :mod:`.nearest_image`: weight-free simulators
  (:class:`DrawText`, :class:`Avatar`, :class:`NearestImage`);
* :mod:`.imagenet_classes`: the ImageNet class condition shared by DiT and improved-diffusion;
* :mod:`.remote`, :mod:`.hosted`: models behind HTTP (:class:`RemoteImageAPI` for
  ``python -m pe_lightning serve``, :class:`HostedImageAPI` for OpenAI-compatible images APIs),
  on :mod:`.http_pool` (servers, retries, usage) and :mod:`.response_cache`.
"""

from pe_lightning.apis.avatar import Avatar
from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.apis.diffusers import DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI
from pe_lightning.apis.drawtext import DrawText
from pe_lightning.apis.nearest_image import NearestImage
from pe_lightning.apis.hosted import HostedImageAPI
from pe_lightning.apis.remote import RemoteImageAPI

__all__ = ["APIOutput", "DiTAPI", "DiffusionUNetAPI", "DrawText", "ImageAPI", "ImprovedDiffusionAPI", "StableDiffusionAPI"]
__all__ += ["Avatar", "NearestImage"]  # weight-free simulators: python-avatars, a public image set
__all__ += ["HostedImageAPI", "RemoteImageAPI"]  # models behind HTTP (docs/serving.md)
