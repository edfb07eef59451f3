"""Model and diffusion flags of improved-diffusion, and presets for its published checkpoints.

:class:`ADMConfig` holds the flags of improved-diffusion's scripts
(``improved_diffusion/script_util.py``: ``model_and_diffusion_defaults`` and
``create_model``) with the same names and defaults; the presets are the flags its README
gives for each published checkpoint. Only the flags that change sampling are kept:
``sigma_small``, ``use_kl``, ``rescale_learned_sigmas`` and ``use_checkpoint`` only matter
for training or for ancestral sampling with the variance, and every published model predicts
epsilon (``predict_xstart False``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from pe_lightning.apis.diffusers.improved_diffusion.schedule import NOISE_SCHEDULES
from pe_lightning.apis.diffusers.improved_diffusion.unet import ADMUNet

__all__ = ["ADMConfig", "CHECKPOINT_BASE_URL", "PRESETS", "config_from"]

#: Where OpenAI publishes the improved-diffusion checkpoints (the README's links).
CHECKPOINT_BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/march-2021/"

#: ImageNet classes of the class-conditional models (``NUM_CLASSES`` of ``script_util.py``).
IMAGENET_CLASSES = 1000

#: ``create_model``'s channel multipliers by image size.
_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


@dataclass(frozen=True)
class ADMConfig:
    """improved-diffusion's model and diffusion flags (defaults: ``model_and_diffusion_defaults``).

    Attributes:
        image_size: model resolution in pixels (square).
        num_channels: base width of the U-Net.
        num_res_blocks: residual blocks per level.
        num_heads: attention heads.
        num_heads_upsample: heads on the decoder side (``-1``: ``num_heads``).
        attention_resolutions: feature-map resolutions (pixels) with attention, e.g. ``(16, 8)``.
        dropout: residual-block dropout (no effect when sampling).
        learn_sigma: the model also outputs its variance (``2 * 3`` output channels); DDIM
            uses only the epsilon half.
        class_cond: conditioned on one of 1000 ImageNet classes.
        use_scale_shift_norm: residual blocks apply the embedding as scale and shift.
        channel_mult: width multiplier per level; ``None`` takes ``create_model``'s choice for
            the image size (256: 1,1,2,2,4,4; 64: 1,2,3,4; 32: 1,2,2,2).
        diffusion_steps: ``T``, training timesteps.
        noise_schedule: ``"linear"`` or ``"cosine"``.
        rescale_timesteps: feed the model ``t * 1000 / T`` instead of ``t``.
    """

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    num_heads: int = 4
    num_heads_upsample: int = -1
    attention_resolutions: tuple[int, ...] = (16, 8)
    dropout: float = 0.0
    learn_sigma: bool = False
    class_cond: bool = False
    use_scale_shift_norm: bool = True
    channel_mult: tuple[int, ...] | None = None
    diffusion_steps: int = 1000
    noise_schedule: str = "linear"
    rescale_timesteps: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "num_channels", "num_res_blocks", "num_heads", "diffusion_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model_config.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.num_heads_upsample, int) or (self.num_heads_upsample < 1 and self.num_heads_upsample != -1):
            raise ValueError(f"model_config.num_heads_upsample must be -1 or an int >= 1, got {self.num_heads_upsample!r}")
        for name in ("learn_sigma", "class_cond", "use_scale_shift_norm", "rescale_timesteps"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model_config.{name} must be a bool, got {getattr(self, name)!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"model_config.noise_schedule must be one of {list(NOISE_SCHEDULES)}, got {self.noise_schedule!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"model_config.dropout must be a number in [0, 1), got {self.dropout!r}")
        res = self.attention_resolutions
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 and self.image_size % r == 0 for r in res):
            raise ValueError(
                f"model_config.attention_resolutions must be resolutions dividing image_size={self.image_size}, got {res!r}"
            )
        mult = self.channel_mult
        if mult is None and self.image_size not in _CHANNEL_MULT:
            raise ValueError(
                f"model_config.image_size {self.image_size} has no default channel_mult (only {sorted(_CHANNEL_MULT)}); "
                f"give model_config.channel_mult"
            )
        if mult is not None and (not mult or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mult)):
            raise ValueError(f"model_config.channel_mult must be a non-empty list of ints >= 1, got {mult!r}")
        levels = len(self.levels)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(f"model_config.image_size {self.image_size} is not divisible by 2 ** {levels - 1} ({levels} levels)")

    @property
    def levels(self) -> tuple[int, ...]:
        """The channel multipliers actually used."""
        return tuple(self.channel_mult) if self.channel_mult is not None else _CHANNEL_MULT[self.image_size]

    @property
    def num_classes(self) -> int | None:
        """1000 for a class-conditional model, else ``None``."""
        return IMAGENET_CLASSES if self.class_cond else None

    def build_unet(self, *, device: torch.device | str | None = None) -> ADMUNet:
        """The U-Net of these flags (``create_model``); ``device="meta"`` allocates nothing."""
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return ADMUNet(
                in_channels=3,
                model_channels=self.num_channels,
                out_channels=6 if self.learn_sigma else 3,
                num_res_blocks=self.num_res_blocks,
                attention_rates=tuple(self.image_size // r for r in self.attention_resolutions),
                channel_mult=self.levels,
                dropout=float(self.dropout),
                num_classes=self.num_classes,
                num_heads=self.num_heads,
                num_heads_upsample=self.num_heads_upsample,
                use_scale_shift_norm=self.use_scale_shift_norm,
            )


@dataclass(frozen=True)
class Preset:
    """A published checkpoint: its file name and the README's flags for it."""

    checkpoint: str
    flags: dict[str, Any] = field(default_factory=dict)


#: The README's flags per published checkpoint (``imagenet64_cond_270M`` is the PE paper's model).
PRESETS: dict[str, Preset] = {
    # "Class-conditional ImageNet-64 model (270M parameters, trained for 250K iterations)"
    "imagenet64_cond_270M": Preset("imagenet64_cond_270M_250K.pt", dict(
        image_size=64, num_channels=192, num_res_blocks=3, learn_sigma=True, class_cond=True,
        diffusion_steps=4000, noise_schedule="cosine", rescale_timesteps=False,
    )),
    # "Unconditional ImageNet-64 with our L_hybrid objective and cosine noise schedule"
    "imagenet64_uncond_100M": Preset("imagenet64_uncond_100M_1500K.pt", dict(
        image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=True,
        diffusion_steps=4000, noise_schedule="cosine",
    )),
    # "Unconditional CIFAR-10 with our L_hybrid objective and cosine noise schedule"
    "cifar10_uncond_50M": Preset("cifar10_uncond_50M_500K.pt", dict(
        image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3,
        diffusion_steps=4000, noise_schedule="cosine",
    )),
}


def config_from(preset: str | None, overrides: dict[str, Any] | None = None) -> ADMConfig:
    """Flags of ``preset`` (``None``: the script defaults) with ``overrides`` applied.

    Raises:
        ValueError: unknown preset, unknown flag or an invalid value (naming it).
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be None or one of {sorted(PRESETS)}, got {preset!r}")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"model_config must be None or a dict of improved-diffusion flags, got {overrides!r}")
    names = {f.name for f in dataclasses.fields(ADMConfig)}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ValueError(f"model_config has unknown flags {unknown}; known: {sorted(names)}")
    flags = dict(PRESETS[preset].flags) if preset is not None else {}
    flags.update(overrides or {})
    for name in ("attention_resolutions", "channel_mult"):
        if isinstance(flags.get(name), list):
            flags[name] = tuple(flags[name])
        if name == "attention_resolutions" and isinstance(flags.get(name), str):  # the scripts' "16,8"
            try:
                flags[name] = tuple(int(r) for r in flags[name].split(","))
            except ValueError:
                raise ValueError(f"model_config.attention_resolutions must be like '16,8' or [16, 8], got {flags[name]!r}") from None
    return ADMConfig(**flags)
