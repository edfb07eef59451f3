""":class:`ImprovedDiffusionAPI`: OpenAI's improved-diffusion (ADM) checkpoints as a PE API.

The PE paper's CIFAR-10 and Camelyon17 results use improved-diffusion's class-conditional
ImageNet 64 x 64 model (``imagenet64_cond_270M_250K.pt``) with DDIM over a respaced
schedule. This API runs that model (or any checkpoint of the same code, see
:mod:`~pe_lightning.apis.diffusers.improved_diffusion.presets`) with the conventions of the diffusers
APIs (:class:`~pe_lightning.apis.diffusers.base.DiffusersAPI`: validation, ``torch.Generator``
noise drawn on the CPU, ``batch_size`` batches, autocast on CUDA, antialiased resizing to the
private resolution):

* RANDOM: DDIM over all ``R`` respaced steps from noise. A class-conditional model gets one
  ImageNet class per sample, uniform over the 1000 classes or over ``imagenet_classes[c]``
  for a sample of private class ``c``, kept in the API condition ``"imagenet_class"``.
* VARIATION: SDEdit with strength ``s`` in ``(0, 1]``: the image (upsampled to the model's
  resolution) is noised to respaced step ``int(R * s) - 1`` and denoised by the remaining
  ``int(R * s)`` DDIM steps, with the sample's own ImageNet class. The reference
  implementation's variation degree ``d`` (steps skipped of ``R``) is strength ``(R - d) / R``.
* A learned-variance model's output (6 channels) is split; DDIM uses the epsilon half.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput
from pe_lightning.apis.diffusers.base import (
    DTYPES,
    DiffusersAPI,
    check_class_subsets as _check_class_subsets,
    is_number as _is_number,
    from_images,
)
from pe_lightning.apis.imagenet_classes import (
    CONDITION,
    check_class_subsets_fit,
    draw_imagenet_classes,
    imagenet_class_condition,
)
from pe_lightning.apis.diffusers.improved_diffusion.presets import PRESETS, config_from
from pe_lightning.apis.diffusers.improved_diffusion.schedule import (
    RespacedSchedule,
    ddim_sample,
    named_betas,
    parse_respacing,
)
from pe_lightning.apis.diffusers.improved_diffusion.weights import load_unet, resolve_checkpoint

__all__ = ["ImprovedDiffusionAPI"]

#: The model's image channels (all improved-diffusion checkpoints are RGB).
MODEL_CHANNELS = 3


class ImprovedDiffusionAPI(DiffusersAPI):
    """An improved-diffusion (ADM) checkpoint as a PE API (RANDOM: DDIM from noise; VARIATION: SDEdit).

    Example (YAML)::

        api:
          class_path: pe_lightning.apis.ImprovedDiffusionAPI
          init_args: {preset: imagenet64_cond_270M, checkpoint: /models/imagenet64_cond_270M_250K.pt,
                      timestep_respacing: "100", image_size: 32}

    Args:
        preset: flags of a published checkpoint (a key of
            :data:`~pe_lightning.apis.diffusers.improved_diffusion.presets.PRESETS`:
            ``imagenet64_cond_270M``, ``imagenet64_uncond_100M``, ``cifar10_uncond_50M``), or
            ``None`` for improved-diffusion's script defaults.
        model_config: flags overriding the preset's (names of
            :class:`~pe_lightning.apis.diffusers.improved_diffusion.presets.ADMConfig`, e.g.
            ``{num_channels: 64}``).
        checkpoint: a path to the ``.pt`` state dict, or a bare file name looked up in the
            current folder and ``<torch.hub.get_dir()>/checkpoints``; ``None``: the preset's
            published file name.
        download: download a published file name that is found nowhere (needs internet).
        timestep_respacing: improved-diffusion's respacing, ``R`` DDIM steps: ``"ddimN"``
            (integer stride), ``"N"`` or ``"N1,N2,..."`` (evenly spaced sections); or one per
            PE iteration (index 0: the initial RANDOM call).
        eta: DDIM eta (0: deterministic steps, as the reference).
        clip_denoised: clip each predicted clean image to ``[-1, 1]`` (the reference does).
        imagenet_classes: ``None`` (uniform over the 1000 classes) or one list of ImageNet
            class ids per private class; class-conditional models only.
        torch_dtype: weight dtype, ``"float32"``, ``"float16"`` or ``"bfloat16"`` (GroupNorm
            always runs in float32).
        autocast: autocast dtype on CUDA (``"float16"``, ``"bfloat16"``) or ``None``.
        image_size: private resolution, ``int`` or ``(height, width)``.
        channels: private channels, 1 or 3.
        batch_size: samples per forward pass.

    Raises:
        ValueError: a bad argument (the message names it).
    """

    def __init__(
        self,
        *,
        preset: str | None = "imagenet64_cond_270M",
        model_config: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        download: bool = False,
        timestep_respacing: str | int | list[str | int] = "100",
        eta: float = 0.0,
        clip_denoised: bool = True,
        imagenet_classes: list[list[int]] | None = None,
        torch_dtype: str = "float32",
        autocast: str | None = "float16",
        image_size: int | tuple[int, int] = 32,
        channels: int = 3,
        batch_size: int = 500,
    ) -> None:
        self.config = config_from(preset, model_config)
        if checkpoint is None:
            if preset is None:
                raise ValueError("checkpoint must be given when preset is None (there is no published file to default to)")
            checkpoint = PRESETS[preset].checkpoint
        respacing = timestep_respacing if isinstance(timestep_respacing, list) else [timestep_respacing]
        if not respacing:
            raise ValueError("timestep_respacing must be a respacing or a non-empty list of them (one per PE iteration), got []")
        self.respacings = [parse_respacing(r) for r in respacing]
        betas = named_betas(self.config.noise_schedule, self.config.diffusion_steps)
        self._schedules = {
            r: RespacedSchedule.create(betas=betas, respacing=r, rescale_timesteps=self.config.rescale_timesteps)
            for r in dict.fromkeys(self.respacings)
        }
        super().__init__(
            model=checkpoint, revision=None, torch_dtype=torch_dtype, autocast=autocast, local_files_only=False,
            # validate_degree checks a strength against the fewest steps of any respacing in the schedule
            num_inference_steps=min(s.num_steps for s in self._schedules.values()),
            image_size=image_size, channels=channels, batch_size=batch_size,
        )
        if not isinstance(download, bool):
            raise ValueError(f"download must be a bool, got {download!r}")
        if not _is_number(eta) or not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if not isinstance(clip_denoised, bool):
            raise ValueError(f"clip_denoised must be a bool, got {clip_denoised!r}")
        self.imagenet_classes = _check_class_subsets("imagenet_classes", imagenet_classes)
        if self.imagenet_classes is not None and not self.config.class_cond:
            raise ValueError("imagenet_classes is only used by a class-conditional model (class_cond: true)")
        if self.config.class_cond:
            check_class_subsets_fit(self.imagenet_classes, class_names=None, num_classes=self.config.num_classes)
        self.preset = preset
        self.checkpoint = checkpoint
        self.download = download
        self.timestep_respacing = timestep_respacing
        self.eta = float(eta)
        self.clip_denoised = clip_denoised
        self._unet: Any = None
        self._loaded_key: tuple | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Load the checkpoint (once) and move the U-Net to ``device`` in ``torch_dtype``.

        Raises:
            FileNotFoundError: the checkpoint is not found (the message names the file,
                where it is published and how to point at a local copy).
            RuntimeError: the file does not match the configured architecture.
            ValueError: ``imagenet_classes`` does not have one list per private class.
        """
        self._setup_common(device, class_names)
        if self.config.class_cond:
            check_class_subsets_fit(self.imagenet_classes, class_names=self.class_names, num_classes=self.config.num_classes)
        key = (self.checkpoint, self.config, self.torch_dtype)
        if self._loaded_key != key:
            path = resolve_checkpoint(self.checkpoint, download=self.download)
            self._unet = load_unet(path, self.config).to(dtype=DTYPES[self.torch_dtype])
            self._loaded_key = key
        self._unet.to(self.device)
        self._model_size = (self.config.image_size, self.config.image_size)

    def set_iteration(self, iteration: int) -> None:
        """Record the PE iteration (0: the initial RANDOM) and check the respacing schedule covers it.

        Raises:
            ValueError: ``timestep_respacing`` is a list with no entry for ``iteration``.
        """
        super().set_iteration(iteration)
        self._current_schedule()

    def _current_schedule(self) -> RespacedSchedule:
        if len(self.respacings) == 1:
            return self._schedules[self.respacings[0]]
        if self.iteration >= len(self.respacings):
            raise ValueError(
                f"ImprovedDiffusionAPI timestep_respacing has {len(self.respacings)} entries (one per PE iteration, "
                f"index 0 = the initial RANDOM call) but iteration {self.iteration} was requested; give at least "
                f"iterations + 1 entries"
            )
        return self._schedules[self.respacings[self.iteration]]

    # ------------------------------------------------------------------ APIs

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: sample ``len(labels)`` images from noise with all respaced DDIM steps.

        Args:
            labels: int64 ``(N,)`` private class of each sample (selects its
                ``imagenet_classes`` list, if configured).
            generator: the only source of randomness.

        Returns:
            uint8 ``(N, H, W, channels)`` images at ``image_size``; ``{"imagenet_class":
            int64 (N,)}`` for a class-conditional model, else no conditions.
        """
        classes = None
        if self.config.class_cond:
            classes = draw_imagenet_classes(labels, subsets=self.imagenet_classes, num_classes=self.config.num_classes,
                                            generator=generator)
        return self._run(labels.shape[0], classes, None, 1.0, generator)

    def _loaded(self, call: str) -> bool:
        return self._unet is not None

    def _strength_steps(self) -> int:
        """``R``, the iteration's respaced steps: ``int(R * degree)`` of them run."""
        return self._current_schedule().num_steps

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """SDEdit of each image, keeping its ImageNet class (:meth:`ImageAPI.variation` checked the arguments; ``degree`` is the strength).

        ``conditions`` hold ``{"imagenet_class": int (N,)}`` (as returned by RANDOM) for a
        class-conditional model, ignored otherwise; they come back unchanged.
        """
        classes = None
        if self.config.class_cond:
            classes = imagenet_class_condition(conditions, shape=labels.shape, num_classes=self.config.num_classes,
                                               api=type(self).__name__)
        return self._run(images.shape[0], classes, images, degree, generator)

    # ------------------------------------------------------------------ internals

    @torch.no_grad()
    def _run(self, n: int, classes: np.ndarray | None, images: np.ndarray | None, strength: float,
             generator: torch.Generator) -> APIOutput:
        out = np.empty((n, *self.image_shape), np.uint8)
        unet, schedule = self._unet, self._current_schedule()
        for sl in self._batches(n):
            y = None if classes is None else torch.from_numpy(classes[sl]).to(self.device)

            def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                with self._autocast():
                    pred = unet(x, t, y).float()
                return pred[:, :MODEL_CHANNELS]  # a learned variance (the second half) is not used by DDIM

            init = None
            if images is not None:
                init = from_images(images[sl], size=self._model_size, channels=MODEL_CHANNELS, device=self.device)
            x = ddim_sample(
                eps_fn=eps_fn, schedule=schedule, shape=(sl.stop - sl.start, MODEL_CHANNELS, *self._model_size),
                generator=generator, device=self.device, init=init, strength=strength, eta=self.eta,
                clip_denoised=self.clip_denoised,
            )
            out[sl] = self._to_images(x, call="random" if images is None else "variation", batch=sl, n=n)
        conditions = {} if classes is None else {CONDITION: classes.astype(np.int64)}
        return APIOutput(images=out, conditions=conditions)

