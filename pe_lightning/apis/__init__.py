"""Foundation-model APIs (RANDOM and VARIATION)."""

from pe_lightning.apis.base import APIOutput, ImageAPI
from pe_lightning.apis.drawtext import DrawText

__all__ = ["APIOutput", "DrawText", "ImageAPI"]
