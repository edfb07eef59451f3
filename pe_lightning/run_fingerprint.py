"""What a run's privacy ledger depends on, recorded in its checkpoints and checked on resume.

A checkpoint's ledger accounts for releases computed from one private set, with one population
size schedule, privacy unit, embedding and API. :func:`run_fingerprint` records those as
public configuration only: each object's class and the constructor arguments it keeps under
the same name (:func:`public_description`); nothing computed from the private data (no hash,
no count). :func:`check_resume` refuses a resume whose configuration differs, naming the
field (``data.num_private``), unless the run is told to accept it; what was accepted is then
written in the ledger's notes (:meth:`pe_lightning.privacy.PrivacyLedger.add_note`).
"""

from __future__ import annotations

import inspect
import os
from pathlib import PurePath
from typing import Any, Iterable

__all__ = [
    "FIELDS", "ResumeMismatchError", "check_resume", "differences", "note_accepted_changes", "public_description", "run_fingerprint",
]

#: The recorded fields, in the order they are checked.
FIELDS = ("data", "num_samples", "privacy_unit", "embedding", "api")

#: Constructor arguments that change how a run computes, never what it computes from or releases.
_NOT_RECORDED = frozenset({"batch_size", "api_batch_size", "embedding_batch_size", "device", "download", "cache_dir",
                           "num_workers", "verbose",
                           # how an API behind HTTP is reached (RemoteImageAPI, HostedImageAPI), not which model answers
                           "timeout_s", "connect_timeout_s", "retries", "backoff_s", "cooldown_s", "max_concurrency",
                           "response_cache", "api_key_env", "max_images"})


class ResumeMismatchError(ValueError):
    """The checkpoint was written by a run with another data set or configuration."""


def _plain(value: Any, depth: int) -> Any:
    """``value`` as JSON-ready data; ``...`` for what cannot be recorded (arrays, tensors, deep objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth) for v in value]
        return ... if any(v is ... for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v, depth) for k, v in value.items()}
        return ... if any(v is ... for v in items.values()) else items
    if depth > 0 and not isinstance(value, type) and type(value).__module__ not in ("builtins", "numpy", "torch"):
        return public_description(value, depth=depth - 1)
    return ...


def public_description(obj: Any, *, depth: int = 2) -> dict[str, Any]:
    """``obj``'s class and the constructor arguments it keeps as attributes of the same name.

    Arguments it does not keep, or whose value is not plain data (arrays, tensors), are left
    out, as are those that only change how a run computes (batch sizes, devices, caches).
    Only configuration is read, never data.

    Args:
        obj: a data module, an API, an embedding.
        depth: how deep nested objects (an API's embedding, say) are described.

    Returns:
        ``{"class": "module.QualName", "args": {...}}``.
    """
    cls = type(obj)
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    args = {}
    for name, param in params.items():
        if name == "self" or name in _NOT_RECORDED or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in vars(obj):
            value = _plain(vars(obj)[name], depth)
            if value is not ...:
                args[name] = value
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "args": args}


def run_fingerprint(*, datamodule: Any, api: Any, embedding: Any, num_samples: dict[str, Any], privacy_unit: str) -> dict[str, Any]:
    """The public record of what a run's ledger depends on (one entry per :data:`FIELDS`).

    Args:
        datamodule: the private data module (its public description: class and arguments).
        api: the foundation-model API.
        embedding: the voting embedding (class and :meth:`~pe_lightning.embeddings.Embedding.config`).
        num_samples: the configured population sizes (per class or the schedule), as configured.
        privacy_unit: ``"sample"`` or ``"client"``.
    """
    emb = {"class": f"{type(embedding).__module__}.{type(embedding).__qualname__}"}
    config = getattr(embedding, "config", None)
    emb["args"] = _plain(config(), 2) if callable(config) else public_description(embedding)["args"]
    return {
        "data": public_description(datamodule),
        "num_samples": _plain(num_samples, 2),
        "privacy_unit": privacy_unit,
        "embedding": emb,
        "api": public_description(api),
    }


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves of nested dicts by dotted name; an ``args`` level adds no name (``data.num_private``)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, prefix if key == "args" else f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted field, recorded value, current value)`` for every leaf that differs (``"<unset>"`` where absent)."""
    old, new = _flatten(recorded, ""), _flatten(current, "")
    names = list(old) + [k for k in new if k not in old]
    return [(n, old.get(n, "<unset>"), new.get(n, "<unset>")) for n in names if old.get(n, "<unset>") != new.get(n, "<unset>")]


def check_resume(recorded: dict[str, Any] | None, current: dict[str, Any], *, accept_changes: bool) -> list[str]:
    """Refuse a resume whose run fingerprint differs from the checkpoint's, naming the fields.

    Args:
        recorded: the checkpoint's fingerprint (``None``: written before fingerprints were recorded).
        current: this run's (:func:`run_fingerprint`).
        accept_changes: accept the differences instead (the caller notes them in the ledger).

    Returns:
        One line per accepted difference (empty when nothing differs).

    Raises:
        ResumeMismatchError: a field differs and ``accept_changes`` is false.
    """
    if recorded is None:
        return []
    found = differences({k: recorded.get(k, "<unset>") for k in FIELDS}, {k: current.get(k) for k in FIELDS})
    lines = [f"{field}: checkpoint {old!r}, this run {new!r}" for field, old, new in found]
    if lines and not accept_changes:
        fields = ", ".join(field for field, _, _ in found)
        raise ResumeMismatchError(
            f"the checkpoint was written by a run with a different {fields} ({'; '.join(lines)}): its privacy ledger "
            "accounts for releases computed from that configuration. Resume with the same configuration, start a new "
            "run, or set --model.init_args.accept_changed_resume=true to resume anyway (recorded in the ledger's notes)"
        )
    return lines


def note_accepted_changes(callbacks: Iterable[Any], lines: list[str]) -> int:
    """Add one note per accepted difference to the ledger of every callback that keeps one (the accountant).

    Returns:
        How many ledgers were noted.
    """
    from pe_lightning.privacy import PrivacyLedger

    ledgers = [cb.ledger for cb in callbacks if isinstance(getattr(cb, "ledger", None), PrivacyLedger)]
    for ledger in ledgers:
        for line in lines:
            ledger.add_note(f"resumed with a changed configuration (accept_changed_resume): {line}")
    return len(ledgers)
