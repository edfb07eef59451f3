"""Tests of the improved-diffusion (ADM) U-Net, its DDIM sampling and :class:`ImprovedDiffusionAPI`.

The 270M preset is only ever built on the meta device (no memory). Sampling runs on a tiny
configuration with seeded random weights written to a ``.pt`` file, so the real
``torch.load`` + strict ``load_state_dict`` path runs; nothing touches the network.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pe_lightning import APIOutput, ImprovedDiffusionAPI, PixelEmbedding, PrivateEvolution
from pe_lightning.apis.diffusers.improved_diffusion import PRESETS, config_from
from pe_lightning.apis.diffusers.improved_diffusion.schedule import (
    RespacedSchedule,
    ddim_sample,
    named_betas,
    space_timesteps,
)
from pe_lightning.apis.diffusers.improved_diffusion.weights import load_unet
from tiny_weights import TINY_ADM_FLAGS, random_adm_state, write_tiny_adm_checkpoint

TINY = TINY_ADM_FLAGS  # class-conditional, learned sigma, 16 px, two levels, attention at 8 x 8
DIGITS = [str(i) for i in range(10)]
ROOT = Path(__file__).resolve().parents[1]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _squares(n: int, size: int, channels: int) -> np.ndarray:
    """Deterministic test images: bright rectangles on black, uint8 (n, size, size, channels)."""
    img = np.zeros((n, size, size, channels), np.uint8)
    for i in range(n):
        a = 2 + (i * 3) % (size // 2)
        img[i, a: a + size // 3, a: a + size // 4] = 255 - 20 * i
    return img


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _api(checkpoint: str, class_names: list[str] = DIGITS, **kwargs) -> ImprovedDiffusionAPI:
    args = dict(preset=None, model_config=TINY, checkpoint=checkpoint, timestep_respacing="4", image_size=28, channels=1,
                batch_size=4)
    args.update(kwargs)
    api = ImprovedDiffusionAPI(**args)
    api.setup(device="cpu", class_names=class_names)
    return api


@pytest.fixture(scope="module")
def api(tiny_adm_checkpoint) -> ImprovedDiffusionAPI:
    return _api(tiny_adm_checkpoint)


# ---------------------------------------------------------------------------- 1. the 270M preset and the checkpoint layout

#: (key pattern, shape) of the 270M model, written from improved-diffusion's architecture: 64 px, 192 channels,
#: channel_mult (1, 2, 3, 4), 3 residual blocks per level, attention at 16 and 8 px (input blocks 10-15, output
#: blocks 0-7) with 4 heads, scale-shift norm (emb_layers twice the width), 1000 classes, learned sigma (6 channels).
EXPECTED_270M = [
    ("time_embed.0.weight", (768, 192)),
    ("time_embed.2.weight", (768, 768)),
    ("label_emb.weight", (1000, 768)),
    ("input_blocks.0.0.weight", (192, 3, 3, 3)),
    ("input_blocks.1.0.in_layers.0.weight", (192,)),
    ("input_blocks.1.0.in_layers.2.weight", (192, 192, 3, 3)),
    ("input_blocks.1.0.emb_layers.1.weight", (384, 768)),
    ("input_blocks.1.0.out_layers.0.bias", (192,)),
    ("input_blocks.1.0.out_layers.3.weight", (192, 192, 3, 3)),
    ("input_blocks.4.0.op.weight", (192, 192, 3, 3)),
    ("input_blocks.5.0.skip_connection.weight", (384, 192, 1, 1)),
    ("input_blocks.9.0.skip_connection.weight", (576, 384, 1, 1)),
    ("input_blocks.9.1.norm.weight", (576,)),
    ("input_blocks.9.1.qkv.weight", (1728, 576, 1)),
    ("input_blocks.9.1.proj_out.weight", (576, 576, 1)),
    ("input_blocks.12.0.op.weight", (576, 576, 3, 3)),
    ("input_blocks.15.1.qkv.bias", (2304,)),
    ("middle_block.0.emb_layers.1.weight", (1536, 768)),
    ("middle_block.1.qkv.weight", (2304, 768, 1)),
    ("middle_block.2.out_layers.3.weight", (768, 768, 3, 3)),
    ("output_blocks.0.0.in_layers.2.weight", (768, 1536, 3, 3)),
    ("output_blocks.0.0.skip_connection.weight", (768, 1536, 1, 1)),
    ("output_blocks.3.2.conv.weight", (768, 768, 3, 3)),
    ("output_blocks.4.0.in_layers.0.weight", (1344,)),
    ("output_blocks.7.1.proj_out.weight", (576, 576, 1)),
    ("output_blocks.7.2.conv.weight", (576, 576, 3, 3)),
    ("output_blocks.11.1.conv.weight", (384, 384, 3, 3)),
    ("output_blocks.15.0.skip_connection.weight", (192, 384, 1, 1)),
    ("out.0.weight", (192,)),
    ("out.2.weight", (6, 192, 3, 3)),
    ("out.2.bias", (6,)),
]

#: Every key of an improved-diffusion U-Net matches one of these.
KEY_PATTERNS = [
    r"time_embed\.[02]\.(weight|bias)",
    r"label_emb\.weight",
    r"input_blocks\.0\.0\.(weight|bias)",
    r"(input_blocks\.\d+|output_blocks\.\d+|middle_block)\.\d\."
    r"(in_layers\.[02]|emb_layers\.1|out_layers\.[03]|skip_connection)\.(weight|bias)",
    r"(input_blocks\.\d+|output_blocks\.\d+|middle_block)\.\d\.(norm|qkv|proj_out)\.(weight|bias)",
    r"input_blocks\.\d+\.0\.op\.(weight|bias)",
    r"output_blocks\.\d+\.[12]\.conv\.(weight|bias)",
    r"out\.[02]\.(weight|bias)",
]


def test_270m_preset_builds_on_meta_with_the_published_parameter_count_and_layout() -> None:
    unet = config_from("imagenet64_cond_270M").build_unet(device="meta")
    assert all(p.is_meta for p in unet.parameters())
    assert sum(p.numel() for p in unet.parameters()) == 273_049_350  # "270M parameters" (improved-diffusion README)
    state = unet.state_dict()
    assert len(state) == 451
    for key, shape in EXPECTED_270M:
        assert key in state, key
        assert tuple(state[key].shape) == shape, (key, tuple(state[key].shape))
    unmatched = [k for k in state if not any(re.fullmatch(p, k) for p in KEY_PATTERNS)]
    assert not unmatched, unmatched[:5]
    assert len([k for k in state if k.startswith("input_blocks.") and k.endswith(".qkv.weight")]) == 6
    assert len([k for k in state if k.startswith("output_blocks.") and k.endswith(".qkv.weight")]) == 8
    other = config_from("imagenet64_cond_270M").build_unet(device="meta")
    other.load_state_dict(state, strict=True, assign=True)  # the layout is reproducible instance to instance


def test_other_presets_differ_where_the_readme_says() -> None:
    uncond = config_from("imagenet64_uncond_100M")
    assert not uncond.class_cond and uncond.rescale_timesteps and uncond.num_channels == 128
    state = uncond.build_unet(device="meta").state_dict()
    assert "label_emb.weight" not in state and tuple(state["out.2.weight"].shape) == (6, 128, 3, 3)
    assert sum(v.numel() for v in state.values()) == 121_063_942
    cifar = config_from("cifar10_uncond_50M")
    assert cifar.levels == (1, 2, 2, 2) and cifar.dropout == 0.3
    assert {p.checkpoint for p in PRESETS.values()} == {
        "imagenet64_cond_270M_250K.pt", "imagenet64_uncond_100M_1500K.pt", "cifar10_uncond_50M_500K.pt"}


def test_a_saved_state_dict_loads_strictly_into_a_new_instance(tiny_adm_checkpoint) -> None:
    config = config_from(None, TINY)
    unet = load_unet(tiny_adm_checkpoint, config)
    saved = torch.load(tiny_adm_checkpoint, weights_only=True)
    assert set(unet.state_dict()) == set(saved)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, saved[key]), key
    fresh = config.build_unet()
    fresh.load_state_dict(unet.state_dict(), strict=True)
    x, t, y = torch.randn(2, 3, 16, 16, generator=_gen(1)), torch.tensor([3.0, 70.0]), torch.tensor([4, 900])
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x, t, y), unet(x, t, y))


# ---------------------------------------------------------------------------- 2. agreement with improved-diffusion

# Golden values computed once with the public code (openai/improved-diffusion ``create_model`` for the forward pass,
# microsoft/DPSDA's ``SkippedSpacedDiffusion.ddim_sample_loop(start_t=3, start_image=...)`` for sampling) on a
# 32 px, 32-channel model whose tensors are tiny_weights.random_adm_state's.
GOLDEN = {
    "scale_shift": dict(
        flags=dict(learn_sigma=True, class_cond=True), rescale=False,
        forward_sum=-236.94720985589083,
        forward_px=[-0.05625147372484207, -0.0007876493036746979, 0.031387366354465485,
                    -0.10263331234455109, -0.10300418734550476, 0.02434888482093811],
        ddim_sum=-104.03034631389892, ddim_px=[1.0, -0.6146517992019653, -1.0],
    ),
    "plain_norm": dict(
        flags=dict(learn_sigma=False, class_cond=False, use_scale_shift_norm=False, num_heads_upsample=1), rescale=True,
        forward_sum=9.983232083133771,
        forward_px=[0.041245926171541214, 0.02335459738969803, -0.02302505448460579],
        ddim_sum=-26.293367981212214, ddim_px=[1.0, -0.49576470255851746, -1.0],
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_matches_improved_diffusion_forward_and_ddim(name) -> None:
    golden = GOLDEN[name]
    config = config_from(None, dict(image_size=32, num_channels=32, num_res_blocks=1, num_heads=2, diffusion_steps=4000,
                                    noise_schedule="cosine", rescale_timesteps=golden["rescale"], **golden["flags"]))
    unet = config.build_unet()
    unet.load_state_dict(random_adm_state(config), strict=True)
    unet.eval()
    x = torch.randn(2, 3, 32, 32, generator=_gen(1))
    y = torch.tensor([1, 999]) if config.class_cond else None
    with torch.no_grad():
        out = unet(x, torch.tensor([10.0, 3000.0]), y)
        assert float(out.double().sum()) == pytest.approx(golden["forward_sum"], abs=1e-3)
        np.testing.assert_allclose(out[0, :, 5, 7].numpy(), golden["forward_px"], atol=1e-5)
        schedule = RespacedSchedule.create(betas=named_betas("cosine", 4000), respacing="ddim10",
                                           rescale_timesteps=config.rescale_timesteps)
        start = torch.rand(2, 3, 32, 32, generator=_gen(2)) * 2 - 1
        sample = ddim_sample(eps_fn=lambda xx, tt: unet(xx, tt, y)[:, :3], schedule=schedule, shape=(2, 3, 32, 32),
                             generator=_gen(3), device=torch.device("cpu"), init=start, strength=0.7)
    assert float(sample.double().sum()) == pytest.approx(golden["ddim_sum"], abs=1e-2)
    np.testing.assert_allclose(sample[1, :, 4, 4].numpy(), golden["ddim_px"], atol=1e-4)


def test_respacing_and_schedules() -> None:
    assert space_timesteps(4000, "ddim10") == list(range(0, 4000, 400))
    hundred = space_timesteps(4000, "100")
    assert len(hundred) == 100 and hundred[:3] == [0, 40, 81] and hundred[-1] == 3999
    assert space_timesteps(300, "10,15,20")[:2] == [0, 11] and len(space_timesteps(300, "10,15,20")) == 45
    assert space_timesteps(4000, 40) == space_timesteps(4000, "40")
    for bad, match in [("ddim3000", "no integer stride"), ("5000", "cannot take"), ("abc", "ddimN"), ("ddim", "ddimN")]:
        with pytest.raises(ValueError, match=match):
            space_timesteps(4000, bad)
    cosine = named_betas("cosine", 4000)
    assert cosine.max() == pytest.approx(0.999) and np.all(np.diff(cosine) >= 0)
    assert named_betas("linear", 1000)[[0, -1]].tolist() == pytest.approx([1e-4, 0.02])
    with pytest.raises(ValueError, match="noise_schedule"):
        named_betas("quadratic", 10)


# ---------------------------------------------------------------------------- 3. the API on the tiny model


def test_random_and_variation_shapes_and_class_condition(api) -> None:
    labels = np.array([0, 3, 7, 9, 1, 2], dtype=np.int64)  # 6 samples, batch_size 4: two batches
    out = api.random(labels=labels, generator=_gen(0))
    assert isinstance(out, APIOutput) and out.images.dtype == np.uint8 and out.images.shape == (6, 28, 28, 1)
    classes = out.conditions["imagenet_class"]
    assert classes.dtype == np.int64 and classes.shape == (6,) and classes.min() >= 0 and classes.max() < 1000
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=0.5, generator=_gen(1))
    assert var.images.dtype == np.uint8 and var.images.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(var.conditions["imagenet_class"], classes)
    with pytest.raises(ValueError, match="imagenet_class"):
        api.variation(images=out.images, conditions={}, labels=labels, degree=0.5, generator=_gen(1))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        api.variation(images=out.images, conditions={"imagenet_class": classes + 1000}, labels=labels, degree=0.5,
                      generator=_gen(1))


def test_rgb_at_the_model_resolution_and_class_subsets(tiny_adm_checkpoint) -> None:
    api = _api(tiny_adm_checkpoint, ["a", "b"], image_size=16, channels=3, imagenet_classes=[[5], [7, 8]])
    labels = np.array([0, 1, 1, 0, 1, 1], dtype=np.int64)
    out = api.random(labels=labels, generator=_gen(0))
    assert out.images.shape == (6, 16, 16, 3)
    classes = out.conditions["imagenet_class"]
    assert set(classes[labels == 0]) == {5} and set(classes[labels == 1]) <= {7, 8}
    again = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=1.0, generator=_gen(2))
    np.testing.assert_array_equal(again.conditions["imagenet_class"], classes)


def test_smaller_strength_changes_an_image_less(tiny_adm_checkpoint) -> None:
    api = _api(tiny_adm_checkpoint, image_size=16, channels=3, timestep_respacing="8")
    images = _squares(6, 16, 3)
    conditions = {"imagenet_class": np.arange(6, dtype=np.int64) * 150}
    labels = np.zeros(6, np.int64)
    dist = []
    for degree in (0.125, 0.5, 1.0):
        out = api.variation(images=images, conditions=conditions, labels=labels, degree=degree, generator=_gen(3))
        dist.append(float(np.abs(out.images.astype(np.float64) - images).mean()))
    assert dist[0] < dist[1] < dist[2], dist


def test_same_generator_seed_same_images(api, tiny_adm_checkpoint) -> None:
    labels = np.array([0, 1, 2], dtype=np.int64)
    a, b, c = (api.random(labels=labels, generator=_gen(s)) for s in (11, 11, 12))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.conditions["imagenet_class"], b.conditions["imagenet_class"])
    assert not np.array_equal(a.images, c.images)
    va, vb, vc = (api.variation(images=a.images, conditions=a.conditions, labels=labels, degree=0.5, generator=_gen(s))
                  for s in (5, 5, 6))
    np.testing.assert_array_equal(va.images, vb.images)
    assert not np.array_equal(va.images, vc.images)
    fresh = _api(tiny_adm_checkpoint)  # weights loaded again: nothing depends on hidden state
    np.testing.assert_array_equal(fresh.random(labels=labels, generator=_gen(11)).images, a.images)
    stochastic = _api(tiny_adm_checkpoint, eta=1.0)
    s1, s2 = (stochastic.random(labels=labels, generator=_gen(11)) for _ in range(2))
    np.testing.assert_array_equal(s1.images, s2.images)


def test_the_learned_variance_half_is_not_used_by_ddim(tiny_adm_checkpoint) -> None:
    api = _api(tiny_adm_checkpoint)
    labels = np.array([0, 4], dtype=np.int64)
    before = api.random(labels=labels, generator=_gen(0))
    conv = api._unet.out[2]
    assert conv.out_channels == 6  # epsilon (3) + variance interpolation (3)
    with torch.no_grad():
        conv.weight[3:] = torch.randn(conv.weight[3:].shape, generator=_gen(9)) * 100
        conv.bias[3:] = 1e3
    after = api.random(labels=labels, generator=_gen(0))
    np.testing.assert_array_equal(before.images, after.images)
    with torch.no_grad():
        conv.bias[:3] += 0.5  # the epsilon half does matter
    assert not np.array_equal(before.images, api.random(labels=labels, generator=_gen(0)).images)


def test_non_finite_outputs_are_refused(tiny_adm_checkpoint) -> None:
    from pe_lightning.apis.diffusers.base import NonFiniteOutputError

    api = _api(tiny_adm_checkpoint)
    with torch.no_grad():
        api._unet.out[2].bias[0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match="random: batch 1 of 1"):
        api.random(labels=np.array([0, 1]), generator=_gen(0))


def test_bfloat16_weights_with_float32_group_norm(tiny_adm_checkpoint) -> None:
    api = _api(tiny_adm_checkpoint, torch_dtype="bfloat16", image_size=16, channels=3)
    assert api._unet.out[2].weight.dtype == torch.bfloat16
    out = api.random(labels=np.array([0, 1]), generator=_gen(0))
    var = api.variation(images=out.images, conditions=out.conditions, labels=np.array([0, 1]), degree=1.0,
                        generator=_gen(1))
    assert out.images.shape == var.images.shape == (2, 16, 16, 3)
    reference = _api(tiny_adm_checkpoint, image_size=16, channels=3).random(labels=np.array([0, 1]), generator=_gen(0))
    assert np.abs(out.images.astype(int) - reference.images).mean() < 2  # bfloat16 rounding; another seed: ~128


def test_unconditional_model_has_no_conditions(tmp_path) -> None:
    flags = dict(TINY, class_cond=False, learn_sigma=False, rescale_timesteps=True)
    path = write_tiny_adm_checkpoint(tmp_path / "uncond.pt", flags)
    api = _api(path, model_config=flags)
    out = api.random(labels=np.array([0, 1]), generator=_gen(0))
    assert out.conditions == {} and out.images.shape == (2, 28, 28, 1)
    var = api.variation(images=out.images, conditions={}, labels=np.array([0, 1]), degree=0.5, generator=_gen(1))
    assert var.conditions == {}
    with pytest.raises(ValueError, match="imagenet_classes is only used"):
        ImprovedDiffusionAPI(preset=None, model_config=flags, checkpoint=path, imagenet_classes=[[1]])


def test_per_iteration_respacing_and_degree_validation(tiny_adm_checkpoint) -> None:
    api = _api(tiny_adm_checkpoint, timestep_respacing=["4", "ddim2", "4"])
    api.validate_degree(0.5)
    with pytest.raises(ValueError, match="no denoising step"):
        api.validate_degree(0.25)  # int(2 * 0.25) = 0 steps in iteration 1's respacing
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        api.validate_degree(1.5)
    images, conditions = _squares(2, 28, 1), {"imagenet_class": np.array([1, 2])}
    api.set_iteration(1)
    out = api.variation(images=images, conditions=conditions, labels=np.array([0, 1]), degree=0.5, generator=_gen(0))
    assert out.images.shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="timestep_respacing has 3 entries"):
        api.set_iteration(3)
    with pytest.raises(ValueError, match=r"variation_degrees\[0\]"):
        PrivateEvolution(api=api, embedding=PixelEmbedding(), iterations=2, num_samples_per_class=2,
                         variation_degrees=[0.25, 0.5], noise_multiplier=1.0)


# ---------------------------------------------------------------------------- 4. configuration and weight errors


def test_constructor_errors_name_the_field() -> None:
    cases = [
        (dict(preset="imagenet64_cond_999M"), "preset"),
        (dict(model_config={"num_chanels": 64}), "num_chanels"),
        (dict(model_config={"noise_schedule": "quadratic"}), "noise_schedule"),
        (dict(model_config={"image_size": 48}), "channel_mult"),
        (dict(model_config={"attention_resolutions": [5]}), "attention_resolutions"),
        (dict(timestep_respacing="fast"), "timestep_respacing"),
        (dict(timestep_respacing="ddim3000"), "no integer stride"),
        (dict(timestep_respacing=[]), "timestep_respacing"),
        (dict(eta=2.0), "eta"),
        (dict(clip_denoised="yes"), "clip_denoised"),
        (dict(download="no"), "download"),
        (dict(imagenet_classes=[[1000]]), "outside"),
        (dict(preset=None), "checkpoint must be given"),
        (dict(channels=2), "channels"),
        (dict(batch_size=0), "batch_size"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            ImprovedDiffusionAPI(**kwargs)


def test_weights_load_lazily_and_a_missing_file_is_explained(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    api = ImprovedDiffusionAPI()  # the 270M preset: nothing is read or allocated here
    assert api.checkpoint == "imagenet64_cond_270M_250K.pt"
    with pytest.raises(RuntimeError, match="call setup"):
        api.random(labels=np.zeros(1, np.int64), generator=_gen(0))
    with pytest.raises(FileNotFoundError) as err:
        api.setup(device="cpu")
    message = str(err.value)
    for part in ("imagenet64_cond_270M_250K.pt", "https://openaipublic.blob.core.windows.net/diffusion/march-2021/",
                 "checkpoint: /path/to/", str(tmp_path / "hub" / "checkpoints")):
        assert part in message, (part, message)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ImprovedDiffusionAPI(checkpoint=str(tmp_path / "missing.pt")).setup()
    with pytest.raises(ValueError, match="not a URL"):
        ImprovedDiffusionAPI(checkpoint="https://example.org/x.pt").setup()


def test_a_bare_name_is_found_in_the_hub_cache_and_a_wrong_architecture_is_named(tiny_adm_checkpoint, tmp_path,
                                                                                  monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    os.makedirs(tmp_path / "hub" / "checkpoints")
    shutil.copyfile(tiny_adm_checkpoint, tmp_path / "hub" / "checkpoints" / "tiny.pt")
    api = _api("tiny.pt")
    assert api.random(labels=np.array([1]), generator=_gen(0)).images.shape == (1, 28, 28, 1)
    with pytest.raises(RuntimeError, match="does not match the configured architecture") as err:
        _api("tiny.pt", model_config=dict(TINY, num_channels=64))
    assert "tiny.pt" in str(err.value) and "wrong shapes" in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        _api(str(tmp_path / "junk.pt"))


# ---------------------------------------------------------------------------- 5. the CLI
# (tests/test_shipped_configs.py runs configs/cifar10_adm.yaml and camelyon17_adm.yaml end to end on the tiny model)


def test_the_cli_parses_a_per_iteration_respacing(capsys) -> None:
    from pe_lightning.cli import main

    config = ROOT / "configs" / "camelyon17_adm.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config",
              "--model.init_args.api.init_args.timestep_respacing=[ddim10, 40, '100']"])
    assert exit_info.value.code in (0, None)
    api = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["api"]
    assert api["class_path"] == "pe_lightning.apis.ImprovedDiffusionAPI"
    assert [str(r) for r in api["init_args"]["timestep_respacing"]] == ["ddim10", "40", "100"]
    assert api["init_args"]["preset"] == "imagenet64_cond_270M"
