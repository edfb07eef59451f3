"""DrawText's glyph atlas kept on disk between runs (start-up, issue 25).

Building the atlas of the demo (12 fonts x 10 digits x 8 stroke levels x 5 blur levels) takes
about 2.8 CPU seconds, most of it the Gaussian blur levels, at iteration 0 of every run; reading
it back takes about 0.1 s. :func:`load_or_build` keeps each atlas in one uncompressed ``.npz``
file (about 110 MB for the demo) named by the SHA-256 of everything the atlas depends on: the
font files' contents, the texts, every size/stroke/blur argument of :func:`build_atlas`, the
source of :mod:`pe_lightning.apis.drawtext.atlas` and the versions of torch, numpy, scipy, Pillow
and FreeType. The stored atlas is the built one, bit for bit (so runs do not depend on whether
the file existed). Files are written temp-then-rename; a file that cannot be read, whose zip
checksums fail, or whose stored key differs is rebuilt and replaced; a folder that cannot be
written is warned about once and the run goes on with the built atlas.

Privacy: the atlas is rendered from public inputs only (font files and the texts to draw, i.e.
the configuration's class names or ``texts``); nothing in it comes from private images, so the
folder is a public cache, outside the private side.

Where: ``$PE_LIGHTNING_CACHE_DIR/glyph_atlas`` when that variable is set (set it to an empty
string to turn the cache off), else ``$XDG_CACHE_HOME/pe_lightning_public/glyph_atlas``
(``~/.cache/pe_lightning_public/glyph_atlas`` when unset). Delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pe_lightning.atomic import atomic_write

__all__ = ["ENV_VAR", "atlas_cache_dir", "load_or_build"]

ENV_VAR = "PE_LIGHTNING_CACHE_DIR"
_FORMAT = 1
_ARRAYS = ("tiles", "com", "box", "sigmas")
_warned: set[str] = set()


def atlas_cache_dir() -> Optional[Path]:
    """The atlas folder (see the module docstring), or ``None`` when ``$PE_LIGHTNING_CACHE_DIR`` is empty."""
    explicit = os.environ.get(ENV_VAR)
    if explicit is not None:
        return Path(explicit).expanduser() / "glyph_atlas" if explicit else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pe_lightning_public" / "glyph_atlas"


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import PIL
    import scipy
    from PIL import features

    return {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__, "PIL": PIL.__version__,
            "freetype": str(features.version("freetype2"))}


def _key(args: tuple, kwargs: dict) -> str:
    """The JSON text of everything the atlas depends on (fonts by content, not by path)."""
    from pe_lightning.apis.drawtext import atlas

    font_paths, *rest = args
    return json.dumps({
        "format": _FORMAT,
        "code": hashlib.sha256(Path(atlas.__file__).read_bytes()).hexdigest(),
        "versions": _versions(),
        "fonts": [_file_digest(p) for p in font_paths],
        "args": [list(a) if isinstance(a, tuple) else a for a in rest],
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(kwargs.items())},
    }, sort_keys=True)


def _read(path: Path, key: str) -> Optional[dict]:
    """The atlas stored at ``path`` when it is complete, intact and made for ``key``; else ``None``."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            arrays = {name: stored[name] for name in _ARRAYS}  # zipfile checks each member's CRC-32
            tile = int(stored["tile"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    tiles = arrays["tiles"]
    if tiles.dtype != np.float32 or tiles.ndim != 4 or tiles.shape[1:] != (1, tile, tile):
        return None
    return {**{name: torch.from_numpy(array) for name, array in arrays.items()}, "tile": tile}


def _write(path: Path, key: str, atlas: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), tile=np.array(atlas["tile"]),
                     **{name: atlas[name].cpu().numpy() for name in _ARRAYS})

    try:
        atomic_write(path, write)
    except OSError as err:
        if str(path.parent) not in _warned:
            _warned.add(str(path.parent))
            warnings.warn(f"DrawText: the glyph atlas cache {str(path.parent)!r} is not writable ({err}); each run "
                          f"builds the atlas again (set {ENV_VAR} to a writable folder, or to '' to turn it off)",
                          stacklevel=3)


def load_or_build(build: Callable[..., dict], *args, **kwargs) -> dict:
    """``build(*args, **kwargs)`` (:func:`~pe_lightning.apis.drawtext.atlas.build_atlas`), read from the cache when there.

    Args:
        build: the atlas builder; its ``args[0]`` are the font paths.
        *args, **kwargs: its arguments (the cache key, with the font files' contents).

    Returns:
        The atlas, on the CPU, equal bit for bit to ``build(*args, **kwargs)``.
    """
    folder = atlas_cache_dir()
    if folder is None:
        return build(*args, **kwargs)
    key = _key(args, kwargs)
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"
    if path.is_file():
        stored = _read(path, key)
        if stored is not None:
            return stored
    atlas = build(*args, **kwargs)
    _write(path, key, atlas)
    return atlas
