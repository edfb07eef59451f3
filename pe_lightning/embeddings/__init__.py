"""Image embeddings for nearest-neighbour voting and FID: raw pixels, HOG, FID Inception-v3 and CLIP (open_clip)."""

from __future__ import annotations

from pe_lightning.embeddings.base import Embedding
from pe_lightning.embeddings.clip import CLIPEmbedding
from pe_lightning.embeddings.hog import HOGEmbedding, MultiScaleHOGEmbedding
from pe_lightning.embeddings.inception import InceptionEmbedding
from pe_lightning.embeddings.pixels import PixelEmbedding

__all__ = ["CLIPEmbedding", "Embedding", "HOGEmbedding", "InceptionEmbedding", "MultiScaleHOGEmbedding", "PixelEmbedding"]
