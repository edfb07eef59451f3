"""Loading diffusers models: Hub ids or local folders, weight variants, offline errors, schedulers.

``from_pretrained`` calls go through :func:`load_first`, which tries layouts and weight
variants in turn and, when nothing loads, names the model, every path tried and how to
download it for offline use. diffusers itself is imported on first use.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable, Sequence

import torch

__all__ = ["DTYPES", "SCHEDULERS", "download_hint", "load_first", "load_kwargs", "load_pretrained", "make_scheduler"]

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


def _looks_like_path(model: str) -> bool:
    return os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model) or model.count("/") > 1 or "\\" in model


def _dtype_kwarg() -> str:
    """The ``from_pretrained`` keyword of the weight dtype: ``dtype`` in recent diffusers, ``torch_dtype`` before."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present once torch_dtype was renamed)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def load_kwargs(*, torch_dtype: str, local_files_only: bool) -> dict[str, Any]:
    """The ``from_pretrained`` keywords every diffusers API passes: the weight dtype, offline mode."""
    kwargs: dict[str, Any] = {_dtype_kwarg(): DTYPES[torch_dtype]}
    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # avoids diffusers' "accelerate was not found" warning
    if local_files_only:
        kwargs["local_files_only"] = True
    return kwargs


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
