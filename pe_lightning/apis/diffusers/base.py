"""The shared base of the diffusers APIs: :class:`DiffusersAPI` and the validation of their arguments.

By role: loading (:mod:`.loading`), images, noise and the VAE (:mod:`.images`), the SDEdit
sampler (:mod:`.sdedit`); this module re-exports their helpers.

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
import math
from abc import abstractmethod
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import ImageAPI
from pe_lightning.apis.diffusers.images import (
    NonFiniteOutputError,
    autocast_context,
    from_images,
    randn,
    to_images,
    vae_decode,
    vae_encode,
)
from pe_lightning.apis.diffusers.loading import (
    DTYPES,
    SCHEDULERS,
    download_hint,
    load_first,
    load_kwargs,
    load_pretrained,
    make_scheduler,
)
from pe_lightning.apis.diffusers.sdedit import check_strength, sdedit_sample
from pe_lightning.images import check_images
from pe_lightning.validation import check_int as check_positive_int
from pe_lightning.validation import is_int, is_number

# The loading, image/VAE and SDEdit helpers live in loading.py, images.py and sdedit.py;
# they are re-exported here, where the diffusers APIs have always imported them from.
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


# ---------------------------------------------------------------------------- validation helpers


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
        return load_kwargs(torch_dtype=self.torch_dtype, local_files_only=self.local_files_only)

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

    def check_variation_degree(self, degree: float) -> float:
        """The SDEdit strength in ``(0, 1]`` with ``int(K * degree) >= 1`` for the ``K`` steps of :meth:`_strength_steps`."""
        return check_strength(degree, self._strength_steps())

    def _strength_steps(self) -> int:
        """``K``, the denoising steps a strength of 1 runs (:func:`check_strength`)."""
        return self.num_inference_steps

    def check_ready(self, call: str) -> None:
        """Raise ``RuntimeError`` unless :meth:`setup` loaded the weights ``call`` needs (:meth:`_loaded`)."""
        if not self._loaded(call):
            raise RuntimeError(f"{type(self).__name__}: call setup(device=...) before random/variation (it loads the weights)")

    @abstractmethod
    def _loaded(self, call: str) -> bool:
        """Whether the weights ``call`` (``"random"`` or ``"variation"``) needs are loaded (:meth:`setup`)."""

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` is a strength in ``(0, 1]`` with ``int(K * degree) >= 1``."""
        check_strength(degree, self.num_inference_steps)

    def check_variation_images(self, images: np.ndarray) -> np.ndarray:
        """VARIATION's input images, checked to be uint8 ``(N, *image_shape)`` (C-contiguous)."""
        return check_images(images, name="images", shape=self.image_shape)

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
