"""Avatar: cartoon avatars from ``python-avatars`` as a weight-free simulator (as in Sim-PE).

Each sample is one choice per attribute of ``python_avatars.Avatar`` (style, top / hair,
eyes, mouth, skin colour, clothing, ...), kept as int64 API conditions (the option's index in
:meth:`Avatar.attribute_options`). RANDOM draws every attribute uniformly from its allowed
options (``facial_hair`` and ``accessory`` are ``NONE`` half of the time, as in
python-avatars' own random avatars). VARIATION redraws each attribute of each sample
independently **with probability equal to the degree** (in ``[0, 1]``), so degree 0 changes
nothing and degree 1 is a fresh RANDOM draw.

The SVG from python-avatars is rasterised offline with ``resvg`` (the ``resvg-py`` wheel,
no system library), ``image_size`` pixels high, centred on a square canvas of
``background`` colour. Rendering is deterministic; recent renders are cached. Both packages
are optional: ``pip install "pe_lightning[avatars]"``.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from pe_lightning.apis.base import APIOutput, ImageAPI, check_api_labels

__all__ = ["ATTRIBUTES", "Avatar"]

#: ``(attribute, python_avatars enum)`` in condition order.
_ENUMS: tuple[tuple[str, str], ...] = (
    ("style", "AvatarStyle"),
    ("background_color", "BackgroundColor"),
    ("top", "TopType"),
    ("hat_color", "ClothingColor"),
    ("eyebrows", "EyebrowType"),
    ("eyes", "EyeType"),
    ("nose", "NoseType"),
    ("mouth", "MouthType"),
    ("facial_hair", "FacialHairType"),
    ("skin_color", "SkinColor"),
    ("hair_color", "HairColor"),
    ("facial_hair_color", "HairColor"),
    ("accessory", "AccessoryType"),
    ("clothing", "ClothingType"),
    ("clothing_color", "ClothingColor"),
    ("shirt_graphic", "ClothingGraphic"),
)
#: The attributes of an avatar, the keys of its API conditions.
ATTRIBUTES: tuple[str, ...] = tuple(name for name, _ in _ENUMS)
#: Attributes whose RANDOM draw is this option with probability 1/2 (python-avatars' ``favor``).
_FAVOURED = {"facial_hair": "NONE", "accessory": "NONE"}


def _packages():
    """Import python_avatars and resvg_py, or raise an ImportError with the install hint."""
    try:
        import python_avatars  # noqa: PLC0415
        import resvg_py  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            "the Avatar API needs python-avatars and resvg-py: pip install 'pe_lightning[avatars]' "
            "(or pip install python-avatars resvg-py)"
        ) from err
    return python_avatars, resvg_py


def _option_name(member) -> str:
    return f"{type(member).__name__}.{member.name}"


def _check_option_lists(where: str, table) -> dict[str, list[str]]:
    """``{attribute: [option names]}`` with known attributes and non-empty string lists."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a mapping attribute -> list of option names, got {type(table).__name__}")
    unknown = sorted(set(table) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"{where} has unknown attributes {unknown}; attributes are {list(ATTRIBUTES)}")
    out = {}
    for attribute, names in table.items():
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{where}[{attribute!r}] must be a non-empty list of option names, got {names!r}")
        out[attribute] = list(names)
    return out


class Avatar(ImageAPI):
    """RANDOM and VARIATION APIs over python-avatars' cartoon avatars (see the module docstring).

    Args:
        image_size: output side, pixels.
        channels: 3 (RGB) or 1 (grayscale).
        options: restricts the options of attributes for every class, e.g.
            ``{"style": ["CIRCLE"]}``. Option names are the python-avatars enum member
            names (case-insensitive; ``"HatType.HAT"`` picks one of equal names), see
            :meth:`attribute_options`.
        class_presets: per private class name, attribute options that replace ``options``
            for that class, e.g. ``{"smiling": {"mouth": ["SMILE", "TWINKLE"]}}``.
        background: canvas colour (CSS colour) behind the avatar.
        shirt_text: the text of the ``CUSTOM_TEXT`` shirt graphic.
        cache_size: renders kept (by attribute tuple); 0 disables the cache.
    """

    max_degree: float = 1.0

    def __init__(
        self,
        *,
        image_size: int = 64,
        channels: int = 3,
        options: dict[str, list[str]] | None = None,
        class_presets: dict[str, dict[str, list[str]]] | None = None,
        background: str = "#ffffff",
        shirt_text: str = "PE",
        cache_size: int = 4096,
    ) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"Avatar image_size must be an int >= 8, got {image_size!r}")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"Avatar channels must be 1 or 3, got {channels!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"Avatar cache_size must be an int >= 0, got {cache_size!r}")
        if not isinstance(background, str) or not background:
            raise ValueError(f"Avatar background must be a CSS colour string, got {background!r}")
        self.options = _check_option_lists("Avatar options", options or {})
        if class_presets is not None and not isinstance(class_presets, dict):
            raise ValueError(f"Avatar class_presets must map class names to option tables, got {class_presets!r}")
        self.class_presets = {
            str(name): _check_option_lists(f"Avatar class_presets[{name!r}]", table)
            for name, table in (class_presets or {}).items()
        }
        self.image_size = image_size
        self.channels = channels
        self.image_shape = (image_size, image_size, channels)
        self.background = background
        self.shirt_text = str(shirt_text)
        self.cache_size = cache_size
        self.class_names: list[str] | None = None
        self._members: dict[str, list] | None = None  # attribute -> python-avatars enum members
        self._allowed: list[dict[str, np.ndarray]] | None = None  # per class: attribute -> option indices
        self._renders: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ options

    def attribute_options(self) -> dict[str, list[str]]:
        """Every attribute's option names, in condition-index order (needs python-avatars)."""
        return {attribute: [m.name for m in members] for attribute, members in self._tables().items()}

    def _tables(self) -> dict[str, list]:
        if self._members is None:
            pa, _ = _packages()
            self._members = {attribute: list(getattr(pa, enum).get_all()) for attribute, enum in _ENUMS}
        return self._members

    def _indices(self, where: str, attribute: str, names: list[str]) -> np.ndarray:
        members = self._tables()[attribute]
        chosen = []
        for name in names:
            hits = [i for i, m in enumerate(members) if name.upper() in (m.name, _option_name(m).upper())]
            if not hits:
                raise ValueError(f"{where}[{attribute!r}]: unknown option {name!r}; options are "
                                 f"{sorted({m.name for m in members})}")
            chosen.extend(hits)
        return np.unique(np.asarray(chosen, dtype=np.int64))

    def _allowed_for(self, preset: dict[str, list[str]] | None, where: str) -> dict[str, np.ndarray]:
        table = {**self.options, **(preset or {})}
        return {
            attribute: self._indices(where, attribute, table[attribute]) if attribute in table
            else np.arange(len(members), dtype=np.int64)
            for attribute, members in self._tables().items()
        }

    def setup(self, *, device: torch.device | str = "cpu", class_names: Sequence[str] | None = None) -> None:
        """Check the packages, resolve the option names and the per-class presets (rendering is on the CPU).

        Raises:
            ImportError: python-avatars or resvg-py missing (with the install hint).
            ValueError: an unknown option name, or a preset for a class that is not a private class.
        """
        _packages()
        if class_names is not None:
            self.class_names = [str(c) for c in class_names]
        names = self.class_names or []
        unknown = sorted(set(self.class_presets) - set(names))
        if unknown:
            raise ValueError(f"Avatar class_presets name classes {unknown} that are not private classes {names}")
        self._allowed = [
            self._allowed_for(self.class_presets.get(name), f"Avatar class_presets[{name!r}]" if name in self.class_presets
                              else "Avatar options")
            for name in names
        ] or [self._allowed_for(None, "Avatar options")]

    def validate_degree(self, degree: float) -> None:
        """Raise ``ValueError`` unless ``degree`` (a resampling probability) is in ``[0, 1]``."""
        try:
            value = float(degree)
        except (TypeError, ValueError):
            raise ValueError(f"Avatar variation degree must be a number, got {degree!r}") from None
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"Avatar variation degree is a resampling probability in [0, 1], got {degree!r}")

    # ------------------------------------------------------------------ APIs

    def check_labels(self, labels: np.ndarray, n: int | None = None) -> np.ndarray:
        """Labels in ``[0, len(class_names))`` (``>= 0`` without class names); sets the API up on first use."""
        if self._allowed is None:
            self.setup(class_names=self.class_names)
        limit = len(self._allowed) if self.class_names else None
        return check_api_labels(labels, n=n, limit=limit, what=f"the private classes {self.class_names}")

    def _draw(self, labels: np.ndarray, generator: torch.Generator) -> dict[str, np.ndarray]:
        """A RANDOM choice of every attribute of every sample (two uniforms per attribute and sample)."""
        n = len(labels)
        u = torch.rand((2, len(ATTRIBUTES), n), generator=generator, dtype=torch.float64, device=generator.device)
        pick, coin = u.cpu().numpy()
        members = self._tables()
        out = {attribute: np.empty(n, dtype=np.int64) for attribute in ATTRIBUTES}
        for c in np.unique(labels):
            rows = np.nonzero(labels == c)[0]
            allowed = self._allowed[int(c) if self.class_names else 0]
            for a, attribute in enumerate(ATTRIBUTES):
                options = allowed[attribute]
                value = options[np.minimum((pick[a, rows] * len(options)).astype(np.int64), len(options) - 1)]
                favoured = [i for i in options if members[attribute][i].name == _FAVOURED.get(attribute)]
                if favoured:
                    value = np.where(coin[a, rows] < 0.5, favoured[0], value)
                out[attribute][rows] = value
        return out

    def _random(self, *, labels: np.ndarray, generator: torch.Generator) -> APIOutput:
        """RANDOM_API: draw every attribute from the sample's class options and render.

        Args:
            labels: int64 ``(N,)`` private class of each sample.
            generator: the only source of randomness.

        Returns:
            uint8 ``(N, image_size, image_size, channels)`` and one int64 ``(N,)`` condition per attribute.
        """
        conditions = self._draw(labels, generator)
        return APIOutput(images=self.render(conditions), conditions=conditions)

    def _variation(
        self, *, images: np.ndarray, conditions: dict[str, np.ndarray], labels: np.ndarray, degree: float,
        generator: torch.Generator,
    ) -> APIOutput:
        """VARIATION_API: redraw each attribute with probability ``degree`` and render (checked by :meth:`ImageAPI.variation`).

        Args:
            images: uint8 ``(N, image_size, image_size, channels)``; only the shape is used.
            conditions: one int64 ``(N,)`` array per attribute (as returned by RANDOM).
            labels: int64 ``(N,)`` private class of each input.
            degree: resampling probability in ``[0, 1]``.
            generator: the only source of randomness.

        Returns:
            ``N`` images and their conditions, in input order.
        """
        n = images.shape[0]
        old = self._check_conditions(conditions, n)
        fresh = self._draw(labels, generator)
        redraw = torch.rand((len(ATTRIBUTES), n), generator=generator, dtype=torch.float64,
                            device=generator.device).cpu().numpy() < float(degree)
        new = {attribute: np.where(redraw[a], fresh[attribute], old[attribute]) for a, attribute in enumerate(ATTRIBUTES)}
        return APIOutput(images=self.render(new), conditions=new)

    def _check_conditions(self, conditions: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        if not isinstance(conditions, dict):
            raise ValueError(f"conditions must be a dict of arrays, got {type(conditions).__name__}")
        missing = [a for a in ATTRIBUTES if a not in conditions]
        if missing:
            raise ValueError(f"conditions are missing attributes {missing} (Avatar needs {list(ATTRIBUTES)})")
        out = {}
        for attribute, members in self._tables().items():
            value = np.asarray(conditions[attribute])
            if value.shape != (n,) or (value.size and not np.issubdtype(value.dtype, np.integer)):
                raise ValueError(f"conditions[{attribute!r}] must be an integer array of shape ({n},), "
                                 f"got {value.dtype} {value.shape}")
            if value.size and (value.min() < 0 or value.max() >= len(members)):
                raise ValueError(f"conditions[{attribute!r}] must lie in [0, {len(members)}), "
                                 f"got min {value.min()} max {value.max()}")
            out[attribute] = value.astype(np.int64)
        return out

    # ------------------------------------------------------------------ rendering

    def render(self, conditions: dict[str, np.ndarray]) -> np.ndarray:
        """Render avatars from conditions (deterministic; no randomness).

        Args:
            conditions: one int64 ``(N,)`` option index per attribute.

        Returns:
            uint8 ``(N, image_size, image_size, channels)``.
        """
        n = len(np.asarray(conditions.get(ATTRIBUTES[0], ()))) if isinstance(conditions, dict) else -1
        values = self._check_conditions(conditions, n)
        out = np.empty((n, *self.image_shape), dtype=np.uint8)
        stacked = np.stack([values[a] for a in ATTRIBUTES], axis=1) if n else np.empty((0, len(ATTRIBUTES)), np.int64)
        for i, row in enumerate(stacked):
            key = tuple(int(v) for v in row)
            image = self._renders.get(key)
            if image is None:
                image = self._render_one(key)
                if self.cache_size:
                    self._renders[key] = image
                    if len(self._renders) > self.cache_size:
                        self._renders.popitem(last=False)
            else:
                self._renders.move_to_end(key)
            out[i] = image
        return out

    def _render_one(self, key: tuple[int, ...]) -> np.ndarray:
        from PIL import Image  # noqa: PLC0415

        pa, resvg_py = _packages()
        tables = self._tables()
        parts = {attribute: tables[attribute][index] for attribute, index in zip(ATTRIBUTES, key)}
        svg = pa.Avatar(**parts, shirt_text=self.shirt_text).render()
        png = resvg_py.svg_to_bytes(svg_string=svg, background=self.background, height=self.image_size)
        with Image.open(io.BytesIO(bytes(png))) as drawn:
            drawn = drawn.convert("RGB")
            canvas = Image.new("RGB", (self.image_size, self.image_size), self.background)
            canvas.paste(drawn, ((self.image_size - drawn.width) // 2, (self.image_size - drawn.height) // 2))
        image = np.asarray(canvas.convert("L" if self.channels == 1 else "RGB"), dtype=np.uint8)
        image = image[..., None] if image.ndim == 2 else image
        image.setflags(write=False)
        return image
