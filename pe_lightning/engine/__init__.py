"""The Lightning-free PE core (docs/design.md §4): the loop's stages, the DP release, sharding and storage.

:class:`PEEngine` holds one run's state and runs its stages; :mod:`.release` is the only
code that reads private votes; :mod:`.hooks` is the contract with callbacks;
:func:`run_loop` drives the stages without a Trainer. :meth:`PEEngine.prepare` readies an
engine in one call, whoever drives it.
"""

from pe_lightning.engine.core import PEEngine
from pe_lightning.engine.hooks import (
    STAGES,
    FixedNoiseMultiplier,
    HookCaller,
    NoiseMultiplierSource,
    PopulationHooks,
    RunView,
)
from pe_lightning.engine.loop import LoopRun, run_loop
from pe_lightning.engine.settings import EngineSettings
from pe_lightning.engine.sharding import Collective, ProcessGroupCollective

__all__ = [
    "STAGES",
    "Collective",
    "EngineSettings",
    "FixedNoiseMultiplier",
    "HookCaller",
    "LoopRun",
    "NoiseMultiplierSource",
    "PEEngine",
    "PopulationHooks",
    "ProcessGroupCollective",
    "RunView",
    "run_loop",
]
