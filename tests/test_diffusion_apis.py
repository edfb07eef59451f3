"""Tests of the diffusers APIs (DiffusionUNetAPI, DiTAPI, StableDiffusionAPI) with tiny random-weight models.

Every model is built from a config with seeded random weights and written with
``save_pretrained`` into a temporary folder (``tests/tiny_weights.py``), whose path is then
the ``model`` argument: the APIs' real ``from_pretrained`` loading path runs, and nothing
touches the network.
"""

from __future__ import annotations

import contextlib
import json

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
def models(tiny_diffusers_models) -> dict[str, str]:
    """The tiny models' folders by name (built once per session: tests/tiny_weights.py)."""
    return tiny_diffusers_models


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
    from pe_lightning.apis.diffusers.base import from_images, to_images

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


# ---------------------------------------------------------------------------- 8. Hub layouts and weight variants


def test_unet_at_the_repository_root_or_in_unet_folder_both_load(models, tmp_path) -> None:
    """google/ddpm-cifar10-32 keeps config.json, the weights and scheduler_config.json at the root;
    DDPMPipeline.save_pretrained writes unet/ and scheduler/. The default finds either."""
    from diffusers import DDPMScheduler, UNet2DModel

    root = tmp_path / "root_layout"
    UNet2DModel.from_pretrained(models["unet"], subfolder="unet").save_pretrained(root)
    DDPMScheduler.from_pretrained(models["unet"], subfolder="scheduler").save_pretrained(root)
    labels = np.array([1, 2], dtype=np.int64)
    images = []
    for model, kwargs in [(models["unet"], {}), (str(root), {}), (str(root), {"subfolder": None, "scheduler_subfolder": None})]:
        api = DiffusionUNetAPI(model=model, num_inference_steps=STEPS, image_size=16, **kwargs)
        api.setup(class_names=DIGITS)
        images.append(api.random(labels=labels, generator=_gen(0)).images)
    for other in images[1:]:  # the same weights and scheduler, wherever they sit
        np.testing.assert_array_equal(other, images[0])


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks`:UserWarning")
@pytest.mark.parametrize("where", ["local", "hub"])
def test_missing_unet_error_lists_the_paths_tried(where, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = str(tmp_path / "empty") if where == "local" else "nonexistent-org/nonexistent-unet"
    if where == "local":
        (tmp_path / "empty").mkdir()
    with pytest.raises(OSError) as info:
        DiffusionUNetAPI(model=model, torch_dtype="float16").setup(class_names=DIGITS)
    msg = str(info.value)
    tried = [f"{model}/unet (fp16 weight files)", f"{model}/unet (default weight files)",
             f"{model} (root) (fp16 weight files)", f"{model} (root) (default weight files)"]
    positions = [msg.find(t) for t in tried]
    assert -1 not in positions and positions == sorted(positions), msg  # every path and variant tried, in order
    if where == "hub":
        assert "hf download nonexistent-org/nonexistent-unet" in msg


def test_fp16_weight_files_are_loaded_where_the_checkpoint_has_them(tmp_path) -> None:
    """variant 'auto': torch_dtype float16 reads the fp16 files when present (here deliberately different
    weights, so that which files were read shows), the default files otherwise; float32 reads the default files."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from tiny_weights import tiny_unet

    both, default_only = tmp_path / "both", tmp_path / "default_only"
    DDPMPipeline(unet=tiny_unet(seed=0), scheduler=DDPMScheduler()).save_pretrained(both)
    DDPMPipeline(unet=tiny_unet(seed=1).half(), scheduler=DDPMScheduler()).save_pretrained(both, variant="fp16")
    DDPMPipeline(unet=tiny_unet(seed=0), scheduler=DDPMScheduler()).save_pretrained(default_only)
    first = lambda api: next(api._unet.parameters()).detach().float()  # noqa: E731

    def loaded(model: str, **kwargs) -> DiffusionUNetAPI:
        api = DiffusionUNetAPI(model=str(model), image_size=16, **kwargs)
        api.setup(class_names=DIGITS)
        return api

    fp16, default = tiny_unet(seed=1).half(), tiny_unet(seed=0)
    api = loaded(both, torch_dtype="float16")
    assert api._unet.dtype == torch.float16
    torch.testing.assert_close(first(api), next(fp16.parameters()).float())
    torch.testing.assert_close(first(loaded(both, torch_dtype="float32")), next(default.parameters()))
    torch.testing.assert_close(first(loaded(both, torch_dtype="float16", variant=None)), next(default.parameters()).half().float())
    fallback = loaded(default_only, torch_dtype="float16")  # no fp16 files: the default ones, cast
    assert fallback._unet.dtype == torch.float16
    torch.testing.assert_close(first(fallback), next(default.parameters()).half().float())
    with pytest.raises(OSError, match="fp16 weight files"):  # an explicit variant must exist
        loaded(default_only, torch_dtype="float16", variant="fp16")


# ---------------------------------------------------------------------------- 9. memory: VAE sub-batches, one encoding per parents


@pytest.mark.parametrize("cls", [DiTAPI, StableDiffusionAPI])
def test_vae_sub_batches_give_the_same_images_as_one_batch(models, cls) -> None:
    name = "dit" if cls is DiTAPI else "sd"
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)
    results = []
    for vae_batch_size in (1, 4, 64):
        api = cls(model=models[name], num_inference_steps=STEPS, image_size=16, channels=3, batch_size=6,
                  vae_batch_size=vae_batch_size)
        api.setup(class_names=DIGITS)
        out = api.random(labels=labels, generator=_gen(0))
        var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
        results.append((out.images, var.images))
    for images in results[1:]:  # float results agree to rounding (below), so uint8 pixels to at most one level
        for got, want in zip(images, results[0]):
            diff = np.abs(got.astype(int) - want.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    with pytest.raises(ValueError, match="vae_batch_size"):
        cls(model=models[name], vae_batch_size=0)


def test_vae_encode_and_decode_in_sub_batches_match_one_batch(dit_api) -> None:
    from pe_lightning.apis.diffusers.base import vae_decode, vae_encode

    vae, cpu = dit_api._vae, torch.device("cpu")
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    whole = vae_encode(vae, images, size=(16, 16), device=cpu, batch_size=5, autocast=contextlib.nullcontext)
    assert whole.shape == (5, 4, 8, 8) and whole.dtype == torch.float32 and whole.device == cpu
    torch.testing.assert_close(vae_encode(vae, images, size=(16, 16), device=cpu, batch_size=2,
                                          autocast=contextlib.nullcontext), whole, rtol=1e-5, atol=1e-5)
    decoded = vae_decode(vae, whole, batch_size=5, autocast=contextlib.nullcontext)
    assert decoded.shape == (5, 3, 16, 16) and decoded.dtype == torch.float32
    torch.testing.assert_close(vae_decode(vae, whole, batch_size=1, autocast=contextlib.nullcontext), decoded,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["dit_api", "sd_api"])
def test_the_same_parents_are_vae_encoded_once_for_all_lookahead_variations(name, request, monkeypatch) -> None:
    api = request.getfixturevalue(name)
    vae = api._vae if name == "dit_api" else api._txt2img.vae
    encoded: list[int] = []
    real_encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda x, *a, **k: (encoded.append(len(x)), real_encode(x, *a, **k))[1])
    labels = np.arange(6, dtype=np.int64)
    parents = api.random(labels=labels, generator=_gen(0))
    api._latent_cache = None
    k_variations = [api.variation(images=parents.images, conditions=parents.conditions, labels=labels, degree=0.5,
                                  generator=_gen(10 + r)).images for r in range(3)]
    assert sum(encoded) == 6  # three variations of the same six parents: one encoding
    api._latent_cache = None  # without the cache: the same images
    again = api.variation(images=parents.images, conditions=parents.conditions, labels=labels, degree=0.5, generator=_gen(11))
    np.testing.assert_array_equal(again.images, k_variations[1])
    other = parents.images.copy()
    other[0] ^= 1  # different parents are encoded anew
    api.variation(images=other, conditions=parents.conditions, labels=labels, degree=0.5, generator=_gen(12))
    assert sum(encoded) == 18


# ---------------------------------------------------------------------------- 10. NaN/inf outputs are errors, not black images


def _poison_second_call(monkeypatch, module, name: str) -> None:
    """Make ``module.name`` return NaN from its second call on."""
    real, calls = getattr(module, name), []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out if len(calls) < 2 else out.clone().fill_(float("nan"))

    monkeypatch.setattr(module, name, poisoned)


@pytest.mark.parametrize("name, target", [("unet_api", "unet.sdedit_sample"), ("dit_api", "dit.vae_decode"),
                                          ("sd_api", "stable_diffusion.vae_decode")])
@pytest.mark.parametrize("call", ["random", "variation"])
def test_nan_output_raises_naming_the_api_and_batch(name, target, call, request, monkeypatch) -> None:
    import importlib

    api = request.getfixturevalue(name)  # batch_size 4: 6 samples are batches 1 (0..3) and 2 (4..5)
    labels = np.arange(6, dtype=np.int64)
    start = api.random(labels=labels, generator=_gen(0))
    module_name, function = target.split(".")
    _poison_second_call(monkeypatch, importlib.import_module(f"pe_lightning.apis.diffusers.{module_name}"), function)
    from pe_lightning.apis.diffusers.base import NonFiniteOutputError

    with pytest.raises(NonFiniteOutputError) as info:
        if call == "random":
            api.random(labels=labels, generator=_gen(1))
        else:
            api.variation(images=start.images, conditions=start.conditions, labels=labels, degree=0.5, generator=_gen(1))
    msg = str(info.value)
    assert f"{type(api).__name__}(model=" in msg and f".{call}: batch 2 of 2 (samples 4..5" in msg and "NaN" in msg


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
def test_tiny_pe_fit_through_the_cli(name, models, tmp_path, cli_worker) -> None:
    """``python -m pe_lightning fit`` (in the session's CLI process, tests/cli_worker.py) with each diffusers API."""
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
    cli_worker.run(["fit", "--config", str(path)], cwd=tmp_path, check=True)  # W&B off, offline, one thread
    pop = np.load(out_dir / "final" / "population.npz")
    assert pop["images"].shape == (20, 28, 28, 1) and pop["images"].dtype == np.uint8
