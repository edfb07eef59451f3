"""Lightning callbacks for Private Evolution (import path: ``pe_lightning.callbacks``)."""

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.callbacks.fid import EmbeddingFeature, FIDCallback
from pe_lightning.callbacks.grids import SampleGrid
from pe_lightning.callbacks.privacy import PrivacyAccountant, PrivacyBudgetExceededError
from pe_lightning.callbacks.snapshots import PopulationSnapshot

__all__ = [
    "EmbeddingFeature",
    "FIDCallback",
    "PopulationCallback",
    "PopulationSnapshot",
    "PrivacyAccountant",
    "PrivacyBudgetExceededError",
    "SampleGrid",
]

from pe_lightning.callbacks.downstream import DownstreamEvaluation  # noqa: E402

__all__ += ["DownstreamEvaluation"]
