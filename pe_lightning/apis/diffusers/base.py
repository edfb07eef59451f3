"""The shared base of the diffusers APIs: :class:`DiffusersAPI`, its validation, loading, image and SDEdit helpers.

The diffusers APIs (:class:`~pe_lightning.apis.diffusers.unet.DiffusionUNetAPI`,
:class:`~pe_lightning.apis.diffusers.dit.DiTAPI` and
:class:`~pe_lightning.apis.diffusers.stable_diffusion.StableDiffusionAPI`) share one recipe
(:class:`~pe_lightning.apis.diffusers.improved_diffusion.ImprovedDiffusionAPI` runs its own
U-Net and schedule without diffusers, but subclasses :class:`DiffusersAPI` for the conventions below):

* RANDOM_API samples from pure noise with the model's scheduler.
* VARIATION_API is SDEdit (Meng et al., 2022), as diffusers' img2img pipelines do it: the
  variation degree is a *strength* ``s`` in ``(0, 1]``. With ``K = num_inference_steps``,
  the scheduler's ``K`` timesteps are set, the image (or its VAE latent) is noised to
  timestep ``timesteps[K - int(K * s)]`` with ``scheduler.add_noise`` and the last
  ``int(K * s)`` steps denoise it. A larger strength means more noise, a bigger change;
  a strength with ``int(K * s) < 1`` leaves no denoising step and is rejected by
  :meth:`validate_degree`.

Conventions shared by all of them:

* Constructor arguments are plain config values (strings, numbers, lists); weights load
  lazily in :meth:`setup` with ``from_pretrained`` from a Hub id or a local folder. A model
  that is not available offline is an ``OSError`` that names it, lists the paths and
  variants tried, and says how to pre-download it. With ``torch_dtype: float16`` the
  checkpoint's ``fp16`` weight files are loaded where it has them (``variant: auto``).
* The ``torch.Generator`` passed to each call is the only randomness. Initial noise is drawn
  on the generator's device (the CPU for PE's generators) in float32 and then moved to the
  model's device, so a given generator gives the same starting noise on any device.
* Images in and out are uint8 NHWC numpy arrays at the private resolution ``image_size``
  with ``channels`` channels. They are resized to the model resolution with antialiased
  bicubic interpolation (and back); grayscale images are repeated to RGB for an RGB model,
  and outputs are reduced to one channel by luminance (ITU-R BT.601 weights).
* Large calls are split into batches of ``batch_size`` samples (one forward pass each;
  classifier-free guidance doubles it); VAEs encode and decode in sub-batches of
  ``vae_batch_size`` images, and VARIATION encodes a set of parents once for all the
  lookahead variations made of it (the same images again reuse their latents).
* On CUDA devices the models run under ``torch.autocast`` with the ``autocast`` dtype
  (``None`` disables it); on the CPU autocast is off. Load the weights in the compute
  dtype (``torch_dtype: float16``) rather than float32 under float16 autocast, which
  re-casts every weight in every forward pass.
* Every output batch is checked for NaN/inf before it becomes uint8 (where NaN would
  silently turn into black images): :class:`NonFiniteOutputError` names the API, the call
  and the batch.

``import pe_lightning`` does not import diffusers; it is imported on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import math
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.apis.base import ImageAPI, check_api_labels
from pe_lightning.devices import to_device
from pe_lightning.images import check_images

__all__ = [
    "DTYPES",
    "SCHEDULERS",
    "DiffusersAPI",
    "NonFiniteOutputError",
    "autocast_context",
    "check_class_subsets",
    "check_guidance",
    "check_positive_int",
    "check_strength",
    "download_hint",
    "draw_classes",
    "from_images",
    "is_int",
    "is_number",
    "load_first",
    "load_pretrained",
    "make_scheduler",
    "randn",
    "sdedit_sample",
    "to_images",
    "vae_decode",
    "vae_encode",
]

#: ``torch_dtype`` / ``autocast`` names accepted in configs.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: Scheduler names accepted by the ``scheduler`` arguments, and their diffusers classes.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}

#: ITU-R BT.601 luminance weights (R, G, B), as PIL's ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------- validation helpers


def is_int(value: Any) -> bool:
    """``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """``value`` is a real number (Python or numpy int or float), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``int(value)``; ``ValueError`` naming ``name`` unless ``value`` is an int >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_dtype_name(name: str, value: Any, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if value not in DTYPES:
        allowed = sorted(DTYPES) + (["null"] if allow_none else [])
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return str(value)


def _check_image_size(value: Any) -> tuple[int, int]:
    size = (value, value) if is_int(value) else value
    try:
        h, w = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int >= 8 or (height, width), got {value!r}") from None
    if not (is_int(h) and is_int(w) and h >= 8 and w >= 8):
        raise ValueError(f"image_size must be an int >= 8 or (height, width) of ints >= 8, got {value!r}")
    return int(h), int(w)


def check_guidance(value: Any) -> float | list[float]:
    """Validate a guidance scale (a finite number >= 0), or a per-iteration list of them (index 0: the initial RANDOM call).

    Returns:
        The scale as a float, or the list of them as floats.

    Raises:
        ValueError: not a finite number >= 0, or an empty list.
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("guidance_scale must be a number or a non-empty list of numbers, got []")
        return [check_guidance(v) for v in value]  # type: ignore[misc]
    if not is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (or a list of them), got {value!r}")
    return float(value)


def check_strength(degree: Any, num_inference_steps: int) -> float:
    """Validate an SDEdit strength and return it as a float.

    Args:
        degree: the variation degree, a strength in ``(0, 1]``.
        num_inference_steps: ``K``, the number of scheduler steps of a full sampling run.

    Returns:
        ``float(degree)``.

    Raises:
        ValueError: ``degree`` is not a finite number in ``(0, 1]``, or it leaves no
            denoising step (``int(num_inference_steps * degree) < 1``).
    """
    if not is_number(degree):
        raise ValueError(f"variation degree must be a number (an SDEdit strength in (0, 1]), got {degree!r}")
    strength = float(degree)
    if not (math.isfinite(strength) and 0.0 < strength <= 1.0):
        raise ValueError(f"variation degree must be an SDEdit strength in (0, 1], got {degree!r}")
    if int(num_inference_steps * strength) < 1:
        raise ValueError(
            f"variation degree {degree!r} leaves no denoising step: int(num_inference_steps * degree) = "
            f"int({num_inference_steps} * {strength}) = 0; use a degree >= {1 / num_inference_steps:.4g} "
            f"or more num_inference_steps"
        )
    return strength


def check_class_subsets(name: str, value: Any) -> list[list[int]] | None:
    """Validate ``None`` or one non-empty list of non-negative ints (model class ids) per private class.

    Args:
        name: the argument, for messages (e.g. ``"class_map"``).
        value: ``None`` or a list of lists of class ids.

    Returns:
        ``None``, or the lists with plain ``int`` entries.

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be None or a non-empty list with one list of class ids per private class, got {value!r}")
    out = []
    for c, subset in enumerate(value):
        if isinstance(subset, (str, bytes)) or not isinstance(subset, (list, tuple)) or not subset:
            raise ValueError(f"{name}[{c}] must be a non-empty list of class ids, got {subset!r}")
        if not all(is_int(k) and k >= 0 for k in subset):
            raise ValueError(f"{name}[{c}] must contain ints >= 0, got {subset!r}")
        out.append([int(k) for k in subset])
    return out


def draw_classes(
    labels: np.ndarray, subsets: list[list[int]] | None, generator: torch.Generator, *, field: str
) -> np.ndarray:
    """One model class per sample, uniform within its private class's subset (identity when ``None``).

    Args:
        labels: int64 ``(N,)`` private class of each sample.
        subsets: ``None`` (model class = private class) or one list of model classes per private class.
        generator: the only randomness (one float64 uniform per sample, drawn on its device).
        field: the argument that holds ``subsets``, for messages.

    Returns:
        int64 ``(N,)`` model classes.
    """
    if subsets is None:
        return labels.copy()
    if labels.size and labels.max() >= len(subsets):
        raise ValueError(
            f"{field} has {len(subsets)} lists (one per private class) but a label {labels.max()} was given"
        )
    lengths = torch.tensor([len(s) for s in subsets], dtype=torch.float64)
    u = torch.rand(labels.shape[0], generator=generator, device=generator.device, dtype=torch.float64).cpu()
    pick = torch.floor(u * lengths[torch.from_numpy(labels)]).long().clamp_(min=0)
    table = [np.asarray(s, dtype=np.int64) for s in subsets]
    return np.array([table[c][i] for c, i in zip(labels.tolist(), pick.tolist())], dtype=np.int64).reshape(-1)


# ---------------------------------------------------------------------------- loading


def _looks_like_path(model: str) -> bool:
    return os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model) or model.count("/") > 1 or "\\" in model


def _dtype_kwarg() -> str:
    """The ``from_pretrained`` keyword of the weight dtype: ``dtype`` in recent diffusers, ``torch_dtype`` before."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present once torch_dtype was renamed)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def download_hint(model: str, *, revision: str | None = None) -> str:
    """How to make ``model`` available on an offline machine."""
    rev = f" --revision {revision}" if revision else ""
    return (
        f"To use it offline, download it once on a machine with internet access: `hf download {model}{rev}` "
        f"(`huggingface-cli download {model}` with older huggingface_hub) into the Hugging Face cache "
        f"(HF_HOME, default ~/.cache/huggingface) and copy that cache to this machine (then set HF_HUB_OFFLINE=1 "
        f"or local_files_only: true), or download it into a folder with `hf download {model}{rev} --local-dir "
        f"<folder>` and pass that folder as the model."
    )


def load_pretrained(loader: Callable[..., Any], model: str, *, what: str, revision: str | None = None, **kwargs: Any) -> Any:
    """Call ``loader(model, revision=..., **kwargs)`` (a ``from_pretrained``) with clear errors.

    Args:
        loader: e.g. ``UNet2DModel.from_pretrained``.
        model: a Hugging Face Hub id or a local folder.
        what: what is being loaded, for messages (e.g. ``"DiffusionUNetAPI UNet"``).
        revision: Hub revision (branch, tag or commit); ``None`` for the default.
        **kwargs: passed to ``loader``.

    Returns:
        What ``loader`` returns.

    Raises:
        FileNotFoundError: ``model`` looks like a local path but does not exist.
        OSError: the model cannot be loaded (not cached offline, no network, missing file);
            the message names the model and says how to pre-download it.
    """
    return load_first(loader, model, what=what, revision=revision, attempts=[(model, {})], **kwargs)[0]


def load_first(
    loader: Callable[..., Any],
    model: str,
    *,
    what: str,
    attempts: Sequence[tuple[str, dict[str, Any]]],
    revision: str | None = None,
    **kwargs: Any,
) -> tuple[Any, str]:
    """:func:`load_pretrained` trying several layouts or weight variants in turn; the first that loads wins.

    Args:
        loader: e.g. ``UNet2DModel.from_pretrained``.
        model: a Hugging Face Hub id or a local folder.
        what: what is being loaded, for messages.
        attempts: ``(label, extra kwargs)`` in order of preference, e.g.
            ``[("<model>/unet", {"subfolder": "unet"}), ("<model> (root)", {"subfolder": None})]``.
            An attempt fails over to the next on an ``OSError`` (missing files, not cached)
            or, when it asks for a ``variant``, a ``ValueError`` (diffusers' "no such
            variant"). Labels name the paths tried in the final error.
        revision: Hub revision; ``None`` for the default.
        **kwargs: passed to ``loader`` in every attempt.

    Returns:
        The loaded object and the label of the attempt that loaded it.

    Raises:
        FileNotFoundError: ``model`` looks like a local path but does not exist.
        OSError: no attempt loaded; the message lists each path tried and its error, and
            says how to pre-download the model.
    """
    path = os.path.expanduser(model)
    if _looks_like_path(model) and not os.path.isdir(path):
        raise FileNotFoundError(
            f"{what}: model={model!r} looks like a local folder but it does not exist (or is not a folder). "
            f"Pass an existing folder written by save_pretrained / `hf download --local-dir`, or a Hugging Face Hub id."
        )
    if os.path.isdir(path):
        model = path
    if revision is not None and not os.path.isdir(path):
        kwargs["revision"] = revision
    from diffusers.utils import logging as diffusers_logging

    bars_were_enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components..."
    failures: list[tuple[str, Exception]] = []
    try:
        for label, extra in attempts:
            try:
                return loader(model, **{**kwargs, **extra}), label
            except (OSError, ValueError) as err:
                if isinstance(err, ValueError) and not extra.get("variant"):
                    raise
                failures.append((label, err))
    finally:
        if bars_were_enabled:
            diffusers_logging.enable_progress_bar()
    if len(failures) == 1:
        errors = f"Original error: {failures[0][1]}"
    else:
        errors = "Tried, in order: " + "; ".join(f"({i}) {label}: {err}" for i, (label, err) in enumerate(failures, 1))
    if os.path.isdir(path):
        raise OSError(f"{what}: cannot load the model from the local folder {model!r}. {errors}") from failures[-1][1]
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    state = (
        "HF_HUB_OFFLINE is set and the model is not fully in the local Hugging Face cache"
        if offline or kwargs.get("local_files_only")
        else "it could not be found locally or downloaded (no network, a wrong id or layout, or a gated model that "
        "needs `hf auth login`)"
    )
    raise OSError(
        f"{what}: cannot load model {model!r}: {state}. {download_hint(model, revision=revision)} {errors}"
    ) from failures[-1][1]


def make_scheduler(name: str | None, base: Any | None, *, kwargs: dict[str, Any] | None = None) -> Any:
    """Build a diffusers scheduler.

    Args:
        name: a key of :data:`SCHEDULERS`, or ``None`` to keep ``base``'s class.
        base: a scheduler whose config is reused (e.g. the one shipped with the model),
            or ``None`` for the class defaults.
        kwargs: config entries that override ``base``'s (e.g. ``{"timestep_spacing": "trailing"}``).

    Returns:
        A new scheduler instance.
    """
    import diffusers

    if name is None:
        if base is None:
            raise ValueError("make_scheduler: give a scheduler name or a base scheduler")
        cls = type(base)
    else:
        cls = getattr(diffusers, SCHEDULERS[name])
    config = dict(base.config) if base is not None else {}
    config.update(kwargs or {})
    return cls.from_config(config)


# ---------------------------------------------------------------------------- images and noise


def from_images(images: np.ndarray, *, size: tuple[int, int], channels: int, device: torch.device) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW in ``[-1, 1]`` at ``size`` with ``channels`` channels.

    Args:
        images: uint8 ``(N, H, W, C)`` with ``C`` in (1, 3).
        size: model resolution ``(height, width)``; resized with antialiased bicubic
            interpolation when different.
        channels: model channels, 1 (luminance) or 3 (grayscale inputs are repeated).
        device: where the tensor goes.

    Returns:
        float32 ``(N, channels, height, width)``.
    """
    x = to_device(torch.from_numpy(np.ascontiguousarray(images)), device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    x = _match_channels(x, channels)
    return _resize(x, size).clamp_(-1.0, 1.0)


def to_images(x: torch.Tensor, *, size: tuple[int, int], channels: int) -> np.ndarray:
    """float NCHW in ``[-1, 1]`` -> uint8 NHWC numpy at ``size`` with ``channels`` channels.

    Args:
        x: ``(N, C, H, W)`` with ``C`` in (1, 3), values nominally in ``[-1, 1]``.
        size: output ``(height, width)`` (antialiased bicubic resize when different).
        channels: 1 (luminance of RGB) or 3 (grayscale is repeated).

    Returns:
        uint8 ``(N, height, width, channels)``.
    """
    x = _resize(x.float().clamp(-1.0, 1.0), size)
    x = _match_channels(x, channels)
    x = ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"cannot convert images with {x.shape[1]} channels to {channels} channels (1 and 3 are supported)")


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)


def randn(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """float32 standard normal noise drawn on the generator's device, then moved to ``device``."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32).to(device)


def autocast_context(device: torch.device, dtype_name: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on CUDA devices with ``dtype_name``; a no-op otherwise."""
    if device.type != "cuda" or dtype_name is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=DTYPES[dtype_name])


def vae_encode(
    vae: Any,
    images: np.ndarray,
    *,
    size: tuple[int, int],
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> torch.Tensor:
    """Scaled VAE posterior means of uint8 images, ``batch_size`` images per encoder pass.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        images: uint8 ``(N, H, W, C)``, ``N >= 1``; resized to ``size`` and made RGB
            (:func:`from_images`) a sub-batch at a time.
        size: the model resolution ``(height, width)``.
        device: the VAE's device.
        batch_size: images per pass (the encoder's activations at 256-512 px are the
            memory peak of a variation, far above the latents').
        autocast: returns the autocast context to run in.

    Returns:
        float32 ``(N, latent_channels, height / f, width / f)`` on the CPU:
        ``latent_dist.mode() * scaling_factor``.
    """
    scaling = float(vae.config.scaling_factor)
    parts = []
    for start in range(0, images.shape[0], batch_size):
        pixels = from_images(images[start : start + batch_size], size=size, channels=3, device=device)
        with autocast():
            parts.append((vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float() * scaling).cpu())
    return torch.cat(parts)


def vae_decode(
    vae: Any, latents: torch.Tensor, *, batch_size: int, autocast: Callable[[], contextlib.AbstractContextManager]
) -> torch.Tensor:
    """Decode scaled latents, ``batch_size`` at a time.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        latents: ``(N, C, h, w)`` latents times ``scaling_factor``, ``N >= 1``.
        batch_size: latents per decoder pass.
        autocast: returns the autocast context to run in.

    Returns:
        float32 ``(N, 3, H, W)`` images, nominally in ``[-1, 1]``.
    """
    scaling = float(vae.config.scaling_factor)
    parts = []
    for batch in latents.split(batch_size):
        with autocast():
            parts.append(vae.decode((batch / scaling).to(vae.dtype)).sample.float())
    return torch.cat(parts)


class NonFiniteOutputError(FloatingPointError):
    """A diffusion API produced NaN/inf pixels (usually float16 overflow); names the API, call and batch."""


def sdedit_sample(
    *,
    scheduler: Any,
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    num_inference_steps: int,
    generator: torch.Generator,
    device: torch.device,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    eta: float = 0.0,
) -> torch.Tensor:
    """Sample from noise (``init=None``) or SDEdit ``init`` at ``strength``.

    The timestep arithmetic is diffusers' img2img (``get_timesteps``): with
    ``K = num_inference_steps`` and ``k = min(int(K * strength), K)``, denoising runs over
    ``scheduler.timesteps[(K - k) * order:]`` starting from ``init`` noised to the first of
    them.

    Args:
        scheduler: a diffusers scheduler (its state is reset here).
        model_fn: ``(model_input, t) -> prediction`` in float32 with the shape of the sample
            (e.g. epsilon), with classifier-free guidance already applied.
        shape: ``(N, C, H, W)`` of the sample (pixels or latents).
        num_inference_steps: ``K``.
        generator: the only randomness (initial noise and stochastic scheduler steps).
        device: where the sampling runs.
        init: float32 ``shape`` clean sample to vary, or ``None`` to sample from noise.
        strength: SDEdit strength in ``(0, 1]`` (ignored when ``init`` is ``None``).
        eta: DDIM's eta (passed to schedulers whose ``step`` takes it).

    Returns:
        float32 ``shape`` denoised sample.
    """
    scheduler.set_timesteps(num_inference_steps, device=device)
    order = getattr(scheduler, "order", 1)
    noise = randn(shape, generator, device)
    if init is None:
        timesteps = scheduler.timesteps
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        x = noise * scheduler.init_noise_sigma
    else:
        k = min(int(num_inference_steps * strength), num_inference_steps)
        if k < 1:  # validate_degree prevents this; a guard for direct callers
            raise ValueError(f"strength {strength} leaves no denoising step with num_inference_steps={num_inference_steps}")
        t_start = num_inference_steps - k
        timesteps = scheduler.timesteps[t_start * order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * order)
        x = scheduler.add_noise(init.float(), noise, timesteps[:1].repeat(shape[0]))
    params = inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {}
    if "generator" in params:
        extra["generator"] = generator
    if "eta" in params:
        extra["eta"] = eta
    for t in timesteps:
        model_input = scheduler.scale_model_input(x, t)
        pred = model_fn(model_input, t).float()
        x = scheduler.step(pred, t, x, **extra).prev_sample.float()
    return x


# ---------------------------------------------------------------------------- shared base class


class DiffusersAPI(ImageAPI):
    """Shared arguments, validation and batching of the diffusers APIs (not used directly).

    Args:
        model: Hugging Face Hub id or local folder (``save_pretrained`` layout).
        revision: Hub revision (branch, tag or commit hash); ignored for local folders.
        torch_dtype: weight dtype, ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        autocast: autocast dtype on CUDA devices (``"float16"`` or ``"bfloat16"``), or
            ``None`` to run in ``torch_dtype``; autocast is always off on the CPU.
        local_files_only: never contact the Hub (as ``HF_HUB_OFFLINE=1`` does).
        num_inference_steps: ``K``, scheduler steps of a full sampling run; a variation of
            strength ``s`` runs ``int(K * s)`` of them.
        image_size: private resolution, ``int`` or ``(height, width)``; inputs and outputs.
        channels: private channels, 1 (grayscale) or 3 (RGB).
        batch_size: samples per forward pass.
        variant: weight-file variant to load: ``"auto"`` (the ``fp16`` files when
            ``torch_dtype`` is float16 and the checkpoint has them, else the default files,
            cast on load), ``None`` (always the default files) or a name such as ``"fp16"``
            (required to exist).
    """

    def __init__(
        self,
        *,
        model: str,
        revision: str | None,
        torch_dtype: str,
        autocast: str | None,
        local_files_only: bool,
        num_inference_steps: int,
        image_size: int | tuple[int, int],
        channels: int,
        batch_size: int,
        variant: str | None = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{name} model must be a Hugging Face Hub id or a local folder, got {model!r}")
        if revision is not None and (not isinstance(revision, str) or not revision):
            raise ValueError(f"{name} revision must be None or a non-empty string, got {revision!r}")
        if not isinstance(local_files_only, bool):
            raise ValueError(f"{name} local_files_only must be a bool, got {local_files_only!r}")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"{name} channels must be 1 or 3, got {channels!r}")
        if variant is not None and (not isinstance(variant, str) or not variant):
            raise ValueError(f"{name} variant must be 'auto', None or a variant name such as 'fp16', got {variant!r}")
        self.variant = variant
        self.model = model
        self.revision = revision
        self.torch_dtype = _check_dtype_name("torch_dtype", torch_dtype)
        self.autocast = _check_dtype_name("autocast", autocast, allow_none=True)
        if self.autocast == "float32":
            self.autocast = None
        self.local_files_only = local_files_only
        self.num_inference_steps = check_positive_int("num_inference_steps", num_inference_steps)
        self.size = _check_image_size(image_size)
        self.image_size = image_size if is_int(image_size) else self.size
        self.channels = int(channels)
        self.image_shape = (self.size[0], self.size[1], self.channels)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = torch.device("cpu")
        self.class_names: list[str] | None = None
        self.iteration = 0
        self._latent_cache: tuple[tuple, torch.Tensor] | None = None

    # -- common pieces

    def _setup_common(self, device: torch.device | str, class_names: Sequence[str] | None) -> None:
        self.device = torch.device(device)
        if class_names is not None:
            names = [str(c) for c in class_names]
            if not names:
                raise ValueError("class_names must be non-empty")
            self.class_names = names

    def _load_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {_dtype_kwarg(): DTYPES[self.torch_dtype]}
        if importlib.util.find_spec("accelerate") is None:
            kwargs["low_cpu_mem_usage"] = False  # avoids diffusers' "accelerate was not found" warning
        if self.local_files_only:
            kwargs["local_files_only"] = True
        return kwargs

    def _load_attempts(
        self, layouts: Sequence[tuple[str, dict[str, Any]]] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """The :func:`load_first` attempts: each layout (``(path label, kwargs)``; default: the model as given)
        with each weight variant :attr:`variant` allows, preferred first."""
        if self.variant == "auto":
            variants = [("fp16", {"variant": "fp16"}), ("default", {})] if self.torch_dtype == "float16" else [(None, {})]
        else:
            variants = [(self.variant, {"variant": self.variant} if self.variant else {})]
        out = []
        for path, layout in layouts or [(self.model, {})]:
            for name, kwargs in variants:
                label = path if name is None else f"{path} ({name} weight files)"
                out.append((label, {**layout, **kwargs}))
        return out

    def _to_images(self, x: torch.Tensor, *, call: str, batch: slice, n: int) -> np.ndarray:
        """:func:`to_images` of one output batch, refusing NaN/inf (which would become black images).

        Raises:
            NonFiniteOutputError: naming the API, the call, the batch and the likely cause.
        """
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            index, count = batch.start // self.batch_size + 1, -(-n // self.batch_size)
            raise NonFiniteOutputError(
                f"{type(self).__name__}(model={self.model!r}).{call}: batch {index} of {count} (samples "
                f"{batch.start}..{batch.stop - 1} of this call) has {bad} NaN/inf values of {x.numel()} "
                f"(torch_dtype={self.torch_dtype}, autocast={self.autocast}, device={self.device}). float16 overflow is "
                f"the usual cause: use torch_dtype/autocast bfloat16 or float32 for this model."
            )
        return to_images(x, size=self.size, channels=self.channels)

    def _encoded_once(self, images: np.ndarray, encode: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        """``encode(images)``, reused while the same images come again.

        PE asks for ``lookahead_degree`` variations of the same chunk of parents in a row;
        their latents are computed once (the last call's result is kept, keyed by the
        images' bytes and the loaded model).
        """
        images = np.ascontiguousarray(images)
        key = (getattr(self, "_loaded_key", None), images.shape, hashlib.blake2b(images, digest_size=16).digest())
        if self._latent_cache is None or self._latent_cache[0] != key:
            self._latent_cache = None  # free the old latents before computing new ones
            self._latent_cache = (key, encode(images))
        return self._latent_cache[1]

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` is a strength in ``(0, 1]`` with ``int(K * degree) >= 1``."""
        check_strength(degree, self.num_inference_steps)

    def _check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        names = self.class_names
        return check_api_labels(labels, n=n, limit=None if names is None else len(names),
                                what="non-negative labels" if names is None else f"the {len(names)} class_names")

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        """VARIATION's input images, checked to be uint8 ``(N, *image_shape)`` (C-contiguous)."""
        return check_images(images, name="images", shape=self.image_shape)

    def _require_setup(self, loaded: bool) -> None:
        if not loaded:
            raise RuntimeError(f"{type(self).__name__}: call setup(device=...) before random/variation (it loads the weights)")

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.autocast)

    # -- per-iteration guidance scale (DiT and Stable Diffusion)

    def set_iteration(self, iteration: int) -> None:
        """Record the PE iteration (0: the initial RANDOM) and check a per-iteration guidance schedule covers it.

        Raises:
            ValueError: ``guidance_scale`` is a list with no entry for ``iteration``.
        """
        if not is_int(iteration) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        self.iteration = int(iteration)
        if getattr(self, "guidance_scale", None) is not None:
            self.current_guidance_scale()

    def current_guidance_scale(self) -> float:
        """The guidance scale of the current iteration (``guidance_scale[iteration]`` for a list)."""
        scale = self.guidance_scale  # type: ignore[attr-defined]
        if isinstance(scale, list):
            if self.iteration >= len(scale):
                raise ValueError(
                    f"{type(self).__name__} guidance_scale has {len(scale)} entries (one per PE iteration, index 0 = "
                    f"the initial RANDOM call) but iteration {self.iteration} was requested; give at least "
                    f"iterations + 1 entries"
                )
            return float(scale[self.iteration])
        return float(scale)
