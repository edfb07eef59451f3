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

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "APIOutput": "pe_lightning.apis.base",
    "Avatar": "pe_lightning.apis.avatar",
    "DiTAPI": "pe_lightning.apis.diffusers",
    "DiffusionUNetAPI": "pe_lightning.apis.diffusers",
    "DrawText": "pe_lightning.apis.drawtext",
    "ImageAPI": "pe_lightning.apis.base",
    "HostedImageAPI": "pe_lightning.apis.hosted",
    "ImprovedDiffusionAPI": "pe_lightning.apis.diffusers",
    "NearestImage": "pe_lightning.apis.nearest_image",
    "RemoteImageAPI": "pe_lightning.apis.remote",
    "StableDiffusionAPI": "pe_lightning.apis.diffusers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.apis.avatar import Avatar
    from pe_lightning.apis.base import APIOutput, ImageAPI
    from pe_lightning.apis.diffusers import DiffusionUNetAPI, DiTAPI, ImprovedDiffusionAPI, StableDiffusionAPI
    from pe_lightning.apis.drawtext import DrawText
    from pe_lightning.apis.hosted import HostedImageAPI
    from pe_lightning.apis.nearest_image import NearestImage
    from pe_lightning.apis.remote import RemoteImageAPI
