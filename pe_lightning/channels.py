"""The one check that an API and the private data agree on the images' channel count."""

from __future__ import annotations

from typing import Any

__all__ = ["check_channels"]

_KIND = {1: "grayscale", 3: "RGB"}


def check_channels(*, api: Any, data: Any) -> None:
    """Refuse an API that makes images with another channel count than the private ones (before any spend).

    Args:
        api: the :class:`~pe_lightning.apis.ImageAPI` (its ``channels``, when it has one).
        data: the set-up private data module (``private_images``: uint8 ``(N, H, W, C)``).

    Raises:
        ValueError: the counts differ; the message names both fields to change.
    """
    made, private = getattr(api, "channels", None), int(data.private_images.shape[-1])
    if made is not None and int(made) != private:
        raise ValueError(
            f"the private images have {private} channel(s) ({_KIND.get(private, '?')}) but {type(api).__name__} makes "
            f"{made}-channel images: set the API's channels to {private} (model.init_args.api.init_args.channels) or "
            f"the data module's channels to {made} (data.init_args.channels)"
        )
