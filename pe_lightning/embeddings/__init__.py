"""Image embeddings for nearest-neighbour voting and FID: raw pixels, HOG, FID Inception-v3 (torch-fidelity's or clean-fid's preprocessing) and CLIP (open_clip)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "CLIPEmbedding": "pe_lightning.embeddings.clip",
    "CleanInceptionEmbedding": "pe_lightning.embeddings.clean_inception",
    "Embedding": "pe_lightning.embeddings.base",
    "HOGEmbedding": "pe_lightning.embeddings.hog",
    "InceptionEmbedding": "pe_lightning.embeddings.inception",
    "MultiScaleHOGEmbedding": "pe_lightning.embeddings.hog",
    "PixelEmbedding": "pe_lightning.embeddings.pixels",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.embeddings.base import Embedding
    from pe_lightning.embeddings.clean_inception import CleanInceptionEmbedding
    from pe_lightning.embeddings.clip import CLIPEmbedding
    from pe_lightning.embeddings.hog import HOGEmbedding, MultiScaleHOGEmbedding
    from pe_lightning.embeddings.inception import InceptionEmbedding
    from pe_lightning.embeddings.pixels import PixelEmbedding
