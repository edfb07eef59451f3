"""The one rule for what a run may show, and the one place that names each callback's data class.

The rule (docs/design.md §2.9, docs/privacy.md): a value computed from the private data is
either

(a) part of the DP release: the noisy histogram's consequences (the populations, the
    statistics of the noisy counts, the ε spent), or
(b) written only under the private side (``$PE_LIGHTNING_PRIVATE_DIR``, the run's
    ``private_state_dir``), never to the output root, the console, the loggers or the
    checkpoint.

Everything else a run writes or prints is public configuration or public data. This
module holds the parts of that rule that code checks:

* :data:`CALLBACK_INPUTS` and :func:`data_class`: whether a callback's outputs are public
  or private-derived (looked up here and nowhere else);
* :func:`test_split_is_private`: whether the data module's held-out split was carved out
  of the private data (then every metric against it is private-derived);
* :data:`PRIVATE_STAGES` and :func:`public_progress`: progress of private-side work
  reaches callbacks (and so the console) without counts.

Where a private-derived metric goes is :func:`pe_lightning.private_metrics.publish_metrics`.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "CALLBACK_INPUTS",
    "PRIVATE_DERIVED",
    "PRIVATE_STAGES",
    "PUBLIC",
    "DataClass",
    "data_class",
    "public_progress",
    "test_split_is_private",
]

PUBLIC = "public"
PRIVATE_DERIVED = "private-derived"
DataClass = Literal["public", "private-derived"]

#: What each shipped callback's outputs are computed from. ``"release"``: the released
#: populations, the ε spent and public configuration, so they are public. ``"real split"``:
#: also the real images of the callback's ``real_split`` (default ``"test"``), so they are
#: public only when that split is (:func:`data_class`). A subclass inherits its base's entry;
#: a callback missing here reads only what :class:`~pe_lightning.callbacks.PopulationCallback`
#: hands it (synthetic populations) and counts as ``"release"``: a user callback that reads
#: real images adds its class name here with ``"real split"``.
CALLBACK_INPUTS: dict[str, str] = {
    "PrivacyAccountant": "release",  # sigma and ε: functions of public configuration
    "SampleGrid": "release",
    "PopulationSnapshot": "release",
    "PEProgressBar": "release",  # private stages reach it without counts (public_progress)
    "RunSummary": "release",  # reads only what the other callbacks published
    "FIDCallback": "real split",
    "PrecisionRecall": "real split",
    "DownstreamEvaluation": "real split",  # tests on the held-out split
}

#: Stages whose amount of work is the private set's size (rows embedded, batches voted):
#: callbacks hear that they run, never how far (:func:`public_progress`).
PRIVATE_STAGES = frozenset({"private embedding", "voting"})


def public_progress(stage: str, done: int, total: int) -> tuple[int, int]:
    """``(done, total)`` of ``stage`` as callbacks may see them.

    A stage in :data:`PRIVATE_STAGES` is reported as ``(0, 0)``: running, size not shown.
    Under add/remove-one neighbours the private set's size is private, and so is any count
    or ratio of work done on it (with a public chunk size, one step of a percentage gives
    the denominator away).
    """
    return (0, 0) if stage in PRIVATE_STAGES else (done, total)


def test_split_is_private(datamodule: Any) -> bool:
    """Whether ``datamodule``'s held-out split was carved out of the private data.

    A data module says so with ``test_split_from_private`` (image folders without
    ``test_dir``, npz files without ``test_path``, Hugging Face data without
    ``test_split``); a held-out set given separately is declared public by the user.
    """
    return bool(getattr(datamodule, "test_split_from_private", False))


def _inputs_of(callback: Any) -> str:
    for cls in type(callback).__mro__:
        if cls.__name__ in CALLBACK_INPUTS:
            return CALLBACK_INPUTS[cls.__name__]
    return "release"


def data_class(callback: Any, *, datamodule: Any) -> DataClass:
    """``"public"`` or ``"private-derived"``: the data class of ``callback``'s outputs in this run.

    A ``"real split"`` callback (:data:`CALLBACK_INPUTS`) is private-derived when its
    ``real_split`` is ``"private"`` or the data module's held-out split was carved out of
    the private data (:func:`test_split_is_private`).
    """
    if _inputs_of(callback) != "real split":
        return PUBLIC
    split = getattr(callback, "real_split", "test")
    if split == "private" or test_split_is_private(datamodule):
        return PRIVATE_DERIVED
    return PUBLIC
