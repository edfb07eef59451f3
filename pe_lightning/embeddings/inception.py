"""FID Inception-v3 features (2048-d pool3) through ``torch_fidelity``.

This is the network and preprocessing of the standard FID ("inception-v3-compat": the
TensorFlow 2015-12-05 graph ported to PyTorch, TF1-compatible bilinear resize to 299x299,
``(x - 128) / 128``). Weights load lazily in :meth:`InceptionEmbedding.setup`.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from pe_lightning.devices import to_device
from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.pixels import as_uint8_nhwc

__all__ = ["INCEPTION_WEIGHTS_FILENAME", "INCEPTION_WEIGHTS_URL", "InceptionEmbedding"]

#: torch-fidelity's weights file (kept in sync with ``torch_fidelity.feature_extractor_inceptionv3``).
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
#: pytorch-fid's port of the same graph; its state-dict keys match torch-fidelity's network.
PYTORCH_FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"


def _hub_candidates() -> list[str]:
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [os.path.join(folder, name) for name in (INCEPTION_WEIGHTS_FILENAME, PYTORCH_FID_WEIGHTS_FILENAME)]


def _download_hint() -> str:
    return (
        f"Download {INCEPTION_WEIGHTS_FILENAME} from {INCEPTION_WEIGHTS_URL} on a machine with internet and "
        f"either set `weights_path: /path/to/{INCEPTION_WEIGHTS_FILENAME}` on InceptionEmbedding or put it at "
        f"{_hub_candidates()[0]} (torch hub cache; $TORCH_HOME moves it). pytorch-fid's "
        f"{PYTORCH_FID_WEIGHTS_FILENAME} works too."
    )


class InceptionEmbedding(Embedding):
    """2048-d FID Inception-v3 pool features of uint8 images.

    Inputs of any size are resized to 299x299 by the network itself; 1-channel images are
    replicated to 3 channels. The features are not normalised.

    Forward passes run in sub-batches of at most ``max_batch_size`` images whatever
    ``batch_size`` :meth:`embed` is given: each image costs about 14 MB of float32
    activations at 299x299, so the default 256 stays near 3.5 GB (a 24 GB card that also
    holds a diffusion model), where ``PrivateEvolution``'s ``embedding_batch_size`` 2048 in
    one pass would need about 28 GB. Sub-batches do not change the features.

    Weights are looked up in :meth:`setup` (or on the first :meth:`embed`), in order:
    ``weights_path`` if given (must exist); else torch-fidelity's file or pytorch-fid's in
    the torch hub cache (``<torch.hub.get_dir()>/checkpoints``); else torch-fidelity
    downloads it (needs internet; offline this is a RuntimeError naming the file and URL).

    Args:
        weights_path: local copy of ``weights-inception-2015-12-05-6726825d.pth``
            (torch-fidelity) or ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid).
        max_batch_size: most images per forward pass (memory bound; see above).
    """

    FEATURE = "2048"

    def __init__(self, *, weights_path: str | None = None, max_batch_size: int = 256) -> None:
        if weights_path is not None and (not isinstance(weights_path, (str, os.PathLike)) or not str(weights_path)):
            raise ValueError(f"weights_path must be None or a file path, got {weights_path!r}")
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
        self.weights_path = None if weights_path is None else str(weights_path)
        self.max_batch_size = max_batch_size
        self.device = torch.device("cpu")
        self._net: torch.nn.Module | None = None

    @property
    def dim(self) -> int:
        """Always 2048."""
        return 2048

    #: Sub-batches do not change the features.
    fingerprint_ignores = frozenset({"max_batch_size"})

    def config(self) -> dict:
        return {"weights_path": self.weights_path}

    def _build(self, path: str | None) -> torch.nn.Module:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        return FeatureExtractorInceptionV3(
            name="inception-v3-compat", features_list=[self.FEATURE], feature_extractor_weights_path=path
        )

    def _load(self) -> torch.nn.Module:
        if self.weights_path is not None:
            path = os.path.expanduser(self.weights_path)
            if not os.path.isfile(path):
                raise RuntimeError(f"Inception weights not found: weights_path={self.weights_path!r} does not exist. "
                                   + _download_hint())
        else:
            path = next((p for p in _hub_candidates() if os.path.isfile(p)), None)
        if path is not None:
            try:
                return self._build(path)
            except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
                raise RuntimeError(
                    f"could not load Inception weights from {path!r} ({type(err).__name__}: {err}). "
                    f"The file must be a state dict of torch-fidelity's FID Inception-v3. " + _download_hint()
                ) from err
        try:
            return self._build(None)  # torch-fidelity downloads into the torch hub cache
        except OSError as err:  # URLError, socket and HTTP errors
            raise RuntimeError(
                f"Inception weights are not available locally and downloading them failed "
                f"({type(err).__name__}: {err}). " + _download_hint()
            ) from err

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Load the weights (first call only) and move the network to ``device``. Idempotent."""
        self.device = torch.device(device)
        if self._net is None:
            self._net = self._load()
        self._net.to(self.device).eval()

    # no_grad, not inference_mode: inference tensors cannot be updated in place outside
    # inference mode, and callers do exactly that (the lookahead mean accumulates with add_).
    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, C)`` with values 0..255, C in {1, 3}; numpy or torch.
            batch_size: images per forward pass, capped at ``max_batch_size`` (each image
                is resized to 3x299x299 float32, ~1 MB, plus ~13 MB of activations).

        Returns:
            float32 CPU tensor ``(N, 2048)``, an ordinary (writable, non-inference) tensor.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = min(batch_size, self.max_batch_size)
        x = as_uint8_nhwc(images)
        if self._net is None:
            self.setup(device=self.device)
        out = torch.empty((x.shape[0], self.dim), dtype=torch.float32)
        for start in range(0, x.shape[0], batch_size):
            out[start : start + batch_size] = self._features(to_device(x[start : start + batch_size], self.device)).cpu()
        return out

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` on the device -> float ``(B, 2048)``: torch-fidelity's TF1 resize inside the network."""
        batch = batch.permute(0, 3, 1, 2)  # (B, C, H, W) uint8
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        (features,) = self._net(batch.contiguous())
        return features.float()
