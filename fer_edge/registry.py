"""Name -> object registries (backbones, detectors, sources, sinks).

Lookups of an unknown name fail with the valid names and the closest match instead
of an if-chain falling through.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from fer_edge.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for key in (name, *aliases):
                key = key.lower()
                if key in self._items:
                    raise ValueError(f"{self.kind} '{key}' registered twice")
                self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def objects(self) -> list[T]:
        """Each registered object once (aliases share one), in the order they were registered."""
        return list({id(obj): obj for obj in self._items.values()}.values())

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
