"""CLIP image features through ``open_clip`` (OpenCLIP).

``open_clip`` is an optional dependency (``pip install "pe_lightning[clip]"``), imported only
when the model is loaded (:meth:`CLIPEmbedding.setup` or the first :meth:`CLIPEmbedding.embed`).
Images are preprocessed in batches with torch, as open_clip's own transform does one PIL
image at a time: RGB in ``[0, 1]``, resize (bicubic, antialiased) and crop or pad to the
model's input size following its ``resize_mode``, then the model's mean/std.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from pe_lightning.devices import to_device
from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.pixels import as_uint8_nhwc

__all__ = ["CLIPEmbedding"]

_PRECISIONS = ("fp32", "fp16", "bf16")
_SCHEMAS = ("hf-hub:", "local-dir:")
_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


def _open_clip():
    """Import ``open_clip`` or raise an ImportError with the install hint."""
    try:
        import open_clip  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "CLIPEmbedding needs the open_clip package: pip install 'pe_lightning[clip]' "
            "(or pip install open-clip-torch)"
        ) from err
    return open_clip


def _register_config(open_clip, name: str, config: dict) -> None:
    """Make ``config`` known to open_clip as architecture ``name`` (idempotent for the same config)."""
    known = open_clip.get_model_config(name)
    if known is not None:
        if known != config:
            raise ValueError(
                f"CLIPEmbedding model_config: open_clip already has an architecture named {name!r} with a "
                "different config; give the custom architecture another model name"
            )
        return
    folder = tempfile.mkdtemp(prefix="pe_lightning_open_clip_")
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    open_clip.add_model_config(path)


def _offline_hint(model: str, pretrained: str | None, hf_hub: str | None) -> str:
    download = f"`hf download {hf_hub.rstrip('/')}`" if hf_hub else "open_clip's download of these weights"
    return (
        f"On a machine with internet, run {download} and copy the Hugging Face cache ($HF_HOME) here, or point "
        "CLIPEmbedding at a local copy: `pretrained: /path/to/open_clip_pytorch_model.bin` (a checkpoint file for "
        f"model {model!r}), `model: local-dir:/path/to/folder` (a folder holding open_clip_config.json and the "
        "weights), or `cache_dir: /path/to/cache`."
    )


class CLIPEmbedding(Embedding):
    """CLIP image embeddings (``encode_image``) of uint8 images, by default unit-normed.

    Weights are loaded lazily in :meth:`setup` (or on the first :meth:`embed`). Offline, a
    model whose weights are not in the local cache is a RuntimeError naming the model and
    the tag and saying how to point at a local copy.

    Args:
        model: an open_clip architecture name (``"ViT-B-32"``; ``open_clip.list_models()``),
            ``"hf-hub:org/repo"`` or ``"local-dir:/path"`` (a folder holding
            ``open_clip_config.json`` and the weights).
        pretrained: the weights of a named architecture: an open_clip tag (``"openai"``,
            ``"laion2b_s34b_b79k"``; ``open_clip.list_pretrained()``), a local checkpoint
            file, or ``None`` for random weights (tests). Must be ``None`` with
            ``hf-hub:`` / ``local-dir:`` models, which carry their own weights.
        model_config: an architecture in open_clip's JSON format (``embed_dim``,
            ``vision_cfg``, ``text_cfg``), registered under the name ``model``: for
            architectures open_clip does not ship (e.g. a tiny random-weight test model).
        cache_dir: download cache (default: the Hugging Face cache).
        normalize: unit-norm the features (CLIP's cosine geometry); ``False`` gives the raw
            image projection.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` weights (half precision on GPU).
        init_seed: with ``pretrained=None`` and no weights in ``model``, the random weights
            are drawn with this seed (in a forked RNG state, the global one is left as it
            was), so the embedding and its :attr:`fingerprint` name the same function in
            every run.
    """

    def __init__(
        self,
        *,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        model_config: dict | None = None,
        cache_dir: str | None = None,
        normalize: bool = True,
        precision: str = "fp32",
        init_seed: int = 0,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"CLIPEmbedding model must be a non-empty string, got {model!r}")
        schema = next((s for s in _SCHEMAS if model.startswith(s)), None)
        if pretrained is not None and (not isinstance(pretrained, str) or not pretrained):
            raise ValueError(f"CLIPEmbedding pretrained must be None, a tag or a file path, got {pretrained!r}")
        if schema is not None and pretrained is not None:
            raise ValueError(
                f"CLIPEmbedding model={model!r} carries its own weights; set pretrained: null "
                f"(got pretrained={pretrained!r})"
            )
        if model_config is not None:
            if not isinstance(model_config, dict) or any(k not in model_config for k in _CONFIG_KEYS):
                raise ValueError(
                    f"CLIPEmbedding model_config must be a dict with keys {list(_CONFIG_KEYS)} (open_clip's model "
                    f"config format), got {model_config!r}"
                )
            if schema is not None or "/" in model:
                raise ValueError(
                    f"CLIPEmbedding model_config names a new architecture: model must be a plain name without "
                    f"'/' or a schema, got {model!r}"
                )
        if precision not in _PRECISIONS:
            raise ValueError(f"CLIPEmbedding precision must be one of {_PRECISIONS}, got {precision!r}")
        self.model = model
        self.pretrained = pretrained
        self.model_config = None if model_config is None else json.loads(json.dumps(model_config))
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.normalize = bool(normalize)
        self.precision = precision
        self.init_seed = int(init_seed)
        self.device = torch.device("cpu")
        self._net: torch.nn.Module | None = None
        self._preprocess: dict | None = None

    #: Where downloads are cached does not change the weights a tag names.
    fingerprint_ignores = frozenset({"cache_dir"})

    def config(self) -> dict:
        return {
            "model": self.model,
            "pretrained": self.pretrained,
            "model_config": self.model_config,
            "normalize": self.normalize,
            "precision": self.precision,
            "init_seed": self.init_seed if self.pretrained is None else None,
        }

    @property
    def dim(self) -> int:
        """Feature dimension ``embed_dim`` (loads the model first unless ``model_config`` gives it)."""
        if self._net is None and self.model_config is not None:
            return int(self.model_config["embed_dim"])
        return int(self._ensure_model().visual.output_dim)

    def _check_source(self, open_clip) -> None:
        """Clear errors for a missing folder, an unknown architecture, tag or checkpoint file."""
        if self.model.startswith("local-dir:"):
            folder = os.path.expanduser(self.model[len("local-dir:"):])
            if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
                raise FileNotFoundError(
                    f"CLIPEmbedding model={self.model!r}: {folder!r} is not a folder holding open_clip_config.json "
                    "(and the weights, e.g. open_clip_pytorch_model.bin)"
                )
            return
        if self.model.startswith("hf-hub:"):
            return
        if open_clip.get_model_config(self.model.replace("/", "-")) is None:
            raise ValueError(
                f"CLIPEmbedding model={self.model!r} is not an open_clip architecture (open_clip.list_models(), "
                "e.g. 'ViT-B-32'); give model_config for a custom one, or use 'hf-hub:...' / 'local-dir:...'"
            )
        if self.pretrained is not None and not open_clip.get_pretrained_cfg(self.model, self.pretrained):
            if not os.path.isfile(os.path.expanduser(self.pretrained)):
                tags = open_clip.list_pretrained_tags_by_model(self.model)
                raise ValueError(
                    f"CLIPEmbedding pretrained={self.pretrained!r} is neither a tag of model {self.model!r} "
                    f"(tags: {tags}) nor an existing checkpoint file"
                )

    def _load(self) -> torch.nn.Module:
        open_clip = _open_clip()
        if self.model_config is not None:
            _register_config(open_clip, self.model, self.model_config)
        self._check_source(open_clip)
        pretrained = None if self.pretrained is None else os.path.expanduser(self.pretrained)
        if pretrained is not None and not os.path.isfile(pretrained):
            pretrained = self.pretrained  # a tag
        try:
            with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG
                torch.manual_seed(self.init_seed)
                net = open_clip.create_model(
                    self.model, pretrained=pretrained, precision=self.precision, device="cpu", cache_dir=self.cache_dir
                )
        except (RuntimeError, OSError) as err:
            if self.model.startswith("hf-hub:") or (pretrained is not None and not os.path.isfile(pretrained)):
                if self.model.startswith("hf-hub:"):
                    hf_hub = self.model[len("hf-hub:"):]
                else:
                    hf_hub = open_clip.get_pretrained_cfg(self.model, self.pretrained).get("hf_hub")
                raise RuntimeError(
                    f"CLIPEmbedding: the weights of model={self.model!r} pretrained={self.pretrained!r} are not in "
                    f"the local cache and could not be downloaded ({type(err).__name__}: {err}). "
                    + _offline_hint(self.model, self.pretrained, hf_hub)
                ) from err
            raise RuntimeError(
                f"CLIPEmbedding: could not build model={self.model!r} pretrained={self.pretrained!r} "
                f"({type(err).__name__}: {err})"
            ) from err
        self._preprocess = dict(open_clip.get_model_preprocess_cfg(net))
        return net.eval()

    def _ensure_model(self) -> torch.nn.Module:
        if self._net is None:
            self._net = self._load()
            self._net.to(self.device)
        return self._net

    def setup(self, *, device: torch.device | str = "cpu") -> None:
        """Load the model (first call only) and move it to ``device``. Idempotent."""
        self.device = torch.device(device)
        self._ensure_model().to(self.device)

    def _pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, C)`` -> the model's normalised float input ``(B, 3, S, S)``."""
        cfg = self._preprocess
        size = cfg["size"]
        out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        x = to_device(batch, self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        mode = _INTERPOLATIONS.get(cfg.get("interpolation", "bicubic"), "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        # Sizes and offsets rounded as open_clip's transform does (torchvision's Resize and CenterCrop).
        if resize_mode == "squash":
            new_h, new_w = out_h, out_w
        elif resize_mode == "longest":  # fit inside the output, then pad
            ratio = max(h / out_h, w / out_w)
            new_h, new_w = max(1, round(h / ratio)), max(1, round(w / ratio))
        elif out_h / h >= out_w / w:  # "shortest": cover the output, then centre-crop
            new_h, new_w = out_h, max(1, int(w * out_h / h))
        else:
            new_h, new_w = max(1, int(h * out_w / w)), out_w
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode=mode, antialias=mode != "nearest",
                              **({} if mode == "nearest" else {"align_corners": False}))
            x = x.clamp_(0.0, 1.0)
        if (new_h, new_w) != (out_h, out_w):
            if resize_mode == "shortest":
                top, left = int(round((new_h - out_h) / 2)), int(round((new_w - out_w) / 2))
                x = x[..., top: top + out_h, left: left + out_w]
            else:
                pad_t, pad_l = (out_h - new_h) // 2, (out_w - new_w) // 2
                x = F.pad(x, (pad_l, out_w - new_w - pad_l, pad_t, out_h - new_h - pad_t),
                          value=cfg.get("fill_color", 0) / 255.0)
        mean = torch.tensor(cfg["mean"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()  # not inference_mode: PE adds lookahead embeddings in place afterwards
    def embed(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, C)``, C in {1, 3} (grayscale is replicated to RGB);
                numpy or torch.
            batch_size: images per forward pass.

        Returns:
            float32 CPU tensor ``(N, embed_dim)``; unit rows when ``normalize``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        x = as_uint8_nhwc(images)
        net = self._ensure_model()
        dtype = next(net.parameters()).dtype
        out = torch.empty((x.shape[0], int(net.visual.output_dim)), dtype=torch.float32)
        for start in range(0, x.shape[0], batch_size):
            pixels = self._pixels(x[start: start + batch_size]).to(dtype)
            features = net.encode_image(pixels, normalize=False).float()
            if self.normalize:
                features = F.normalize(features, dim=1)
            out[start: start + batch_size] = features.cpu()
        return out
