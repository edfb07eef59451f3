"""The PE loop's configuration, checked once (public: every field may be published)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pe_lightning.apis.base import ImageAPI
from pe_lightning.engine.selection import check_selection
from pe_lightning.engine.tone import check_tone_bins
from pe_lightning.neighbors import check_distance, resolve_backend
from pe_lightning.validation import is_int

__all__ = ["EngineSettings"]

PRIVACY_UNITS = ("sample", "client")


@dataclass(frozen=True)
class EngineSettings:
    """What one PE run does per iteration (see :class:`pe_lightning.PrivateEvolution` for each field).

    Attributes:
        iterations: ``T``.
        variation_degrees: the degree of iterations ``1 .. T`` (resolved, ``T`` values).
        lookahead_degree: ``k`` variations averaged per synthetic embedding (0: none).
        threshold: ``H`` in votes.
        num_nearest_neighbors: ``k'`` votes per private sample, each weighing ``1/sqrt(k')``.
        search_backend, distance: the nearest-neighbour search.
        selection: a strategy name of :mod:`pe_lightning.engine.selection`.
        variations_per_parent, keep_selected: children per selected parent; whether the
            parent itself stays.
        privacy_unit: ``"sample"`` or ``"client"``.
        seed: the public seed of every stream except the DP noise.
        api_batch_size, embedding_batch_size: images per API call / embedding pass.
        reuse_lookahead: children taken from the lookahead variations (post-processing).
        overlap_lookahead_embedding: a CPU embedding embeds each lookahead variation on a
            background thread while the API makes the next (:mod:`pe_lightning.engine.lookahead_mean`):
            ``True``, ``False`` or ``None`` (when a core is spare); the same numbers either way.
        tone_share: the part of the last release's ``1 / sigma^2`` that carries the private
            peak-level counts (:mod:`pe_lightning.engine.tone`), in ``[0, 1)``; 0: no tone release.
        tone_bins: the peak-level bins of ``[0, 256)`` (divides 256).
    """

    iterations: int
    variation_degrees: tuple[float, ...]
    lookahead_degree: int = 8
    threshold: float = 0.0
    num_nearest_neighbors: int = 1
    search_backend: str = "auto"
    distance: str = "l2"
    selection: str = "sample"
    variations_per_parent: int = 1
    keep_selected: bool = False
    privacy_unit: str = "sample"
    seed: int = 0
    api_batch_size: int = 4096
    embedding_batch_size: int = 2048
    reuse_lookahead: bool = True
    overlap_lookahead_embedding: bool | None = None
    tone_share: float = 0.0
    tone_bins: int = 32

    def __post_init__(self) -> None:
        if not (is_int(self.iterations) and self.iterations >= 1):
            raise ValueError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if len(self.variation_degrees) != self.iterations:
            raise ValueError(f"variation_degrees must have {self.iterations} values, got {len(self.variation_degrees)}")
        if self.lookahead_degree < 0:
            raise ValueError(f"lookahead_degree must be >= 0, got {self.lookahead_degree}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be finite and >= 0, got {self.threshold}")
        if self.num_nearest_neighbors < 1:
            raise ValueError(f"num_nearest_neighbors must be >= 1, got {self.num_nearest_neighbors}")
        if min(self.api_batch_size, self.embedding_batch_size) < 1:
            raise ValueError("api_batch_size and embedding_batch_size must be >= 1")
        resolve_backend(self.search_backend)
        check_distance(self.distance)
        check_selection(self.selection)
        if not (is_int(self.variations_per_parent) and self.variations_per_parent >= 0):
            raise ValueError(f"variations_per_parent must be an integer >= 0, got {self.variations_per_parent!r}")
        if self.variations_per_parent == 0 and not self.keep_selected:
            raise ValueError("variations_per_parent=0 needs keep_selected=True, or the next population would be empty")
        for flag in ("keep_selected", "reuse_lookahead"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if not (self.overlap_lookahead_embedding is None or isinstance(self.overlap_lookahead_embedding, bool)):
            raise ValueError(f"overlap_lookahead_embedding must be true, false or null (when a core is spare), "
                             f"got {self.overlap_lookahead_embedding!r}")
        if self.privacy_unit not in PRIVACY_UNITS:
            raise ValueError(f"privacy_unit must be 'sample' or 'client', got {self.privacy_unit!r}")
        if isinstance(self.tone_share, bool) or not (isinstance(self.tone_share, (int, float)) and 0.0 <= self.tone_share < 1.0):
            raise ValueError(f"tone_share must be a number in [0, 1) (0: no tone release), got {self.tone_share!r}")
        check_tone_bins(self.tone_bins)
        if self.tone_share > 0 and self.privacy_unit == "client":
            raise ValueError("tone_share > 0 needs privacy_unit 'sample': a client's images would add several peak counts")

    @property
    def fold(self) -> int:
        """Samples each selected parent makes in the next population."""
        return self.variations_per_parent + int(self.keep_selected)

    def check_api(self, api: ImageAPI) -> None:
        """Every iteration's degree is in ``api``'s range (``api.validate_degree``)."""
        for t, d in enumerate(self.variation_degrees, start=1):
            try:
                api.validate_degree(d)
            except ValueError as err:
                raise ValueError(f"variation_degrees[{t - 1}] (iteration {t}): {err}") from err
