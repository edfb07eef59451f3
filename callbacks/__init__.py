"""Lightning callbacks for Private Evolution (import path: ``pe_lightning.callbacks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "DownstreamEvaluation": "pe_lightning.callbacks.downstream",
    "EmbeddingFeature": "pe_lightning.callbacks.fid",
    "FIDCallback": "pe_lightning.callbacks.fid",
    "PEProgressBar": "pe_lightning.callbacks.progress",
    "PopulationCallback": "pe_lightning.callbacks.base",
    "PopulationSnapshot": "pe_lightning.callbacks.snapshots",
    "PrecisionRecall": "pe_lightning.callbacks.precision_recall",
    "PrivacyAccountant": "pe_lightning.callbacks.privacy",
    "PrivacyBudgetExceededError": "pe_lightning.callbacks.privacy",
    "RunSummary": "pe_lightning.callbacks.summary",
    "SampleGrid": "pe_lightning.callbacks.grids",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.callbacks.base import PopulationCallback
    from pe_lightning.callbacks.fid import EmbeddingFeature, FIDCallback
    from pe_lightning.callbacks.grids import SampleGrid
    from pe_lightning.callbacks.precision_recall import PrecisionRecall
    from pe_lightning.callbacks.privacy import PrivacyAccountant, PrivacyBudgetExceededError
    from pe_lightning.callbacks.snapshots import PopulationSnapshot
    from pe_lightning.callbacks.downstream import DownstreamEvaluation
    from pe_lightning.callbacks.progress import PEProgressBar
    from pe_lightning.callbacks.summary import RunSummary
