"""A descriptor for the Lightning adapter: module attributes that read the engine's run state or settings."""

from __future__ import annotations

from typing import Any

__all__ = ["EngineAttribute"]


class EngineAttribute:
    """A class attribute of an adapter that reads (and writes) ``obj.engine``'s run state, or reads its settings.

    Args:
        settings: read ``obj.engine.settings.<name>`` (configuration: never written)
            instead of ``obj.engine.<name>``.
    """

    def __init__(self, *, settings: bool = False) -> None:
        self.settings = settings

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.owner = owner.__name__

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.engine.settings if self.settings else obj.engine, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if self.settings:
            raise AttributeError(f"{self.name} is configuration: set it when building {self.owner}")
        setattr(obj.engine, self.name, value)
