"""Image embeddings for nearest-neighbour voting and FID: raw pixels, FID Inception-v3 and CLIP (open_clip)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pe_lightning.lazy import lazy_exports

# Imported on first use (pe_lightning.lazy): importing the package stays cheap.
_EXPORTS = {
    "CLIPEmbedding": "pe_lightning.embeddings.clip",
    "Embedding": "pe_lightning.embeddings.base",
    "InceptionEmbedding": "pe_lightning.embeddings.inception",
    "PixelEmbedding": "pe_lightning.embeddings.pixels",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pe_lightning.embeddings.base import Embedding
    from pe_lightning.embeddings.clip import CLIPEmbedding
    from pe_lightning.embeddings.inception import InceptionEmbedding
    from pe_lightning.embeddings.pixels import PixelEmbedding
