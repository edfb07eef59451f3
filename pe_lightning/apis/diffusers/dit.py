"""DiT: ImageNet class-conditional latent diffusion transformer (Peebles & Xie, 2023) through diffusers.

The model is loaded as diffusers' ``DiTPipeline`` loads it (a ``DiTTransformer2DModel``, an
``AutoencoderKL`` and a scheduler), e.g. ``facebook/DiT-XL-2-256`` (256 x 256 images from
32 x 32 x 4 latents). The sampling loop is DiTPipeline's, written out so that it can also
start part of the way (SDEdit):

* classifier-free guidance runs the transformer on the conditional and the null class
  (index ``num_embeds_ada_norm``, 1000 for ImageNet) and mixes the two epsilons with
  ``guidance_scale`` (no guidance when ``guidance_scale <= 1``);
* a transformer with a learned sigma (``out_channels == 2 * in_channels``) has its sigma
  half dropped, as DiTPipeline does.

RANDOM draws one ImageNet class per sample (uniformly over all classes, or over a configured
subset per private class) and keeps it in the API condition ``"imagenet_class"``; every
variation of a sample keeps its class. VARIATION is SDEdit in latent space: the image is
upsampled to the model resolution, encoded by the VAE (posterior mean, times the VAE's
``scaling_factor``), noised to the strength's timestep and denoised, then decoded and
downsampled to the private resolution. The VAE runs in sub-batches of ``vae_batch_size``
images, and the same parents (PE's ``lookahead_degree`` variations of one chunk) are
encoded once.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput
from pe_lightning.apis.diffusers.base import (
    SCHEDULERS,
    DiffusersAPI,
    check_class_subsets,
    check_guidance,
    check_positive_int,
    load_first,
    make_scheduler,
    sdedit_sample,
    vae_decode,
    vae_encode,
)
from pe_lightning.apis.imagenet_classes import check_class_subsets_fit, draw_imagenet_classes, imagenet_class_condition

__all__ = ["DiTAPI"]


class DiTAPI(DiffusersAPI):
    """ImageNet class-conditional DiT as a PE API (RANDOM: sample; VARIATION: latent SDEdit).

    Example (YAML)::

        api:
          class_path: pe_lightning.apis.DiTAPI
          init_args: {model: facebook/DiT-XL-2-256, image_size: 32, num_inference_steps: 25, guidance_scale: 1.5}

    Args:
        model: Hub id or local folder in DiTPipeline's layout (``transformer/``, ``vae/``,
            ``scheduler/``, ``model_index.json``).
        scheduler: ``None`` keeps the model's scheduler (DDIM for ``facebook/DiT-*``), or a
            key of :data:`~pe_lightning.apis.diffusers.base.SCHEDULERS` built from its config.
        scheduler_kwargs: scheduler config entries to override.
        num_inference_steps: ``K``; a variation of strength ``s`` runs ``int(K * s)`` steps.
        guidance_scale: classifier-free guidance scale (DiTPipeline's default is 4.0; the
            DiT paper's best FID used 1.5), or one scale per PE iteration (index 0: the
            initial RANDOM call; picked by :meth:`set_iteration`).
        imagenet_classes: ``None`` (uniform over all classes) or one list of ImageNet class
            ids per private class; RANDOM draws uniformly within the list of each sample's
            private class.
        eta: DDIM eta (0: deterministic DDIM steps).
        vae_batch_size: images per VAE encoder/decoder pass (at 256 px each image holds
            about 0.3 GB of float16 decoder activations; the default keeps it near 2.5 GB).
        revision, torch_dtype, autocast, local_files_only, image_size, channels, batch_size, variant:
            see :class:`~pe_lightning.apis.diffusers.base.DiffusersAPI`.
    """

    def __init__(
        self,
        *,
        model: str = "facebook/DiT-XL-2-256",
        scheduler: str | None = None,
        scheduler_kwargs: dict[str, Any] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float | list[float] = 4.0,
        imagenet_classes: list[list[int]] | None = None,
        eta: float = 0.0,
        revision: str | None = None,
        torch_dtype: str = "float32",
        autocast: str | None = "float16",
        local_files_only: bool = False,
        image_size: int | tuple[int, int] = 32,
        channels: int = 3,
        batch_size: int = 64,
        vae_batch_size: int = 8,
        variant: str | None = "auto",
    ) -> None:
        super().__init__(
            model=model, revision=revision, torch_dtype=torch_dtype, autocast=autocast,
            local_files_only=local_files_only, num_inference_steps=num_inference_steps,
            image_size=image_size, channels=channels, batch_size=batch_size, variant=variant,
        )
        self.vae_batch_size = check_positive_int("vae_batch_size", vae_batch_size)
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be None (the model's own) or one of {sorted(SCHEDULERS)}, got {scheduler!r}")
        if scheduler_kwargs is not None and not isinstance(scheduler_kwargs, dict):
            raise ValueError(f"scheduler_kwargs must be None or a dict, got {scheduler_kwargs!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        self.scheduler_name = scheduler
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.guidance_scale = check_guidance(guidance_scale)
        self.imagenet_classes = check_class_subsets("imagenet_classes", imagenet_classes)
        self.eta = float(eta)
        self._transformer: Any = None
        self._vae: Any = None
        self._scheduler: Any = None
        self._loaded_key: tuple | None = None

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load the transformer, VAE and scheduler (once) and move them to ``device``.

        Raises:
            OSError / FileNotFoundError: the model is not available (the message names it
                and says how to pre-download it).
            ValueError: ``imagenet_classes`` does not have one list per private class, or
                holds class ids outside the model's classes.
        """
        self._setup_common(device, class_names)
        key = (self.model, self.revision, self.torch_dtype, self.variant, self.scheduler_name,
               tuple(sorted(self.scheduler_kwargs.items())))
        if self._loaded_key != key:
            from diffusers import DiTPipeline

            pipe, _ = load_first(
                DiTPipeline.from_pretrained, self.model, what=f"DiTAPI(model={self.model!r})", revision=self.revision,
                attempts=self._load_attempts(), **self._load_kwargs(),
            )
            self._transformer = pipe.transformer.eval().requires_grad_(False)
            self._vae = pipe.vae.eval().requires_grad_(False)
            self._scheduler = make_scheduler(self.scheduler_name, pipe.scheduler, kwargs=self.scheduler_kwargs)
            self._loaded_key = key
        self._transformer.to(self.device)
        self._vae.to(self.device)
        tcfg = self._transformer.config
        self.num_imagenet_classes = int(tcfg.num_embeds_ada_norm)
        self._latent_channels = int(tcfg.in_channels)
        self._latent_size = int(tcfg.sample_size)
        self._vae_scale = 2 ** (len(self._vae.config.block_out_channels) - 1)
        self._model_size = (self._latent_size * self._vae_scale,) * 2
        check_class_subsets_fit(self.imagenet_classes, class_names=self.class_names, num_classes=self.num_imagenet_classes)

    # ------------------------------------------------------------------ APIs

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: draw an ImageNet class per sample and sample an image of it from noise.

        Args:
            labels: int64 ``(N,)`` private class of each sample (selects its
                ``imagenet_classes`` list, if configured).
            generator: the only source of randomness.

        Returns:
            uint8 ``(N, H, W, channels)`` images at ``image_size`` and
            ``{"imagenet_class": int64 (N,)}``.
        """
        classes = draw_imagenet_classes(labels, subsets=self.imagenet_classes, num_classes=self.num_imagenet_classes,
                                        generator=generator)
        return self._run(classes, None, 1.0, generator)

    def _loaded(self, call: str) -> bool:
        return self._transformer is not None

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """Latent SDEdit of each image, same ImageNet class (:meth:`ImageAPI.variation` checked the arguments; ``degree`` is the strength).

        ``conditions`` must hold ``"imagenet_class"``, int ``(N,)`` (as returned by RANDOM);
        they come back unchanged.
        """
        classes = imagenet_class_condition(conditions, shape=labels.shape, num_classes=self.num_imagenet_classes, api="DiTAPI")
        return self._run(classes, images, degree, generator)

    # ------------------------------------------------------------------ internals

    @torch.no_grad()
    def _run(self, classes: np.ndarray, images: np.ndarray | None, strength: float, generator: torch.Generator) -> APIOutput:
        n = classes.shape[0]
        out = np.empty((n, *self.image_shape), np.uint8)
        transformer, vae = self._transformer, self._vae
        c = self._latent_channels
        guidance = self.current_guidance_scale()
        init_all = self._encoded_once(images, self._encode) if images is not None and n else None
        null_class = self.num_imagenet_classes
        for sl in self._batches(n):
            m = sl.stop - sl.start
            cls = torch.from_numpy(classes[sl]).to(self.device)
            # classifier-free guidance: the conditional half, then the null-class half
            labels_in = torch.cat([cls, torch.full_like(cls, null_class)]) if guidance > 1 else cls

            def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                x_in = torch.cat([x, x]) if guidance > 1 else x
                ts = t.reshape(1).to(self.device).expand(x_in.shape[0])
                with self._autocast():
                    pred = transformer(x_in.to(transformer.dtype), timestep=ts, class_labels=labels_in).sample.float()
                eps = pred[:, :c]  # a learned sigma (out_channels == 2 * in_channels) is dropped, as in DiTPipeline
                if guidance > 1:
                    cond, uncond = eps.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                return eps

            latents = sdedit_sample(
                scheduler=self._scheduler, model_fn=model_fn, shape=(m, c, self._latent_size, self._latent_size),
                num_inference_steps=self.num_inference_steps, generator=generator, device=self.device,
                init=None if init_all is None else init_all[sl].to(self.device), strength=strength, eta=self.eta,
            )
            decoded = vae_decode(vae, latents, batch_size=self.vae_batch_size, autocast=self._autocast)
            out[sl] = self._to_images(decoded, call="random" if images is None else "variation", batch=sl, n=n)
        return APIOutput(images=out, conditions={"imagenet_class": classes.astype(np.int64)})

    def _encode(self, images: np.ndarray) -> torch.Tensor:
        """Scaled VAE latents (float32, on the CPU) of uint8 images, ``vae_batch_size`` at a time."""
        return vae_encode(self._vae, images, size=self._model_size, device=self.device, batch_size=self.vae_batch_size,
                          autocast=self._autocast)
