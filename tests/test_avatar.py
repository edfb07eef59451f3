"""Avatar (python-avatars + resvg): deterministic renders, degree 0 changes nothing, presets per class, CLI fit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

pytest.importorskip("python_avatars")
pytest.importorskip("resvg_py")

from pe_lightning.apis import Avatar  # noqa: E402
from pe_lightning.apis.avatar import ATTRIBUTES  # noqa: E402

CLASSES = ["hats", "plain"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def api() -> Avatar:
    api = Avatar(image_size=32, class_presets={"hats": {"top": ["HIJAB", "TURBAN", "hattype.hat"], "style": ["CIRCLE"]}})
    api.setup(class_names=CLASSES)
    return api


LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_renders_are_deterministic_under_a_generator(api):
    a = api.random(labels=LABELS, generator=_gen(3))
    assert a.images.shape == (6, 32, 32, 3) and a.images.dtype == np.uint8
    assert set(a.conditions) == set(ATTRIBUTES) and all(v.dtype == np.int64 for v in a.conditions.values())
    b = api.random(labels=LABELS, generator=_gen(3))
    assert np.array_equal(a.images, b.images)
    assert all(np.array_equal(a.conditions[k], b.conditions[k]) for k in ATTRIBUTES)
    c = api.random(labels=LABELS, generator=_gen(4))
    assert not np.array_equal(a.images, c.images)
    # Rendering is a pure function of the conditions, with or without the render cache.
    fresh = Avatar(image_size=32, cache_size=0)
    assert np.array_equal(fresh.render(a.conditions), a.images)
    assert a.images.std() > 10  # not a blank canvas


def test_degree_zero_changes_nothing_and_larger_degrees_change_more(api):
    start = api.random(labels=LABELS, generator=_gen())
    same = api.variation(images=start.images, conditions=start.conditions, labels=LABELS, degree=0.0, generator=_gen(9))
    assert np.array_equal(same.images, start.images)
    assert all(np.array_equal(same.conditions[k], start.conditions[k]) for k in ATTRIBUTES)
    labels = np.zeros(150, dtype=np.int64)
    many = api.random(labels=labels, generator=_gen(1))
    changed = {}
    for degree in (0.1, 0.5, 1.0):
        out = api.variation(images=many.images, conditions=many.conditions, labels=labels, degree=degree, generator=_gen(2))
        changed[degree] = np.mean([np.mean(out.conditions[k] != many.conditions[k]) for k in ATTRIBUTES])
    assert 0 < changed[0.1] < changed[0.5] < changed[1.0]
    # Redrawn with probability `degree` (a redraw can land on the same option): at most `degree` change.
    assert changed[0.1] <= 0.1 + 0.03 and changed[0.5] <= 0.5 + 0.05


def test_class_presets_and_options_restrict_the_draws(api):
    labels = np.array([0] * 60 + [1] * 60)
    out = api.random(labels=labels, generator=_gen())
    names = api.attribute_options()
    tops = {names["top"][i] for i in out.conditions["top"][:60]}
    assert tops <= {"HIJAB", "TURBAN", "HAT"}
    assert {names["style"][i] for i in out.conditions["style"][:60]} == {"CIRCLE"}
    assert len({names["top"][i] for i in out.conditions["top"][60:]}) > 10  # "plain" is unrestricted
    # Variations of a preset class keep to its preset.
    var = api.variation(images=out.images, conditions=out.conditions, labels=labels, degree=1.0, generator=_gen(1))
    assert {names["top"][i] for i in var.conditions["top"][:60]} <= {"HIJAB", "TURBAN", "HAT"}
    gray = Avatar(image_size=24, channels=1, options={"style": ["TRANSPARENT"], "accessory": ["NONE"]})
    g = gray.random(labels=np.zeros(20, dtype=np.int64), generator=_gen())
    assert g.images.shape == (20, 24, 24, 1)
    assert set(g.conditions["style"]) == {names["style"].index("TRANSPARENT")}
    assert set(g.conditions["accessory"]) == {names["accessory"].index("NONE")}


def test_bad_inputs_are_named(api, tmp_path):
    with pytest.raises(ValueError, match=r"unknown attributes \['hair'\]"):
        Avatar(options={"hair": ["BOB"]})
    with pytest.raises(ValueError, match=r"\['top'\]: unknown option 'MULLET'"):
        Avatar(options={"top": ["MULLET"]}).setup(class_names=["a"])
    with pytest.raises(ValueError, match=r"classes \['dogs'\] that are not private classes"):
        Avatar(class_presets={"dogs": {"top": ["BOB"]}}).setup(class_names=["a"])
    with pytest.raises(ValueError, match=r"resampling probability in \[0, 1\]"):
        api.validate_degree(1.5)
    start = api.random(labels=LABELS[:2], generator=_gen())
    with pytest.raises(ValueError, match=r"missing attributes \['mouth'\]"):
        api.variation(images=start.images, conditions={k: v for k, v in start.conditions.items() if k != "mouth"},
                      labels=LABELS[:2], degree=0.5, generator=_gen())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        api.random(labels=np.array([2]), generator=_gen())


@pytest.mark.slow
def test_tiny_fit_through_python_m_with_clip_features_and_precision_recall(tmp_path, cli_worker):
    """Avatar API + CLIPEmbedding (a tiny random-weight open_clip model from a config) + PrecisionRecall."""
    pytest.importorskip("open_clip")
    private = tmp_path / "private"
    renders = Avatar(image_size=32, class_presets={"circle": {"style": ["CIRCLE"]}, "plain": {"style": ["TRANSPARENT"]}})
    renders.setup(class_names=["circle", "plain"])
    out = renders.random(labels=np.repeat([0, 1], 8), generator=_gen(42))
    for i, (img, label) in enumerate(zip(out.images, np.repeat([0, 1], 8))):
        folder = private / ["circle", "plain"][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    tiny_clip = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                                  "head_width": 16},
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    clip = {"class_path": "pe_lightning.embeddings.CLIPEmbedding",
            "init_args": {"model": "pe-test-tiny-clip", "pretrained": None, "model_config": tiny_clip}}
    out_dir = tmp_path / "out"
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2, "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path),
            "callbacks": [
                {"class_path": "pe_lightning.callbacks.PrivacyAccountant", "init_args": {"epsilon": 1.0, "delta": 1e-5}},
                {"class_path": "pe_lightning.callbacks.PrecisionRecall", "init_args": {"feature": clip, "k": 2}},
            ],
        },
        "model": {
            "class_path": "pe_lightning.PrivateEvolution",
            "init_args": {
                "iterations": 2, "num_samples_per_class": 4, "variation_degrees": [0.5, 0.2], "lookahead_degree": 2,
                "output_dir": str(out_dir), "save_png": False,
                "api": {"class_path": "pe_lightning.apis.Avatar",
                        "init_args": {"image_size": 32, "class_presets": {"circle": {"style": ["CIRCLE"]}}}},
                "embedding": clip,
            },
        },
        "data": {"class_path": "pe_lightning.data.ImageFolderDataModule",
                 "init_args": {"private_dir": str(private), "test_fraction": 0.4, "image_size": 32, "channels": 3}},
    }
    path = tmp_path / "avatar.yaml"
    path.write_text(yaml.safe_dump(config))
    private_side = Path(os.environ["PE_LIGHTNING_PRIVATE_DIR"]) / f"avatar-{tmp_path.name}"  # outside the output root
    proc = cli_worker.run(["fit", "--config", str(path)], cwd=tmp_path,  # the session's CLI process (tests/cli_worker.py)
                          env={"PE_LIGHTNING_PRIVATE_DIR": str(private_side)})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "[PE] iteration 2/2" in log
    # The precision/recall reference is carved out of the private folder (no test_dir): its values go to the
    # private side's report only, never the console (docs/privacy.md).
    assert "pr/coverage" not in log
    reports = list(private_side.glob("runs/*/metrics.json"))
    assert len(reports) == 1 and "pr/coverage" in reports[0].read_text()
    pop = np.load(out_dir / "final" / "population.npz")
    assert pop["images"].shape == (8, 32, 32, 3)
    circle = Avatar().attribute_options()["style"].index("CIRCLE")
    assert (pop["cond__style"][pop["labels"] == 0] == circle).all()
