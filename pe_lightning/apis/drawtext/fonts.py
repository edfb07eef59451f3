"""DrawText's font discovery: which font files a ``fonts`` argument names.

``fonts=None`` means the DejaVu TrueType fonts shipped with matplotlib (not the "Display"
variants); otherwise files and folders (searched recursively for .ttf/.otf/.ttc files)
are expanded into a sorted, de-duplicated list. The index of a file in that list is the
``font`` API condition.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

__all__ = ["resolve_fonts"]

_FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")


def _default_fonts() -> list[str]:
    """The DejaVu TrueType fonts shipped with matplotlib, without the "Display" variants."""
    import matplotlib

    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = sorted(p for p in glob.glob(os.path.join(root, "DejaVu*.ttf")) if "Display" not in os.path.basename(p))
    if not paths:
        raise ValueError(f"fonts=None but no DejaVu*.ttf fonts were found in matplotlib's data folder {root}")
    return paths


def resolve_fonts(fonts: Sequence[str] | None) -> list[str]:
    """Expand font files and folders into a sorted, de-duplicated list of font files."""
    if fonts is None:
        return _default_fonts()
    out: list[str] = []
    for entry in fonts:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"fonts entries must be non-empty path strings, got {entry!r}")
        path = os.path.expanduser(entry)
        if os.path.isdir(path):
            found = sorted(
                os.path.join(dirpath, name)
                for dirpath, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(_FONT_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"fonts: folder {entry!r} contains no .ttf/.otf/.ttc font files")
            out.extend(found)
        elif os.path.isfile(path):
            if not path.lower().endswith(_FONT_EXTENSIONS):
                raise ValueError(f"fonts: {entry!r} is not a .ttf/.otf/.ttc font file")
            out.append(path)
        else:
            raise ValueError(f"fonts: font path {entry!r} does not exist")
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
