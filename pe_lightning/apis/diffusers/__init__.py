"""The diffusion-model APIs that share :class:`~pe_lightning.apis.diffusers.base.DiffusersAPI`.

* :mod:`.base`: :class:`DiffusersAPI` (arguments, validation, batching, autocast, the NaN
  check) and the helpers its subclasses share (loading, image conversion, SDEdit sampling, VAE);
* :mod:`.unet`: :class:`DiffusionUNetAPI`, any diffusers ``UNet2DModel`` (pixel space);
* :mod:`.dit`: :class:`DiTAPI`, ImageNet class-conditional DiT (latent space);
* :mod:`.stable_diffusion`: :class:`StableDiffusionAPI`, text-to-image and img2img;
* :mod:`.improved_diffusion`: :class:`ImprovedDiffusionAPI`, OpenAI's improved-diffusion
  (ADM) checkpoints with our own U-Net (no diffusers).

Importing this package does not import diffusers or transformers: the APIs import them in
``setup``.
"""

from pe_lightning.apis.diffusers.base import DiffusersAPI, NonFiniteOutputError
from pe_lightning.apis.diffusers.dit import DiTAPI
from pe_lightning.apis.diffusers.improved_diffusion import ImprovedDiffusionAPI
from pe_lightning.apis.diffusers.stable_diffusion import StableDiffusionAPI
from pe_lightning.apis.diffusers.unet import DiffusionUNetAPI

__all__ = ["DiTAPI", "DiffusersAPI", "DiffusionUNetAPI", "ImprovedDiffusionAPI", "NonFiniteOutputError", "StableDiffusionAPI"]
