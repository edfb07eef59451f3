"""Random-weight models and tiny data sets written to folders, for tests that run the real loading paths offline.

* :func:`build_tiny_diffusers_models`: tiny UNet, DiT and Stable Diffusion pipelines (seeded
  random weights, built from configs) saved with ``save_pretrained``, so that the APIs'
  ``from_pretrained`` runs on them exactly as on a downloaded checkpoint.
* :func:`write_random_inception_weights`: a state dict of torch-fidelity's FID Inception-v3
  with random weights, in place of the real file.
* :func:`write_cifar10_batches`, :func:`write_image_folder`: random images in the CIFAR-10
  python format and in the ImageFolder layout.
* :func:`write_tiny_adm_checkpoint`: a tiny improved-diffusion U-Net (:data:`TINY_ADM_FLAGS`)
  with seeded random weights, saved as a ``.pt`` state dict like the published checkpoints.

Imports of diffusers / transformers / torch-fidelity happen inside the functions.
"""

from __future__ import annotations

import json
import pickle
import string
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "TINY_ADM_FLAGS",
    "build_tiny_diffusers_models",
    "random_adm_state",
    "tiny_unet",
    "write_cifar10_batches",
    "write_image_folder",
    "write_random_inception_weights",
    "write_tiny_adm_checkpoint",
]


def tiny_unet(**kwargs):
    """A seeded 16 px, 3-channel ``UNet2DModel`` with two small blocks (``kwargs`` are passed on)."""
    from diffusers import UNet2DModel

    torch.manual_seed(kwargs.pop("seed", 0))
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
    )


def _tiny_clip(folder: Path):
    """A character-level CLIP tokenizer and a 2-layer text encoder."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in string.ascii_lowercase + string.digits:
            vocab[ch + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=32)
    torch.manual_seed(3)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    return tokenizer, text_encoder


def build_tiny_diffusers_models(root: Path) -> dict[str, str]:
    """Write the tiny models under ``root``; returns their folders by name.

    ``unet`` and ``unet_cond`` (10 class embeddings) are ``DDPMPipeline`` folders (``unet/``,
    ``scheduler/``); ``dit`` a ``DiTPipeline`` (8 x 8 x 4 latents, VAE factor 2: 16 px);
    ``sd`` a ``StableDiffusionPipeline`` (16 px) with its weights also as ``fp16`` variant
    files, as the Hub's SD v1 checkpoints have them.
    """
    from diffusers import (
        DDIMScheduler,
        DDPMPipeline,
        DDPMScheduler,
        DiTPipeline,
        DiTTransformer2DModel,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    root = Path(root)
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(root / "unet")
    DDPMPipeline(unet=tiny_unet(num_class_embeds=10), scheduler=DDPMScheduler()).save_pretrained(root / "unet_cond")

    torch.manual_seed(2)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
    )
    DiTPipeline(transformer=transformer, vae=_tiny_vae(), scheduler=DDIMScheduler()).save_pretrained(root / "dit")

    tokenizer, text_encoder = _tiny_clip(root / "clip_tokenizer")
    torch.manual_seed(4)
    sd_unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    sd = StableDiffusionPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=sd_unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.save_pretrained(root / "sd")
    sd.to(torch.float16).save_pretrained(root / "sd", variant="fp16")
    return {name: str(root / name) for name in ("unet", "unet_cond", "dit", "sd")}


def write_random_inception_weights(path: Path) -> str:
    """Save a state dict of torch-fidelity's FID Inception-v3 with random weights at ``path`` (no download).

    The network is built with its weight loading patched out, then its conv weights are
    redrawn He-normal so that activations stay O(1) through the ~90 layers (PyTorch's
    default init shrinks them to ~1e-7).
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    load_url, load_state_dict = tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict
    tfi.load_state_dict_from_url = lambda *a, **k: {}
    tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None
    try:
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        tfi.load_state_dict_from_url, tfi.FeatureExtractorInceptionV3.load_state_dict = load_url, load_state_dict
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return str(path)


def write_cifar10_batches(root: Path, *, per_batch: int = 10, test: int = 10, seed: int = 0) -> Path:
    """Random images in the CIFAR-10 python format: ``root/cifar-10-batches-py/`` with data_batch_1..5,
    test_batch and batches.meta (labels cycle through the 10 classes, ``5 * per_batch`` train images and
    ``test`` test images). Their md5 sums are not CIFAR-10's.

    Returns:
        ``root``.
    """
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in CIFAR10.train_list] + [name for name, _ in CIFAR10.test_list]
    start = 0
    for name in names:
        n = test if name == "test_batch" else per_batch
        labels = [(start + i) % 10 for i in range(n)]  # the train labels cycle across the five batches
        start = 0 if name == "test_batch" else start + n
        batch = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), "labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / CIFAR10.meta["filename"]).write_bytes(pickle.dumps({CIFAR10.meta["key"]: classes}))
    return Path(root)


def write_image_folder(root: Path, counts: dict[str, int], *, size: int, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: ``counts[class]`` random RGB images of ``size`` x ``size`` pixels.

    Returns:
        ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(Path(root) / name / f"{i}.png")
    return Path(root)


#: improved-diffusion flags (``ImprovedDiffusionAPI(model_config=...)`` with ``preset: null``) of a tiny model built
#: like the paper's 270M one (class-conditional, learned sigma, scale-shift norm, cosine schedule, unscaled
#: timesteps) at 16 px: two levels, 32 channels, attention at 8 x 8, 100 training steps.
TINY_ADM_FLAGS = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=[1, 2], attention_resolutions=[8],
                      num_heads=2, learn_sigma=True, class_cond=True, diffusion_steps=100, noise_schedule="cosine",
                      rescale_timesteps=False)


def random_adm_state(config) -> dict[str, torch.Tensor]:
    """Seeded N(0, 0.05^2) values for every tensor of an ``ADMConfig``'s U-Net, drawn in sorted key order."""
    shapes = {k: v.shape for k, v in config.build_unet(device="meta").state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shapes[k], generator=gen) * 0.05 for k in sorted(shapes)}


def write_tiny_adm_checkpoint(path: Path, flags: dict | None = None) -> str:
    """Save :func:`random_adm_state` of ``flags`` (default :data:`TINY_ADM_FLAGS`) at ``path``; returns the path."""
    from pe_lightning.apis.diffusers.improved_diffusion import config_from

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_adm_state(config_from(None, flags or TINY_ADM_FLAGS)), path)
    return str(path)
