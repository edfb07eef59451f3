"""Finding and loading improved-diffusion checkpoint files.

A checkpoint is a local path, or a bare file name (e.g. ``imagenet64_cond_270M_250K.pt``)
looked up in the current folder and then in the torch hub cache
(``<torch.hub.get_dir()>/checkpoints``, moved by ``$TORCH_HOME``), where the FID Inception
weights also live. Nothing is downloaded unless asked (``download=True``, for the published
file names only). The published files are plain state dicts of the U-Net.
"""

from __future__ import annotations

import os

import torch

from pe_lightning.apis.diffusers.improved_diffusion.presets import CHECKPOINT_BASE_URL, PRESETS, ADMConfig
from pe_lightning.apis.diffusers.improved_diffusion.unet import ADMUNet

__all__ = ["PUBLISHED_CHECKPOINTS", "load_unet", "resolve_checkpoint"]

#: File names of the published checkpoints that the presets describe.
PUBLISHED_CHECKPOINTS = tuple(p.checkpoint for p in PRESETS.values())


def _hub_path(name: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def _is_bare_name(checkpoint: str) -> bool:
    return os.path.basename(checkpoint) == checkpoint and not checkpoint.startswith("~")


def _missing_message(checkpoint: str, looked: list[str]) -> str:
    name = os.path.basename(checkpoint)
    where = (
        f"It is published at {CHECKPOINT_BASE_URL}{name} (the checkpoints of github.com/openai/improved-diffusion, "
        f"listed in its README). "
        if name in PUBLISHED_CHECKPOINTS
        else f"The public improved-diffusion checkpoints are published under {CHECKPOINT_BASE_URL} "
             f"({', '.join(PUBLISHED_CHECKPOINTS)}). "
    )
    return (
        f"ImprovedDiffusionAPI: checkpoint {checkpoint!r} not found (looked at {looked}). {where}"
        f"On a machine with internet: `wget {CHECKPOINT_BASE_URL}{name}`; then either put the file at "
        f"{_hub_path(name)} (torch hub cache; $TORCH_HOME moves it) or point at your copy with "
        f"`checkpoint: /path/to/{name}` (--model.init_args.api.init_args.checkpoint /path/to/{name}); "
        f"or set `download: true` on a machine with internet."
    )


def resolve_checkpoint(checkpoint: str, *, download: bool = False) -> str:
    """The local file of ``checkpoint``.

    Args:
        checkpoint: a path (absolute, relative, or with ``~``), or a bare file name looked up
            in the current folder and in ``<torch.hub.get_dir()>/checkpoints``.
        download: if a published bare name is found nowhere, download it into the torch hub
            cache (needs internet).

    Returns:
        An existing file path.

    Raises:
        ValueError: ``checkpoint`` is a URL.
        FileNotFoundError: not found (the message names the file, where it is published and
            how to point at a local copy).
    """
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise ValueError(f"checkpoint must be a file path or a checkpoint file name, got {checkpoint!r}")
    if "://" in checkpoint:
        raise ValueError(
            f"checkpoint must be a local path or a file name, not a URL ({checkpoint!r}); give the file name "
            f"{os.path.basename(checkpoint)!r} with download: true, or download it yourself and give its path"
        )
    if not _is_bare_name(checkpoint):
        path = os.path.expanduser(checkpoint)
        if not os.path.isfile(path):
            raise FileNotFoundError(_missing_message(checkpoint, [path]))
        return path
    looked = [os.path.abspath(checkpoint), _hub_path(checkpoint)]
    for path in looked:
        if os.path.isfile(path):
            return path
    if download and checkpoint in PUBLISHED_CHECKPOINTS:
        os.makedirs(os.path.dirname(looked[1]), exist_ok=True)
        try:
            torch.hub.download_url_to_file(CHECKPOINT_BASE_URL + checkpoint, looked[1], progress=False)
        except Exception as err:  # network errors come in many types
            raise FileNotFoundError(_missing_message(checkpoint, looked) + f" Downloading failed: {err}") from err
        return looked[1]
    raise FileNotFoundError(_missing_message(checkpoint, looked))


def load_unet(path: str, config: ADMConfig) -> ADMUNet:
    """Build the U-Net of ``config`` without allocating it, then take the tensors of ``path``.

    Args:
        path: a checkpoint file: a state dict saved with ``torch.save`` (as published).
        config: the flags the checkpoint was trained with.

    Returns:
        The U-Net on the CPU in the checkpoint's dtype, in ``eval()`` mode, without gradients.

    Raises:
        RuntimeError: the file is not a state dict, or its keys or shapes do not match
            ``config`` (the message names the file and the first differences).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"ImprovedDiffusionAPI: cannot read checkpoint {path!r} as a torch state dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeError(f"ImprovedDiffusionAPI: checkpoint {path!r} is not a state dict of tensors")
    unet = config.build_unet(device="meta")
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise RuntimeError(
            f"ImprovedDiffusionAPI: checkpoint {path!r} does not match the configured architecture {config}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, wrong shapes "
            f"{[(k, tuple(state[k].shape), expected[k]) for k in wrong[:5]]}. Choose the preset of this file or "
            f"fix model_config."
        )
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval().requires_grad_(False)
