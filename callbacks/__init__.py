"""Lightning callbacks for Private Evolution (import path: ``pe_lightning.callbacks``)."""

from pe_lightning.callbacks.base import PopulationCallback
from pe_lightning.callbacks.fid import EmbeddingFeature, FIDCallback
from pe_lightning.callbacks.grids import SampleGrid
from pe_lightning.callbacks.precision_recall import PrecisionRecall
from pe_lightning.callbacks.privacy import PrivacyAccountant, PrivacyBudgetExceededError
from pe_lightning.callbacks.snapshots import PopulationSnapshot

__all__ = [
    "EmbeddingFeature",
    "FIDCallback",
    "PopulationCallback",
    "PopulationSnapshot",
    "PrecisionRecall",
    "PrivacyAccountant",
    "PrivacyBudgetExceededError",
    "SampleGrid",
]

from pe_lightning.callbacks.downstream import DownstreamEvaluation  # noqa: E402

__all__ += ["DownstreamEvaluation"]

from pe_lightning.callbacks.progress import PEProgressBar  # noqa: E402
from pe_lightning.callbacks.summary import RunSummary  # noqa: E402

__all__ += ["PEProgressBar", "RunSummary"]
