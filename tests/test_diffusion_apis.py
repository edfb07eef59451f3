"""Tests of the diffusers APIs (DiffusionUNetAPI, DiTAPI, StableDiffusionAPI) with tiny random-weight models.

Every model is built from a config with seeded random weights and written with
``save_pretrained`` into a temporary folder, whose path is then the ``model`` argument: the
APIs' real ``from_pretrained`` loading path runs, and nothing touches the network.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pe_lightning import (
    APIOutput,
    DiffusionUNetAPI,
    DiTAPI,
    PixelEmbedding,
    PrivateEvolution,
    StableDiffusionAPI,
)

DIGITS = [str(i) for i in range(10)]
STEPS = 4  # scheduler steps of the tiny models


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _digits(n: int = 6, size: int = 28) -> np.ndarray:
    """Deterministic grayscale test images: bright squares on black, uint8 (n, size, size, 1)."""
    img = np.zeros((n, size, size, 1), np.uint8)
    for i in range(n):
        a = 4 + (i * 3) % (size // 2)
        img[i, a: a + size // 3, a: a + size // 4] = 255
    return img


# ---------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Build and save the tiny models once; returns their folders by name."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMPipeline,
        DDPMScheduler,
        DiTPipeline,
        DiTTransformer2DModel,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
        UNet2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_models")
    out: dict[str, str] = {}

    def unet(**kwargs) -> UNet2DModel:
        torch.manual_seed(0)
        return UNet2DModel(
            sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
            norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            **kwargs,
        )

    DDPMPipeline(unet=unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(root / "unet")
    DDPMPipeline(unet=unet(num_class_embeds=10), scheduler=DDPMScheduler()).save_pretrained(root / "unet_cond")
    out["unet"], out["unet_cond"] = str(root / "unet"), str(root / "unet_cond")

    def vae() -> AutoencoderKL:
        torch.manual_seed(1)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=16,
        )

    torch.manual_seed(2)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
    )
    DiTPipeline(transformer=transformer, vae=vae(), scheduler=DDIMScheduler()).save_pretrained(root / "dit")
    out["dit"] = str(root / "dit")

    tok_dir = root / "clip_tokenizer"
    tok_dir.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in string.ascii_lowercase + string.digits:
            vocab[ch + suffix] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=32)
    torch.manual_seed(3)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    torch.manual_seed(4)
    sd_unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    sd = StableDiffusionPipeline(
        vae=vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=sd_unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.save_pretrained(root / "sd")
    out["sd"] = str(root / "sd")
    return out


@pytest.fixture(scope="module")
def unet_api(models) -> DiffusionUNetAPI:
    api = DiffusionUNetAPI(model=models["unet"], num_inference_steps=STEPS, image_size=28, channels=1, batch_size=4)
    api.setup(device="cpu", class_names=DIGITS)
    return api


@pytest.fixture(scope="module")
def dit_api(models) -> DiTAPI:
    api = DiTAPI(model=models["dit"], num_inference_steps=STEPS, guidance_scale=2.0, image_size=28, channels=1, batch_size=4)
    api.setup(device="cpu", class_names=DIGITS)
    return api


@pytest.fixture(scope="module")
def sd_api(models) -> StableDiffusionAPI:
    api = StableDiffusionAPI(model=models["sd"], num_inference_steps=STEPS, image_size=28, channels=1, batch_size=4)
    api.setup(device="cpu", class_names=DIGITS)
    return api


API_FIXTURES = ["unet_api", "dit_api", "sd_api"]


# ---------------------------------------------------------------------------- 1. shapes and dtypes


@pytest.mark.parametrize("name", API_FIXTURES)
def test_random_and_variation_shapes_grayscale(name, request) -> None:
    api = request.getfixturevalue(name)
    labels = np.array([0, 3, 7, 9, 1, 2], dtype=np.int64)  # 6 samples with batch_size 4: two batches
    out = api.random(labels=labels, generator=_gen(0))
    assert isinstance(out, APIOutput)
    assert out.images.dtype == np.uint8 and out.images.shape == (6, 28, 28, 1)
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
    assert var.images.dtype == np.uint8 and var.images.shape == (6, 28, 28, 1)
    assert set(var.conditions) == set(out.conditions)


@pytest.mark.parametrize("scheduler", ["ddpm", "dpmsolver", "euler"])
def test_unet_rgb_other_schedulers_and_resize(models, scheduler) -> None:
    api = DiffusionUNetAPI(model=models["unet"], scheduler=scheduler, num_inference_steps=STEPS, image_size=20, channels=3)
    api.setup(class_names=DIGITS)
    out = api.random(labels=np.zeros(3, np.int64), generator=_gen(0))
    assert out.images.shape == (3, 20, 20, 3) and out.images.dtype == np.uint8
    var = api.variation(images=out.images, conditions=out.conditions, labels=np.zeros(3, np.int64), degree=0.5,
                        generator=_gen(1))
    assert var.images.shape == (3, 20, 20, 3)
    a = api.variation(images=out.images, conditions={}, labels=np.zeros(3, np.int64), degree=0.5, generator=_gen(7))
    b = api.variation(images=out.images, conditions={}, labels=np.zeros(3, np.int64), degree=0.5, generator=_gen(7))
    np.testing.assert_array_equal(a.images, b.images)


def test_dit_and_sd_rgb(models) -> None:
    dit = DiTAPI(model=models["dit"], num_inference_steps=STEPS, guidance_scale=1.0, image_size=32, channels=3)
    dit.setup(class_names=["a", "b"])
    out = dit.random(labels=np.array([0, 1]), generator=_gen(0))
    assert out.images.shape == (2, 32, 32, 3)
    sd = StableDiffusionAPI(model=models["sd"], prompts=["a red cat", "a dog"], num_inference_steps=STEPS,
                            guidance_scale=1.0, image_size=16, channels=3, negative_prompt="blurry")
    sd.setup(class_names=["cat", "dog"])
    out = sd.random(labels=np.array([0, 1]), generator=_gen(0))
    assert out.images.shape == (2, 16, 16, 3)
    var = sd.variation(images=out.images, conditions={}, labels=np.array([0, 1]), degree=1.0, generator=_gen(1))
    assert var.images.shape == (2, 16, 16, 3)


@pytest.mark.parametrize("cls", ["unet", "dit", "sd"])
def test_bfloat16_weights(models, cls) -> None:
    """Weights loaded in another dtype (CPU: no autocast); inputs are cast to the model's dtype."""
    api_cls = {"unet": DiffusionUNetAPI, "dit": DiTAPI, "sd": StableDiffusionAPI}[cls]
    api = api_cls(model=models[cls], torch_dtype="bfloat16", num_inference_steps=2, image_size=16, channels=3)
    api.setup(class_names=["a", "b"])
    out = api.random(labels=np.array([0, 1]), generator=_gen(0))
    var = api.variation(images=out.images, conditions=out.conditions, labels=np.array([0, 1]), degree=1.0, generator=_gen(1))
    assert out.images.shape == var.images.shape == (2, 16, 16, 3)


def test_class_conditional_unet_keeps_model_class(models) -> None:
    api = DiffusionUNetAPI(model=models["unet_cond"], class_conditional=True, class_map=[[5, 6]] * 10,
                           num_inference_steps=STEPS, image_size=16)
    api.setup(class_names=DIGITS)
    labels = np.arange(8) % 10
    out = api.random(labels=labels, generator=_gen(0))
    assert set(out.conditions["model_class"].tolist()) <= {5, 6}
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
    np.testing.assert_array_equal(var.conditions["model_class"], out.conditions["model_class"])
    with pytest.raises(ValueError, match="no class embedding"):
        DiffusionUNetAPI(model=models["unet"], class_conditional=True).setup(class_names=DIGITS)


# ---------------------------------------------------------------------------- 2. degree = size of the change


def _reference(api, images: np.ndarray) -> np.ndarray:
    """What a zero-strength variation would give: the input itself, or its VAE round trip for latent models.

    The tiny VAEs have random weights, so their reconstructions are far from the input; the
    change made by SDEdit is measured from the reconstruction.
    """
    if isinstance(api, DiffusionUNetAPI):
        return images
    from pe_lightning.apis.diffusion import from_images, to_images

    vae = api._vae if isinstance(api, DiTAPI) else api._txt2img.vae
    x = from_images(images, size=api._model_size, channels=3, device=torch.device("cpu"))
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return to_images(y, size=api.size, channels=api.channels)


@pytest.mark.parametrize("name", API_FIXTURES)
def test_smaller_degree_changes_less(name, request) -> None:
    api = request.getfixturevalue(name)
    images = _digits(8)
    labels = np.arange(8, dtype=np.int64)
    conditions = {"imagenet_class": np.arange(8, dtype=np.int64) * 100} if name == "dit_api" else {}
    reference = _reference(api, images).astype(np.float64)
    dist = []
    for degree in (0.25, 0.5, 1.0):
        out = api.variation(images=images, conditions=conditions, labels=labels, degree=degree, generator=_gen(3))
        dist.append(float(np.abs(out.images - reference).mean()))
    assert dist[0] < dist[1] and dist[0] < dist[2], dist
    if name == "unet_api":  # pixel space, no VAE: strictly monotone. (In latent space strengths 0.5 and 1.0
        assert dist[1] < dist[2], dist  # both start from nearly pure noise with the linear beta schedule.)


# ---------------------------------------------------------------------------- 3. determinism


@pytest.mark.parametrize("name", API_FIXTURES)
def test_same_seed_same_images_different_seed_differs(name, request) -> None:
    api = request.getfixturevalue(name)
    labels = np.array([0, 1, 2], dtype=np.int64)
    a = api.random(labels=labels, generator=_gen(11))
    b = api.random(labels=labels, generator=_gen(11))
    c = api.random(labels=labels, generator=_gen(12))
    np.testing.assert_array_equal(a.images, b.images)
    for key in a.conditions:
        np.testing.assert_array_equal(a.conditions[key], b.conditions[key])
    assert not np.array_equal(a.images, c.images)
    va = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.5, generator=_gen(5))
    vb = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.5, generator=_gen(5))
    vc = api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.5, generator=_gen(6))
    np.testing.assert_array_equal(va.images, vb.images)
    assert not np.array_equal(va.images, vc.images)


def test_reloading_gives_the_same_images(models, unet_api) -> None:
    """A fresh instance (weights loaded again) reproduces the images: nothing depends on hidden state."""
    again = DiffusionUNetAPI(model=models["unet"], num_inference_steps=STEPS, image_size=28, channels=1, batch_size=4)
    again.setup(class_names=DIGITS)
    labels = np.array([4, 5], dtype=np.int64)
    np.testing.assert_array_equal(
        again.random(labels=labels, generator=_gen(9)).images, unet_api.random(labels=labels, generator=_gen(9)).images
    )


# ---------------------------------------------------------------------------- 4. DiT classes


def test_dit_keeps_imagenet_class_and_respects_subsets(models, dit_api) -> None:
    labels = np.arange(10, dtype=np.int64)
    out = dit_api.random(labels=labels, generator=_gen(0))
    cls = out.conditions["imagenet_class"]
    assert cls.dtype == np.int64 and cls.shape == (10,) and cls.min() >= 0 and cls.max() < 1000
    var = dit_api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
    np.testing.assert_array_equal(var.conditions["imagenet_class"], cls)

    subsets = [[404, 895], [817]]
    api = DiTAPI(model=models["dit"], imagenet_classes=subsets, num_inference_steps=STEPS, image_size=16, channels=3)
    api.setup(class_names=["airplane", "car"])
    labels = np.array([0, 1] * 10, dtype=np.int64)
    out = api.random(labels=labels, generator=_gen(2))
    cls = out.conditions["imagenet_class"]
    assert set(cls[labels == 0].tolist()) == {404, 895}  # 10 draws from 2 classes: both appear (fixed seed)
    assert set(cls[labels == 1].tolist()) == {817}
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.3, generator=_gen(3))
    np.testing.assert_array_equal(var.conditions["imagenet_class"], cls)

    with pytest.raises(ValueError, match="imagenet_classes has 2 lists but there are 10 private classes"):
        DiTAPI(model=models["dit"], imagenet_classes=subsets).setup(class_names=DIGITS)
    with pytest.raises(ValueError, match="outside"):
        DiTAPI(model=models["dit"], imagenet_classes=[[1000]]).setup(class_names=["x"])
    with pytest.raises(ValueError, match="imagenet_class"):
        dit_api.variation(images=_digits(2), conditions={}, labels=np.zeros(2, np.int64), degree=0.5, generator=_gen(0))


def test_dit_loads_the_hub_layout_with_legacy_transformer_class(models, tmp_path) -> None:
    """facebook/DiT-* name their transformer ``Transformer2DModel``; diffusers remaps it to DiTTransformer2DModel."""
    import shutil

    folder = tmp_path / "dit_legacy"
    shutil.copytree(models["dit"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "Transformer2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    config = json.loads((folder / "transformer" / "config.json").read_text())
    config["_class_name"] = "Transformer2DModel"
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    api = DiTAPI(model=str(folder), num_inference_steps=2, image_size=16, channels=3)
    api.setup(class_names=["a"])
    assert type(api._transformer).__name__ == "DiTTransformer2DModel"
    assert api.random(labels=np.zeros(2, np.int64), generator=_gen(0)).images.shape == (2, 16, 16, 3)


# ---------------------------------------------------------------------------- 5. degree validation


def test_validate_degree_rejects_degrees_without_a_denoising_step(models) -> None:
    api = DiffusionUNetAPI(model=models["unet"], num_inference_steps=10)
    api.validate_degree(0.1)
    api.validate_degree(1.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        api.validate_degree(0.05)  # int(10 * 0.05) = 0
    for bad in (0.0, -0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="degree"):
            api.validate_degree(bad)
    for cls in (DiTAPI, StableDiffusionAPI):
        with pytest.raises(ValueError, match="num_inference_steps"):
            cls(model=models["dit"], num_inference_steps=4).validate_degree(0.2)


def test_private_evolution_rejects_a_schedule_without_denoising_steps(models) -> None:
    api = DiffusionUNetAPI(model=models["unet"], num_inference_steps=4, image_size=28, channels=1)
    with pytest.raises(ValueError, match=r"variation_degrees\[1\].*num_inference_steps"):
        PrivateEvolution(api=api, embedding=PixelEmbedding(), iterations=2, variation_degrees=[0.5, 0.2])


def test_constructor_errors_name_the_field(models) -> None:
    with pytest.raises(ValueError, match="torch_dtype"):
        DiTAPI(torch_dtype="float64")
    with pytest.raises(ValueError, match="channels"):
        DiffusionUNetAPI(model="x", channels=2)
    with pytest.raises(ValueError, match="scheduler"):
        DiffusionUNetAPI(model="x", scheduler="magic")
    with pytest.raises(ValueError, match="guidance_scale"):
        StableDiffusionAPI(guidance_scale=[7.5, "high"])
    with pytest.raises(ValueError, match="prompt_template"):
        StableDiffusionAPI(prompt_template="a photo of a {label}")
    with pytest.raises(RuntimeError, match="setup"):
        DiTAPI().random(labels=np.zeros(1, np.int64), generator=_gen(0))
    with pytest.raises(ValueError, match="prompts has 1 entries but there are 2"):
        StableDiffusionAPI(model=models["sd"], prompts=["a cat"]).setup(class_names=["cat", "dog"])


def test_guidance_scale_schedule_is_per_iteration(models) -> None:
    api = StableDiffusionAPI(model=models["sd"], guidance_scale=[1.0, 3.0, 5.0], num_inference_steps=STEPS)
    assert api.current_guidance_scale() == 1.0
    api.set_iteration(2)
    assert api.current_guidance_scale() == 5.0
    with pytest.raises(ValueError, match="guidance_scale has 3 entries.*iteration 3"):
        api.set_iteration(3)
    dit = DiTAPI(model=models["dit"], guidance_scale=[1.0, 4.0])
    dit.set_iteration(1)
    assert dit.current_guidance_scale() == 4.0


def test_sd_prompts_from_template_and_list(sd_api) -> None:
    assert sd_api.prompt(7) == "a photo of a 7"
    api = StableDiffusionAPI(prompts=["A photo of ragdoll cat"])
    assert api.prompt(0) == "A photo of ragdoll cat"


# ---------------------------------------------------------------------------- 7. offline errors


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")
@pytest.mark.parametrize("cls", [DiffusionUNetAPI, DiTAPI, StableDiffusionAPI])
def test_missing_model_offline_names_the_model(cls, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = cls(model="nonexistent-org/nonexistent-model")
    with pytest.raises(OSError) as info:
        api.setup(class_names=DIGITS)
    msg = str(info.value)
    assert "nonexistent-org/nonexistent-model" in msg
    assert "hf download nonexistent-org/nonexistent-model" in msg and "local" in msg


def test_missing_local_folder_is_named(tmp_path) -> None:
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        DiTAPI(model=missing).setup(class_names=DIGITS)


# ---------------------------------------------------------------------------- 6. full tiny PE fits through the CLI


def _api_config(name: str, models: dict[str, str]) -> dict:
    common = {"num_inference_steps": STEPS, "image_size": 28, "channels": 1, "batch_size": 8}
    if name == "unet":
        return {"class_path": "pe_lightning.apis.DiffusionUNetAPI", "init_args": {"model": models["unet"], **common}}
    if name == "dit":
        return {"class_path": "pe_lightning.apis.DiTAPI",
                "init_args": {"model": models["dit"], "guidance_scale": [1.0, 2.0, 3.0], **common}}
    return {"class_path": "pe_lightning.apis.StableDiffusionAPI",
            "init_args": {"model": models["sd"], "prompt_template": "a handwritten digit {name}",
                          "guidance_scale": 2.0, **common}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "dit", "sd"])
def test_tiny_pe_fit_through_the_cli(name, models, tmp_path) -> None:
    out_dir = tmp_path / "out"
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2, "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path),
            "callbacks": [{"class_path": "pe_lightning.callbacks.PrivacyAccountant",
                           "init_args": {"epsilon": 1.0, "delta": 1.0e-5}}],
        },
        "model": {
            "class_path": "pe_lightning.PrivateEvolution",
            "init_args": {
                "iterations": 2, "num_samples_per_class": 2, "variation_degrees": [0.75, 0.5], "lookahead_degree": 1,
                "output_dir": str(out_dir), "save_png": False, "api": _api_config(name, models),
                "embedding": {"class_path": "pe_lightning.embeddings.PixelEmbedding", "init_args": {"size": 14}},
            },
        },
        "data": {"class_path": "pe_lightning.data.MNISTDataModule", "init_args": {"num_private": 60}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # tiny models: 1 thread is fastest
    proc = subprocess.run(
        [sys.executable, "-m", "pe_lightning", "fit", "--config", str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    pop = np.load(out_dir / "final" / "population.npz")
    assert pop["images"].shape == (20, 28, 28, 1) and pop["images"].dtype == np.uint8
