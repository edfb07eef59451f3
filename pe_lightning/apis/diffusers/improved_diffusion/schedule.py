"""improved-diffusion's noise schedules, timestep respacing and DDIM sampling (with an SDEdit start).

Facts from Nichol & Dhariwal (2021) and github.com/openai/improved-diffusion
(``gaussian_diffusion.py``, ``respace.py``), implemented here:

* **Betas.** ``linear``: ``linspace(1e-4 * s, 0.02 * s, T)`` with ``s = 1000 / T``;
  ``cosine``: ``beta_t = min(1 - abar((t + 1) / T) / abar(t / T), 0.999)`` with
  ``abar(u) = cos((u + 0.008) / 1.008 * pi / 2) ** 2``. Everything is float64.
* **Respacing** (``timestep_respacing``) keeps a subset of the ``T`` training timesteps:
  ``"ddimN"`` takes ``range(0, T, stride)`` for the integer stride that gives exactly ``N``
  steps; ``"N"`` or ``"N1,N2,..."`` splits ``[0, T)`` into equal sections (the first
  ``T % len`` one step longer) and takes ``Ni`` evenly spaced (rounded) steps in section
  ``i``. A respaced step keeps the original cumulative ``alpha_bar`` of its timestep, and the
  model is called with the original timestep (times ``1000 / T`` if ``rescale_timesteps``).
* **DDIM** (eta = 0: deterministic): at respaced step ``i`` with ``abar = abar_i`` and
  ``abar_prev = abar_{i-1}`` (1 for ``i = 0``), ``x0 = clip((x - sqrt(1 - abar) eps) /
  sqrt(abar), -1, 1)``, the noise is re-derived from the clipped ``x0`` and
  ``x <- sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
  ``sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)``.
* **SDEdit start** (the reference PE implementation's ``start_t``): with ``R`` respaced steps
  and strength ``s``, ``k = int(R * s)`` steps run: the image is noised with ``q(x_t | x_0)``
  to respaced step ``k - 1`` and denoised from there. Strength 1 still starts from the noised
  image (``abar`` of the last step is small but not zero), as the reference does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from pe_lightning.apis.diffusers.base import randn

__all__ = ["NOISE_SCHEDULES", "RespacedSchedule", "ddim_sample", "named_betas", "parse_respacing", "space_timesteps"]

#: Noise schedule names of improved-diffusion.
NOISE_SCHEDULES = ("linear", "cosine")


def named_betas(name: str, num_timesteps: int) -> np.ndarray:
    """float64 ``(num_timesteps,)`` betas of improved-diffusion's ``linear`` or ``cosine`` schedule.

    Raises:
        ValueError: unknown ``name`` or ``num_timesteps < 1``.
    """
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise ValueError(f"diffusion_steps must be an int >= 1, got {num_timesteps!r}")
    if name == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), 0.999) for i in range(num_timesteps)],
            dtype=np.float64,
        )
    raise ValueError(f"noise_schedule must be one of {list(NOISE_SCHEDULES)}, got {name!r}")


def parse_respacing(spec: str | int) -> str:
    """Normalise a ``timestep_respacing`` entry (``"ddim10"``, ``"100"``, ``"10,15,20"`` or an int).

    Raises:
        ValueError: not one of those forms (the message names the field).
    """
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        spec = str(int(spec))
    if not isinstance(spec, str):
        raise ValueError(f"timestep_respacing entries must be strings like 'ddim10', '100' or '10,15,20', got {spec!r}")
    text = spec.strip()
    body = text[4:] if text.startswith("ddim") else text
    parts = body.split(",") if not text.startswith("ddim") else [body]
    if not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(
            f"timestep_respacing entry {spec!r} must be 'ddimN' (N >= 1) or section counts like '100' or '10,15,20'"
        )
    return text


def space_timesteps(num_timesteps: int, spec: str | int) -> list[int]:
    """The training timesteps kept by a respacing, ascending.

    Args:
        num_timesteps: ``T``, training timesteps of the model.
        spec: see :func:`parse_respacing`.

    Returns:
        Sorted distinct timesteps in ``[0, T)``.

    Raises:
        ValueError: the respacing cannot be made from ``T`` steps (the message says why).
    """
    text = parse_respacing(spec)
    if text.startswith("ddim"):
        count = int(text[4:])
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise ValueError(
            f"timestep_respacing {spec!r}: no integer stride gives exactly {count} of {num_timesteps} timesteps"
        )
    counts = [int(p) for p in text.split(",")]
    size, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if length < count:
            raise ValueError(f"timestep_respacing {spec!r}: cannot take {count} steps from a section of {length}")
        stride = 1.0 if count <= 1 else (length - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += length
    return sorted(set(kept))


@dataclass(frozen=True)
class RespacedSchedule:
    """A respaced diffusion: the kept timesteps and their cumulative alphas.

    Attributes:
        timesteps: int64 ``(R,)`` kept training timesteps, ascending.
        alphas_cumprod: float64 ``(R,)`` ``alpha_bar`` of each kept timestep.
        model_timesteps: float64 ``(R,)`` the timestep values fed to the model.
    """

    timesteps: np.ndarray
    alphas_cumprod: np.ndarray
    model_timesteps: np.ndarray

    @classmethod
    def create(cls, *, betas: np.ndarray, respacing: str | int, rescale_timesteps: bool) -> "RespacedSchedule":
        """Respace the diffusion with ``betas`` (float64 ``(T,)``); see the module docstring."""
        num_timesteps = len(betas)
        kept = np.asarray(space_timesteps(num_timesteps, respacing), dtype=np.int64)
        abar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))[kept]
        scale = 1000.0 / num_timesteps if rescale_timesteps else 1.0
        return cls(timesteps=kept, alphas_cumprod=abar, model_timesteps=kept.astype(np.float64) * scale)

    @property
    def num_steps(self) -> int:
        """``R``, the number of respaced steps."""
        return int(self.timesteps.shape[0])


def ddim_sample(
    *,
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: RespacedSchedule,
    shape: Sequence[int],
    generator: torch.Generator,
    device: torch.device,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    eta: float = 0.0,
    clip_denoised: bool = True,
) -> torch.Tensor:
    """DDIM over a respaced schedule, from noise (``init=None``) or from ``init`` noised to ``strength``.

    Args:
        eps_fn: ``(x, t) -> eps``: float32 ``shape`` noise prediction for float32 ``x`` at
            model timestep ``t`` (a float32 ``(N,)`` tensor on ``device``).
        schedule: the respaced schedule.
        shape: ``(N, C, H, W)``.
        generator: the only randomness (initial noise; per-step noise when ``eta > 0``), drawn
            on its own device in float32.
        device: where sampling runs.
        init: float32 ``shape`` clean images in ``[-1, 1]``, or ``None``.
        strength: in ``(0, 1]``; ``int(R * strength)`` steps run (all ``R`` without ``init``).
        eta: DDIM eta in ``[0, 1]``.
        clip_denoised: clip each predicted ``x0`` to ``[-1, 1]``.

    Returns:
        float32 ``shape`` samples, nominally in ``[-1, 1]``.
    """
    steps = schedule.num_steps
    k = steps if init is None else min(int(steps * strength), steps)
    if k < 1:  # validate_degree prevents this; a guard for direct callers
        raise ValueError(f"strength {strength} leaves no denoising step with {steps} respaced steps")
    abar = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float64)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    x = randn(shape, generator, device)
    if init is not None:
        a = float(abar[k - 1])
        x = math.sqrt(a) * init.float() + math.sqrt(1.0 - a) * x
    n = shape[0]
    for i in range(k - 1, -1, -1):
        a, a_prev = float(abar[i]), float(abar_prev[i])
        t = torch.full((n,), float(schedule.model_timesteps[i]), dtype=torch.float32, device=device)
        eps = eps_fn(x, t).float()
        x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a)) * math.sqrt(1.0 - a / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0 and i > 0:
            x = x + sigma * randn(shape, generator, device)
    return x
