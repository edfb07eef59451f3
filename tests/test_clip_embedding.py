"""CLIPEmbedding (open_clip): tiny random-weight models from a config, local copies, offline errors, preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from pe_lightning.embeddings import CLIPEmbedding, Embedding  # noqa: E402

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def _images(n: int, h: int = 28, w: int = 28, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _tiny(**kw) -> CLIPEmbedding:
    return CLIPEmbedding(model="pe-tiny-clip", pretrained=None, model_config=TINY, **kw)


def test_tiny_model_from_a_config_is_lazy_unit_normed_and_deterministic():
    emb = _tiny()
    assert isinstance(emb, Embedding) and emb._net is None  # nothing built in __init__
    assert emb.dim == 16 and emb._net is None  # known from the config without building
    out = emb.embed(_images(5))
    assert out.shape == (5, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    # The random weights come from init_seed (not the global RNG): the same function in every run.
    torch.manual_seed(123)
    again = _tiny().embed(_images(5))
    torch.testing.assert_close(again, out)
    assert _tiny().fingerprint == emb.fingerprint
    other = _tiny(init_seed=1)
    assert other.fingerprint != emb.fingerprint and not torch.allclose(other.embed(_images(5)), out)
    raw = _tiny(normalize=False).embed(_images(5))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), out)
    torch.testing.assert_close(emb.embed(_images(5), batch_size=2), out)


def test_grayscale_is_replicated_and_preprocessing_matches_open_clips_transform():
    emb = _tiny()
    gray = _images(3, c=1)
    torch.testing.assert_close(emb.embed(gray), emb.embed(np.repeat(gray, 3, axis=3)))
    # Non-square input: resized, cropped or padded and normalised as open_clip's PIL transform does.
    from PIL import Image

    rows, cols = np.mgrid[0:40, 0:56]
    smooth = np.stack([127 + 120 * np.sin(rows / 6 + k) * np.cos(cols / 9 - k) for k in range(3)], axis=-1)
    imgs = np.stack([smooth, smooth[::-1]]).round().astype(np.uint8)  # (2, 40, 56, 3)
    emb.embed(imgs[:1])
    cfg = emb._preprocess
    for mode in ("shortest", "longest", "squash"):
        cfg["resize_mode"] = mode
        ours = emb._pixels(torch.from_numpy(imgs))
        transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                              resize_mode=mode, interpolation=cfg["interpolation"])
        theirs = torch.stack([transform(Image.fromarray(x)) for x in imgs])
        assert ours.shape == theirs.shape == (2, 3, 32, 32)
        assert (ours - theirs).abs().max() < 0.05, mode  # torch vs PIL bicubic resampling differ slightly


def test_local_copies_give_the_same_features(tmp_path):
    emb = _tiny()
    expected = emb.embed(_images(4))
    weights = tmp_path / "weights.pt"
    torch.save(emb._net.state_dict(), weights)
    # A checkpoint file as `pretrained` for a named architecture ...
    from_file = CLIPEmbedding(model="pe-tiny-clip", pretrained=str(weights), model_config=TINY, init_seed=7)
    torch.testing.assert_close(from_file.embed(_images(4)), expected)
    # ... or a local folder with open_clip_config.json and the weights.
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    torch.save(emb._net.state_dict(), folder / "open_clip_pytorch_model.bin")
    local = CLIPEmbedding(model=f"local-dir:{folder}", pretrained=None)
    torch.testing.assert_close(local.embed(_images(4)), expected)
    assert local.dim == 16


def test_missing_weights_offline_name_the_model_and_the_local_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = CLIPEmbedding(model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    with pytest.raises(RuntimeError) as info:
        emb.setup()
    msg = str(info.value)
    assert "ViT-B-32" in msg and "'openai'" in msg
    assert "hf download timm/vit_base_patch32_clip_224.openai" in msg
    assert "pretrained: /path/to/open_clip_pytorch_model.bin" in msg and "local-dir:" in msg


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: CLIPEmbedding(model="ViT-Q-99", pretrained=None).setup(), ValueError, "not an open_clip architecture"),
        (lambda: CLIPEmbedding(model="ViT-B-32", pretrained="no-such-tag").setup(), ValueError,
         "neither a tag of model 'ViT-B-32'"),
        (lambda: CLIPEmbedding(model="local-dir:/no/such/dir", pretrained=None).setup(), FileNotFoundError,
         "open_clip_config.json"),
        (lambda: CLIPEmbedding(model="hf-hub:org/repo"), ValueError, "pretrained: null"),
        (lambda: CLIPEmbedding(model="x", model_config={"embed_dim": 4}), ValueError, "model_config must be a dict"),
        (lambda: CLIPEmbedding(model="ViT-B-32", pretrained=None, model_config=TINY).setup(), ValueError,
         "already has an architecture named 'ViT-B-32'"),
        (lambda: CLIPEmbedding(precision="int8"), ValueError, "precision"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()
