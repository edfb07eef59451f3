"""The wire format of a served ImageAPI: npz bodies in both directions, JSON metadata.

One request is one call of the served API (``POST /random`` or ``POST /variation``); its
body is an uncompressed ``.npz`` archive (``numpy.savez``, read with ``allow_pickle=False``):

* ``labels`` int64 ``(N,)``: the class of each sample (public labels);
* ``iteration`` int64 ``()``: the PE iteration (``ImageAPI.set_iteration``);
* ``generator_state`` uint8 ``(S,)`` (the state of a CPU ``torch.Generator``: the server
  continues the caller's exact random stream) **or** ``seed`` int64 ``()`` (a fresh CPU
  generator seeded with it);
* VARIATION only: ``images`` uint8 ``(N, H, W, C)`` (synthetic images), ``degree`` float64
  ``()`` and ``condition/<key>`` arrays (first dimension ``N``).

The response body holds ``images`` uint8 ``(N, H, W, C)`` and ``condition/<key>`` arrays.
Images travel as raw uint8 bytes inside the archive (about ``N*H*W*C`` bytes plus a few
hundred bytes of headers), never as JSON lists of pixels.

``GET /metadata`` answers JSON: the protocol version, the API's class path, a fingerprint of
the served config, the image shape, the class names and the largest variation degree, so a
client can check that it talks to the model it expects.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "CALLS",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "Request",
    "config_fingerprint",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

PROTOCOL_VERSION = 1
CALLS = ("random", "variation")
_CONDITION = "condition/"
MEDIA_TYPE = "application/x-npz"


class ProtocolError(ValueError):
    """A body that is not a valid request or response of this protocol."""


@dataclass
class Request:
    """One call of a served API.

    Attributes:
        call: ``"random"`` or ``"variation"``.
        labels: int64 ``(N,)``.
        iteration: the PE iteration the call belongs to.
        seed: seed of a fresh CPU generator (``None`` when ``generator_state`` is given).
        generator_state: uint8 state of a CPU ``torch.Generator`` (``None`` when ``seed`` is given).
        images: VARIATION's uint8 ``(N, H, W, C)`` inputs.
        conditions: VARIATION's input conditions (first dimension ``N``).
        degree: VARIATION's degree.
    """

    call: str
    labels: np.ndarray
    iteration: int = 0
    seed: int | None = None
    generator_state: np.ndarray | None = None
    images: np.ndarray | None = None
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    degree: float | None = None

    def __post_init__(self) -> None:
        if self.call not in CALLS:
            raise ProtocolError(f"call must be one of {CALLS}, got {self.call!r}")
        if (self.seed is None) == (self.generator_state is None):
            raise ProtocolError("a request carries exactly one of 'seed' and 'generator_state'")
        if self.call == "variation" and (self.images is None or self.degree is None):
            raise ProtocolError("a variation request needs 'images' and 'degree'")

    def __len__(self) -> int:
        return int(len(self.labels))


def _savez(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _loadz(body: bytes, *, what: str) -> dict[str, np.ndarray]:
    if not isinstance(body, (bytes, bytearray)) or not body:
        raise ProtocolError(f"{what} is empty or not bytes")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ProtocolError(f"{what} is not an npz archive ({type(err).__name__}: {err})") from None


def _conditions_of(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len(_CONDITION):]: v for k, v in arrays.items() if k.startswith(_CONDITION)}


def encode_request(request: Request) -> bytes:
    """The npz body of ``request``."""
    arrays: dict[str, np.ndarray] = {
        "labels": np.asarray(request.labels, dtype=np.int64),
        "iteration": np.asarray(int(request.iteration), dtype=np.int64),
    }
    if request.seed is not None:
        arrays["seed"] = np.asarray(int(request.seed), dtype=np.int64)
    else:
        arrays["generator_state"] = np.asarray(request.generator_state, dtype=np.uint8)
    if request.call == "variation":
        arrays["images"] = np.ascontiguousarray(request.images)
        arrays["degree"] = np.asarray(float(request.degree), dtype=np.float64)
        arrays.update({_CONDITION + k: np.asarray(v) for k, v in request.conditions.items()})
    return _savez(arrays)


def _scalar(arrays: Mapping[str, np.ndarray], key: str, kind: type) -> Any:
    value = arrays[key]
    if value.shape != () or not np.issubdtype(value.dtype, np.integer if kind is int else np.floating):
        raise ProtocolError(f"request field {key!r} must be a {kind.__name__} scalar, got dtype {value.dtype} shape {value.shape}")
    return kind(value)


def decode_request(call: str, body: bytes) -> Request:
    """Parse the npz ``body`` of a ``call`` request.

    Raises:
        ProtocolError: not an npz archive, a missing or malformed field (named).
    """
    arrays = _loadz(body, what=f"the {call} request body")
    required = ["labels", "iteration"] + (["images", "degree"] if call == "variation" else [])
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ProtocolError(f"the {call} request lacks the fields {missing} (has {sorted(arrays)})")
    labels = arrays["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ProtocolError(f"request field 'labels' must be an integer array (N,), got dtype {labels.dtype} shape {labels.shape}")
    state = arrays.get("generator_state")
    if state is not None and (state.dtype != np.uint8 or state.ndim != 1):
        raise ProtocolError(f"request field 'generator_state' must be uint8 (S,), got dtype {state.dtype} shape {state.shape}")
    images = arrays.get("images") if call == "variation" else None
    if images is not None and (images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels)):
        raise ProtocolError(
            f"request field 'images' must be uint8 ({len(labels)}, H, W, C), got dtype {images.dtype} shape {images.shape}"
        )
    return Request(
        call=call,
        labels=labels.astype(np.int64),
        iteration=_scalar(arrays, "iteration", int),
        seed=_scalar(arrays, "seed", int) if "seed" in arrays else None,
        generator_state=state,
        images=images,
        conditions=_conditions_of(arrays) if call == "variation" else {},
        degree=_scalar(arrays, "degree", float) if call == "variation" else None,
    )


def encode_response(images: np.ndarray, conditions: Mapping[str, np.ndarray]) -> bytes:
    """The npz body of an API output."""
    return _savez({"images": np.ascontiguousarray(images), **{_CONDITION + k: np.asarray(v) for k, v in conditions.items()}})


def decode_response(body: bytes, *, n: int, image_shape: Sequence[int] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images and conditions of a response to a request of ``n`` samples.

    Raises:
        ProtocolError: not an npz archive, no ``images``, images that are not uint8
            ``(n, *image_shape)``, a condition whose first dimension is not ``n``.
    """
    arrays = _loadz(body, what="the response body")
    if "images" not in arrays:
        raise ProtocolError(f"the response has no 'images' (fields: {sorted(arrays)})")
    images = arrays["images"]
    expected = (n, *image_shape) if image_shape is not None else None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n or (expected and images.shape != expected):
        want = f"({', '.join(map(str, expected))})" if expected else f"({n}, H, W, C)"
        raise ProtocolError(f"the response's images must be uint8 {want}, got dtype {images.dtype} shape {images.shape}")
    conditions = _conditions_of(arrays)
    for key, value in conditions.items():
        if value.shape[:1] != (n,):
            raise ProtocolError(f"the response's condition {key!r} must have first dimension {n}, got shape {value.shape}")
    return images, conditions


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A 16-hex-digit fingerprint of a served API's config (class path, init args, class names)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
