"""Image embeddings for nearest-neighbour voting and FID: raw pixels and FID Inception-v3."""

from __future__ import annotations

from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.inception import InceptionEmbedding
from pe_lightning.embeddings.pixels import PixelEmbedding

__all__ = ["Embedding", "InceptionEmbedding", "PixelEmbedding"]
