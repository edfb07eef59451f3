"""DiffusionUNetAPI: any diffusers ``UNet2DModel`` (pixel-space DDPM/DDIM) as a PE API.

RANDOM samples from noise with the model's scheduler; VARIATION is SDEdit in pixel space
(strength = degree). The shared conventions (loading, validation, batching, autocast, the
NaN check) are those of :class:`~pe_lightning.apis.diffusers.base.DiffusersAPI`.
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
    check_positive_int,
    draw_classes,
    from_images,
    is_int,
    is_number,
    load_first,
    make_scheduler,
    sdedit_sample,
)

__all__ = ["DiffusionUNetAPI"]


class DiffusionUNetAPI(DiffusersAPI):
    """Any diffusers ``UNet2DModel`` (pixel space) with a DDPM/DDIM-family scheduler.

    RANDOM samples from noise; VARIATION is SDEdit with the degree as strength (see
    :mod:`pe_lightning.apis.diffusers.base`). Unconditional models ignore the private labels
    (PE votes per class); class-conditional models (``class_conditional=True``,
    ``class_labels`` passed to the UNet) get one model class per sample, kept in the API
    condition ``"model_class"`` (int64) so that each sample keeps its class through its
    variations.

    Example (YAML)::

        api:
          class_path: pe_lightning.apis.DiffusionUNetAPI
          init_args: {model: google/ddpm-cifar10-32, scheduler: ddim}

    Args:
        model: Hub id or local folder holding the UNet (and usually its scheduler config).
        subfolder: folder of the UNet inside ``model``: ``"auto"`` (the default) tries
            ``unet/`` (the pipeline layout written by ``DDPMPipeline.save_pretrained``) and
            then the root (the layout of e.g. ``google/ddpm-cifar10-32``); a folder name, or
            ``None`` for the root, is passed to ``from_pretrained`` as it is. A model found
            nowhere is an ``OSError`` listing the paths (and weight variants) tried.
        scheduler_subfolder: folder of ``scheduler_config.json`` inside ``model``, the same
            way (``"auto"``: ``scheduler/``, then the root). Its config (betas, number of
            training steps, ...) is reused.
        scheduler: scheduler class to sample with, a key of :data:`SCHEDULERS`
            (``"ddim"``, ``"ddpm"``, ``"dpmsolver"``, ...), built from the loaded config.
        scheduler_kwargs: config entries overriding the loaded ones.
        num_inference_steps: ``K`` (see :class:`DiffusersAPI`).
        eta: DDIM eta (0: deterministic DDIM steps).
        class_conditional: pass ``class_labels`` to the UNet.
        num_classes: number of model classes; defaults to the UNet's ``num_class_embeds``.
        class_map: ``None`` (private class ``c`` -> model class ``c``) or one list of model
            classes per private class, drawn uniformly by RANDOM.
        revision, torch_dtype, autocast, local_files_only, image_size, channels, batch_size, variant:
            see :class:`DiffusersAPI`.
    """

    def __init__(
        self,
        *,
        model: str,
        subfolder: str | None = "auto",
        scheduler_subfolder: str | None = "auto",
        scheduler: str = "ddim",
        scheduler_kwargs: dict[str, Any] | None = None,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        class_conditional: bool = False,
        num_classes: int | None = None,
        class_map: list[list[int]] | None = None,
        revision: str | None = None,
        torch_dtype: str = "float32",
        autocast: str | None = "float16",
        local_files_only: bool = False,
        image_size: int | tuple[int, int] = 32,
        channels: int = 3,
        batch_size: int = 256,
        variant: str | None = "auto",
    ) -> None:
        super().__init__(
            model=model, revision=revision, torch_dtype=torch_dtype, autocast=autocast,
            local_files_only=local_files_only, num_inference_steps=num_inference_steps,
            image_size=image_size, channels=channels, batch_size=batch_size, variant=variant,
        )
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
        if scheduler_kwargs is not None and not isinstance(scheduler_kwargs, dict):
            raise ValueError(f"scheduler_kwargs must be None or a dict, got {scheduler_kwargs!r}")
        for field_name, value in (("subfolder", subfolder), ("scheduler_subfolder", scheduler_subfolder)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{field_name} must be None or a folder name, got {value!r}")
        if not is_number(eta) or not (0.0 <= float(eta) <= 1.0):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if not isinstance(class_conditional, bool):
            raise ValueError(f"class_conditional must be a bool, got {class_conditional!r}")
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        self.class_map = check_class_subsets("class_map", class_map)
        if self.class_map is not None and not class_conditional:
            raise ValueError("class_map is only used with class_conditional=True")
        self.subfolder = subfolder or None
        self.scheduler_subfolder = scheduler_subfolder or None
        self.scheduler_name = scheduler
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.eta = float(eta)
        self.class_conditional = class_conditional
        self.num_classes = num_classes
        self._unet: Any = None
        self._scheduler: Any = None
        self._loaded_key: tuple | None = None

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load the UNet and scheduler config (once) and move the UNet to ``device``.

        Raises:
            OSError / FileNotFoundError: the model is not available (see :func:`~pe_lightning.apis.diffusers.base.load_pretrained`).
            ValueError: the model is not class-conditional but ``class_conditional=True``,
                or ``class_map`` does not match ``class_names`` / ``num_classes``.
        """
        self._setup_common(device, class_names)
        key = (self.model, self.subfolder, self.scheduler_subfolder, self.revision, self.torch_dtype, self.variant)
        if self._loaded_key != key:
            from diffusers import DDPMScheduler, UNet2DModel

            what = f"DiffusionUNetAPI(model={self.model!r}, subfolder={self.subfolder!r})"
            unet, _ = load_first(
                UNet2DModel.from_pretrained, self.model, what=what + " UNet", revision=self.revision,
                attempts=self._load_attempts(self._layouts(self.subfolder, "unet")), **self._load_kwargs(),
            )
            config_kwargs = {"local_files_only": True} if self.local_files_only else {}
            config, _ = load_first(
                DDPMScheduler.load_config, self.model, what=what + " scheduler config", revision=self.revision,
                attempts=self._layouts(self.scheduler_subfolder, "scheduler"), **config_kwargs,
            )
            base = DDPMScheduler.from_config(config)
            self._scheduler = make_scheduler(self.scheduler_name, base, kwargs=self.scheduler_kwargs)
            self._unet = unet.eval().requires_grad_(False)
            self._loaded_key = key
        self._unet.to(self.device)
        cfg = self._unet.config
        embeds = cfg.get("num_class_embeds")
        if self.class_conditional:
            if embeds is None and cfg.get("class_embed_type") is None:
                raise ValueError(
                    f"class_conditional=True but the UNet of {self.model!r} has no class embedding (num_class_embeds is None)"
                )
            limit = self.num_classes or embeds
            if self.class_map is not None:
                if self.class_names is not None and len(self.class_map) != len(self.class_names):
                    raise ValueError(
                        f"class_map has {len(self.class_map)} lists but there are {len(self.class_names)} private classes"
                    )
                bad = [k for s in self.class_map for k in s if limit is not None and k >= limit]
                if bad:
                    raise ValueError(f"class_map contains model classes {bad[:5]} outside [0, {limit})")
            elif limit is not None and self.class_names is not None and len(self.class_names) > limit:
                raise ValueError(
                    f"class_conditional=True maps private class c to model class c, but there are "
                    f"{len(self.class_names)} private classes and the model has {limit}; give class_map"
                )
        size = cfg.sample_size
        self._model_size = (size, size) if is_int(size) else (int(size[0]), int(size[1]))
        self._model_channels = int(cfg.in_channels)

    def _layouts(self, subfolder: str | None, usual: str) -> list[tuple[str, dict[str, Any]]]:
        """Where to look for a component: ``usual/`` then the root for ``"auto"``, else just ``subfolder``."""
        folders = [usual, None] if subfolder == "auto" else [subfolder]
        return [(f"{self.model}/{f}" if f else f"{self.model} (root)", {"subfolder": f}) for f in folders]

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: sample ``len(labels)`` images from noise.

        Args:
            labels: int64 ``(N,)`` private class of each sample (used by class-conditional models).
            generator: the only source of randomness.

        Returns:
            uint8 ``(N, H, W, channels)`` images at ``image_size``; conditions
            ``{"model_class": int64 (N,)}`` for class-conditional models, else empty.
        """
        classes = draw_classes(labels, self.class_map, generator, field="class_map") if self.class_conditional else None
        return self._run(labels.shape[0], classes, None, 1.0, generator)

    def _loaded(self, call: str) -> bool:
        return self._unet is not None

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """SDEdit each image (:meth:`ImageAPI.variation` checked the arguments; ``degree`` is the strength).

        ``conditions`` holds ``{"model_class": int64 (N,)}`` for class-conditional models
        (missing: derived from the labels as RANDOM would with the identity map).
        """
        classes = None
        if self.class_conditional:
            if "model_class" in conditions:
                classes = np.asarray(conditions["model_class"])
                if classes.shape != labels.shape or (classes.size and not np.issubdtype(classes.dtype, np.integer)):
                    raise ValueError(f"conditions['model_class'] must be an int array of shape {labels.shape}, got {classes.shape}")
                classes = classes.astype(np.int64)
            elif self.class_map is None:
                classes = labels.copy()
            else:
                raise ValueError("conditions['model_class'] is missing (class_conditional=True with a class_map)")
        return self._run(images.shape[0], classes, images, degree, generator)

    @torch.no_grad()
    def _run(self, n: int, classes: np.ndarray | None, images: np.ndarray | None, strength: float,
             generator: torch.Generator) -> APIOutput:
        out = np.empty((n, *self.image_shape), np.uint8)
        c = self._model_channels
        unet = self._unet
        for sl in self._batches(n):
            m = sl.stop - sl.start
            class_t = None if classes is None else torch.from_numpy(classes[sl]).to(self.device)

            def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                with self._autocast():
                    pred = unet(x.to(unet.dtype), t, class_labels=class_t).sample.float()
                variance_type = self._scheduler.config.get("variance_type")
                if pred.shape[1] == 2 * c and variance_type not in ("learned", "learned_range"):
                    pred = pred[:, :c]  # drop a learned variance the scheduler does not use
                return pred

            init = None
            if images is not None:
                init = from_images(images[sl], size=self._model_size, channels=c, device=self.device)
            x = sdedit_sample(
                scheduler=self._scheduler, model_fn=model_fn, shape=(m, c, *self._model_size),
                num_inference_steps=self.num_inference_steps, generator=generator, device=self.device,
                init=init, strength=strength, eta=self.eta,
            )
            out[sl] = self._to_images(x, call="random" if images is None else "variation", batch=sl, n=n)
        conditions = {} if classes is None else {"model_class": classes.astype(np.int64)}
        return APIOutput(images=out, conditions=conditions)
