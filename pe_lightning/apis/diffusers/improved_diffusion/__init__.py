"""OpenAI's improved-diffusion (ADM) models: our U-Net with the checkpoints' layout, DDIM over respaced schedules, the PE API.

* :mod:`.unet`: :class:`ADMUNet`, whose parameter names and shapes match the published checkpoints;
* :mod:`.presets`: :class:`ADMConfig` (the scripts' flags) and :data:`PRESETS` (flags per published file);
* :mod:`.schedule`: beta schedules, timestep respacing, DDIM with an SDEdit start;
* :mod:`.weights`: finding a checkpoint file (path or file name) and loading it strictly;
* :mod:`.api`: :class:`ImprovedDiffusionAPI`.
"""

from pe_lightning.apis.diffusers.improved_diffusion.api import ImprovedDiffusionAPI
from pe_lightning.apis.diffusers.improved_diffusion.presets import PRESETS, ADMConfig, config_from
from pe_lightning.apis.diffusers.improved_diffusion.unet import ADMUNet

__all__ = ["ADMConfig", "ADMUNet", "ImprovedDiffusionAPI", "PRESETS", "config_from"]
