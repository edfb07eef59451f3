"""Stable Diffusion as a PE API: text-to-image RANDOM, img2img VARIATION (strength = degree).

Both APIs run diffusers' own pipelines: ``StableDiffusionPipeline`` for RANDOM and a
``StableDiffusionImg2ImgPipeline`` built from the same components (one load, shared
weights) for VARIATION, in latent space: the VAE encodes the inputs (posterior mean, once
for all the lookahead variations of the same parents) and decodes the outputs outside the
pipelines, in sub-batches of ``vae_batch_size`` images. The safety checker is not loaded:
it would replace flagged images by black ones, which PE would then vote on; the
checkpoints' licences still apply.

Each private class has one prompt: ``prompts[c]``, or ``prompt_template`` filled with the
class name given to :meth:`StableDiffusionAPI.setup` (``"a photo of a {name}"``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput
from pe_lightning.apis.diffusers.base import (
    SCHEDULERS,
    DiffusersAPI,
    check_guidance,
    check_positive_int,
    is_int,
    load_first,
    make_scheduler,
    randn,
    vae_decode,
    vae_encode,
)

__all__ = ["StableDiffusionAPI"]


class StableDiffusionAPI(DiffusersAPI):
    """Stable Diffusion (v1.x / v2.x ``StableDiffusionPipeline`` checkpoints) as a PE API.

    Example (YAML)::

        api:
          class_path: pe_lightning.apis.StableDiffusionAPI
          init_args: {model: CompVis/stable-diffusion-v1-4, prompts: ["A photo of ragdoll cat"], image_size: 512}

    Args:
        model: Hub id or local folder in StableDiffusionPipeline's layout.
        prompts: one prompt per private class (label order), or ``None`` to fill
            ``prompt_template`` with the class names.
        prompt_template: a ``str.format`` template with ``{name}``, used when ``prompts`` is
            ``None``.
        negative_prompt: one negative prompt for all samples, or ``None``.
        scheduler: ``None`` keeps the checkpoint's scheduler, or a key of
            :data:`~pe_lightning.apis.diffusers.base.SCHEDULERS` built from its config.
        scheduler_kwargs: scheduler config entries to override.
        num_inference_steps: ``K``; img2img with strength ``s`` runs ``int(K * s)`` steps.
        guidance_scale: classifier-free guidance scale, or one scale per PE iteration
            (index 0: the initial RANDOM call; picked by :meth:`set_iteration`).
        eta: DDIM eta (only used by schedulers that take it).
        model_resolution: square resolution the model generates at; ``None`` uses the
            UNet's ``sample_size`` times the VAE factor (512 for v1.x). Must be a multiple of
            the VAE factor (8).
        vae_batch_size: images per VAE encoder/decoder pass (at 512 px each image holds
            about 1 GB of float16 decoder activations).
        revision, torch_dtype, autocast, local_files_only, image_size, channels, batch_size, variant:
            see :class:`~pe_lightning.apis.diffusers.base.DiffusersAPI` (``variant: auto`` loads
            the checkpoint's ``fp16`` files for ``torch_dtype: float16``).
    """

    def __init__(
        self,
        *,
        model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        prompts: list[str] | None = None,
        prompt_template: str = "a photo of a {name}",
        negative_prompt: str | None = None,
        scheduler: str | None = None,
        scheduler_kwargs: dict[str, Any] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float | list[float] = 7.5,
        eta: float = 0.0,
        model_resolution: int | None = None,
        variant: str | None = "auto",
        revision: str | None = None,
        torch_dtype: str = "float32",
        autocast: str | None = "float16",
        local_files_only: bool = False,
        image_size: int | tuple[int, int] = 512,
        channels: int = 3,
        batch_size: int = 8,
        vae_batch_size: int = 4,
    ) -> None:
        super().__init__(
            model=model, revision=revision, torch_dtype=torch_dtype, autocast=autocast,
            local_files_only=local_files_only, num_inference_steps=num_inference_steps,
            image_size=image_size, channels=channels, batch_size=batch_size, variant=variant,
        )
        self.vae_batch_size = check_positive_int("vae_batch_size", vae_batch_size)
        if prompts is not None:
            if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
                raise ValueError(f"prompts must be None or a non-empty list of strings (one per private class), got {prompts!r}")
            if not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"prompts must contain non-blank strings, got {prompts!r}")
            prompts = list(prompts)
        if not isinstance(prompt_template, str) or not prompt_template.strip():
            raise ValueError(f"prompt_template must be a non-blank string, got {prompt_template!r}")
        try:
            prompt_template.format(name="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"prompt_template must be a str.format template whose only field is {{name}}, got {prompt_template!r} ({err!r})"
            ) from None
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be None or a string, got {negative_prompt!r}")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be None (the checkpoint's own) or one of {sorted(SCHEDULERS)}, got {scheduler!r}")
        if scheduler_kwargs is not None and not isinstance(scheduler_kwargs, dict):
            raise ValueError(f"scheduler_kwargs must be None or a dict, got {scheduler_kwargs!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if model_resolution is not None and (not is_int(model_resolution) or model_resolution < 8):
            raise ValueError(f"model_resolution must be None or an int >= 8, got {model_resolution!r}")
        self.prompts = prompts
        self.prompt_template = prompt_template
        self.negative_prompt = negative_prompt
        self.scheduler_name = scheduler
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.guidance_scale = check_guidance(guidance_scale)
        self.eta = float(eta)
        self.model_resolution = model_resolution
        self._txt2img: Any = None
        self._img2img: Any = None
        self._loaded_key: tuple | None = None

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load the pipeline (once), build the img2img pipeline from its components, move to ``device``.

        Args:
            device: where to run.
            class_names: private class names in label order (fill ``prompt_template``).

        Raises:
            OSError / FileNotFoundError: the model is not available (the message names it
                and says how to pre-download it).
            ValueError: ``prompts`` does not have one entry per class, or
                ``model_resolution`` is not a multiple of the VAE factor.
        """
        self._setup_common(device, class_names)
        if self.prompts is not None and self.class_names is not None and len(self.prompts) != len(self.class_names):
            raise ValueError(
                f"prompts has {len(self.prompts)} entries but there are {len(self.class_names)} private classes "
                f"({self.class_names}); give one prompt per class or prompts: null with a prompt_template"
            )
        key = (self.model, self.revision, self.variant, self.torch_dtype, self.scheduler_name,
               tuple(sorted(self.scheduler_kwargs.items())))
        if self._loaded_key != key:
            from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

            pipe, _ = load_first(
                StableDiffusionPipeline.from_pretrained, self.model, what=f"StableDiffusionAPI(model={self.model!r})",
                revision=self.revision, attempts=self._load_attempts(), safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, **self._load_kwargs(),
            )
            if self.scheduler_name is not None or self.scheduler_kwargs:
                pipe.scheduler = make_scheduler(self.scheduler_name, pipe.scheduler, kwargs=self.scheduler_kwargs)
            for module in (pipe.unet, pipe.vae, pipe.text_encoder):
                module.eval().requires_grad_(False)
            img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
            for p in (pipe, img2img):
                p.set_progress_bar_config(disable=True)
            self._txt2img, self._img2img = pipe, img2img
            self._loaded_key = key
        self._txt2img.to(self.device)  # the img2img pipeline shares the modules
        factor = int(self._txt2img.vae_scale_factor)
        resolution = self.model_resolution or int(self._txt2img.unet.config.sample_size) * factor
        if resolution % factor:
            raise ValueError(f"model_resolution must be a multiple of the VAE factor {factor}, got {resolution}")
        self._model_size = (resolution, resolution)
        self._latent_shape = (int(self._txt2img.unet.config.in_channels), resolution // factor, resolution // factor)

    def prompt(self, label: int) -> str:
        """The prompt of private class ``label``."""
        if self.prompts is not None:
            if not 0 <= label < len(self.prompts):
                raise ValueError(f"label {label} has no prompt: prompts has {len(self.prompts)} entries")
            return self.prompts[label]
        if self.class_names is None:
            raise ValueError("StableDiffusionAPI has no prompts: pass prompts=[...] or call setup(class_names=...) first")
        return self.prompt_template.format(name=self.class_names[label])

    def _prompt_kwargs(self, labels: np.ndarray) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": [self.prompt(int(c)) for c in labels],
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.current_guidance_scale(),
            "eta": self.eta,
            "output_type": "latent",  # decoded here, in vae_batch_size sub-batches
        }
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(labels)
        return kwargs

    # ------------------------------------------------------------------ APIs

    @torch.no_grad()
    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: text-to-image with each sample's class prompt.

        Args:
            labels: int64 ``(N,)`` private class of each sample (selects its prompt).
            generator: the only source of randomness (initial latents are drawn from it on
                its device, in float32).

        Returns:
            uint8 ``(N, H, W, channels)`` images at ``image_size``; no conditions.
        """
        n = labels.shape[0]
        out = np.empty((n, *self.image_shape), np.uint8)
        pipe = self._txt2img
        h, w = self._model_size
        for sl in self._batches(n):
            m = sl.stop - sl.start
            latents = randn((m, *self._latent_shape), generator, self.device).to(pipe.unet.dtype)
            with self._autocast():
                latents = pipe(height=h, width=w, latents=latents, generator=generator, **self._prompt_kwargs(labels[sl])).images
            x = vae_decode(pipe.vae, latents, batch_size=self.vae_batch_size, autocast=self._autocast)
            out[sl] = self._to_images(x, call="random", batch=sl, n=n)
        return APIOutput(images=out, conditions={})

    def _loaded(self, call: str) -> bool:
        return (self._txt2img if call == "random" else self._img2img) is not None

    @torch.no_grad()
    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """img2img of each image with its class prompt (:meth:`ImageAPI.variation` checked the arguments; ``degree`` is the strength).

        ``conditions`` are ignored (Stable Diffusion has no per-sample API conditions); the
        label selects the prompt. No conditions come back.
        """
        n = images.shape[0]
        out = np.empty((n, *self.image_shape), np.uint8)
        init = self._encoded_once(images, self._encode) if n else None
        for sl in self._batches(n):
            with self._autocast():  # 4-channel input: the pipeline takes it as (scaled) latents
                latents = self._img2img(
                    image=init[sl].to(self.device), strength=degree, generator=generator,
                    **self._prompt_kwargs(labels[sl]),
                ).images
            x = vae_decode(self._img2img.vae, latents, batch_size=self.vae_batch_size, autocast=self._autocast)
            out[sl] = self._to_images(x, call="variation", batch=sl, n=n)
        return APIOutput(images=out, conditions={})

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        """Scaled VAE latents (float32, on the CPU) of uint8 images, ``vae_batch_size`` at a time."""
        return vae_encode(self._txt2img.vae, images, size=self._model_size, device=self.device, batch_size=self.vae_batch_size,
                          autocast=self._autocast)
