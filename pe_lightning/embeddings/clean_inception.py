"""FID Inception-v3 features with clean-fid's preprocessing: the PE paper's embedding and FID protocol.

The paper's code (microsoft/DPSDA) embeds images for voting, and computes FID, with clean-fid
in its "clean" mode: each uint8 image is first resized to the private resolution
(``resolution``; PIL bicubic, rounded to uint8), then to 299 x 299 with PIL bicubic on floats
(no quantisation), and fed as ``(x - 128) / 128`` to the 2015-12-05 TensorFlow Inception-v3
graph. :class:`~pe_lightning.embeddings.InceptionEmbedding` instead resizes with TF1's
bilinear filter inside the network (torch-fidelity's "inception-v3-compat"), so nearest
neighbours and FID values differ between the two.

The network is torch-fidelity's port of that same 2015-12-05 graph, with the same weights file
as ``InceptionEmbedding`` (clean-fid itself loads NVIDIA's TorchScript export of the graph,
``inception-2015-12-05.pt``; the two ports are of the same weights, their features are not
compared here). The resize is :func:`pe_lightning.metrics.clean_resize.clean_resize`.
"""

from __future__ import annotations

import torch

from pe_lightning.embeddings.inception import InceptionEmbedding
from pe_lightning.metrics.clean_resize import CLEAN_SIZE, clean_resize, resize_uint8

__all__ = ["CleanInceptionEmbedding", "inception_pool_features"]

#: torch-fidelity's FeatureExtractorInceptionV3 layers from the 299 px input to the 2048-d pool, in order.
_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)


def inception_pool_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """2048-d pool features of float images already at 299 x 299.

    torch-fidelity's ``forward`` takes only uint8 input and resizes it itself; this runs the
    same layers from the normalisation on, so clean-fid's unquantised floats go in as they are.

    Args:
        net: a torch-fidelity ``FeatureExtractorInceptionV3``.
        x: float ``(B, 3, 299, 299)`` with values in ``[0, 255]``.

    Returns:
        float32 ``(B, 2048)`` on ``x``'s device.
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, CLEAN_SIZE, CLEAN_SIZE) or not x.is_floating_point():
        raise ValueError(f"expected float images of shape (B, 3, {CLEAN_SIZE}, {CLEAN_SIZE}), got {x.dtype} {tuple(x.shape)}")
    x = (x - 128) / 128
    for name in _LAYERS:
        x = getattr(net, name)(x)
    return torch.flatten(x, 1).to(torch.float32)


class CleanInceptionEmbedding(InceptionEmbedding):
    """2048-d FID Inception-v3 pool features of uint8 images, preprocessed as clean-fid and DPSDA do.

    Per image: resize to ``resolution x resolution`` (PIL bicubic, rounded to uint8; skipped
    when the image already has that size or ``resolution`` is None), then to 299 x 299 (PIL
    bicubic on floats, clipped, not quantised), then the Inception network. With the
    population kept at the model's resolution (64 px) and ``resolution`` at the private one
    (32 px for CIFAR-10), synthetic and private images are compared at the same resolution,
    as in the paper's code (its ``Inception(res=...)`` embedding, ``compute_fid(dataset_res=...)``).

    Weights: as :class:`~pe_lightning.embeddings.InceptionEmbedding` (the same file).

    Args:
        resolution: the private image size in pixels, or None to skip the first resize.
        weights_path: local copy of the Inception weights (see ``InceptionEmbedding``).
        max_batch_size: most images per forward pass (about 14 MB of activations each).
    """

    def __init__(self, *, resolution: int | None = None, weights_path: str | None = None, max_batch_size: int = 256) -> None:
        if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1):
            raise ValueError(f"resolution must be None or an int >= 1 (pixels), got {resolution!r}")
        super().__init__(weights_path=weights_path, max_batch_size=max_batch_size)
        self.resolution = resolution

    def config(self) -> dict:
        return {**super().config(), "preprocessing": "clean-fid", "resolution": self.resolution}

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` on the device -> float32 ``(B, 2048)``: resize to ``resolution``, clean resize, network."""
        if self.resolution is not None:
            batch = resize_uint8(batch, size=self.resolution)
        return inception_pool_features(self._net, clean_resize(batch))
