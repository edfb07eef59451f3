"""DrawText's on-disk glyph atlas cache: the stored atlas is the built one, bit for bit; bad files are rebuilt."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pe_lightning.apis.drawtext import DrawText
from pe_lightning.apis.drawtext.atlas import build_atlas
from pe_lightning.apis.drawtext.atlas_cache import ENV_VAR, atlas_cache_dir, load_or_build
from pe_lightning.apis.drawtext.fonts import resolve_fonts

FONT = next(p for p in resolve_fonts(None) if Path(p).name == "DejaVuSans.ttf")


def _args(font: str = FONT, texts: tuple[str, ...] = ("4", "7")) -> tuple[tuple, dict]:
    """A small atlas: one font, two texts, two stroke levels, two blur levels."""
    return ((font,), texts, "outline", (0.0, 0.08), 16, 2), dict(
        image_size=16, size_range=(0.3, 1.0), aspect_range=(0.5, 1.5), blur_range=(0.0, 1.0), num_blur_levels=2)


class _Counting:
    """``build_atlas``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs) -> dict:
        self.calls += 1
        return build_atlas(*args, **kwargs)


def _assert_same(a: dict, b: dict) -> None:
    assert a["tile"] == b["tile"]
    for name in ("tiles", "com", "box", "sigmas"):
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def _files(folder: Path) -> list[Path]:
    return sorted((folder / "glyph_atlas").glob("*.npz"))


def test_the_second_build_reads_the_first_from_disk_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    args, kwargs = _args()
    build = _Counting()
    first = load_or_build(build, *args, **kwargs)
    (stored,) = _files(tmp_path)
    again = load_or_build(build, *args, **kwargs)
    assert build.calls == 1
    _assert_same(first, build_atlas(*args, **kwargs))
    _assert_same(again, first)
    assert not list((tmp_path / "glyph_atlas").glob(".*.tmp"))  # written temp-then-rename, nothing left over
    assert stored.stat().st_size > first["tiles"].numel() * 4


def test_fonts_are_keyed_by_content_and_other_arguments_by_value(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    build = _Counting()
    args, kwargs = _args()
    load_or_build(build, *args, **kwargs)
    copy = shutil.copy(FONT, tmp_path / "renamed.ttf")  # the same font file elsewhere: the same atlas
    load_or_build(build, *_args(font=str(copy))[0], **kwargs)
    assert build.calls == 1
    load_or_build(build, *_args(texts=("4",))[0], **kwargs)  # other texts
    load_or_build(build, *args, **{**kwargs, "num_blur_levels": 3})  # another blur level count
    assert build.calls == 3 and len(_files(tmp_path / "cache")) == 3
    other_font = next(p for p in resolve_fonts(None) if Path(p).name == "DejaVuSerif.ttf")
    load_or_build(build, *_args(font=other_font)[0], **kwargs)
    assert build.calls == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_a_damaged_file_is_rebuilt_and_replaced(tmp_path, monkeypatch, damage):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    args, kwargs = _args()
    build = _Counting()
    good = load_or_build(build, *args, **kwargs)
    (path,) = _files(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # one bit inside the tiles' data: the zip member's CRC-32 no longer matches
        tiles_at = data.find(b"tiles.npy")
        data[tiles_at + 4096] ^= 0x01
    elif damage == "garbage":
        data = bytearray(b"not an atlas" * 100)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    rebuilt = load_or_build(build, *args, **kwargs)
    assert build.calls == 2
    _assert_same(rebuilt, good)
    load_or_build(build, *args, **kwargs)  # the replaced file reads back
    assert build.calls == 2


def test_an_empty_variable_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert atlas_cache_dir() is None
    build = _Counting()
    args, kwargs = _args()
    load_or_build(build, *args, **kwargs)
    load_or_build(build, *args, **kwargs)
    assert build.calls == 2 and not any(tmp_path.rglob("*.npz"))


def test_the_default_folder_is_a_public_cache_outside_the_private_side(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert atlas_cache_dir() == tmp_path / "pe_lightning_public" / "glyph_atlas"
    from pe_lightning.private_dir import default_private_dir

    monkeypatch.delenv("PE_LIGHTNING_PRIVATE_DIR", raising=False)
    assert default_private_dir() not in atlas_cache_dir().parents


def test_an_unwritable_folder_warns_and_the_run_goes_on(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(ENV_VAR, str(blocker))  # <file>/glyph_atlas cannot be created
    args, kwargs = _args()
    with pytest.warns(UserWarning, match="glyph atlas cache .* is not writable"):
        atlas = load_or_build(build_atlas, *args, **kwargs)
    _assert_same(atlas, build_atlas(*args, **kwargs))


def test_drawtext_renders_the_same_images_with_a_cold_and_a_warm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    images = []
    for _ in range(2):  # the first builds and stores the atlas, the second reads it
        api = DrawText(image_size=16, fonts=[FONT], num_stroke_levels=2, num_blur_levels=2)
        api.setup(class_names=["4", "7"])
        out = api.random(labels=np.array([0, 1] * 6, dtype=np.int64), generator=torch.Generator().manual_seed(3))
        images.append(out.images)
    assert len(_files(tmp_path)) == 1
    np.testing.assert_array_equal(images[0], images[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DrawText(image_size=16, fonts=[FONT], num_stroke_levels=2, num_blur_levels=2).setup(class_names=["4", "7"])
