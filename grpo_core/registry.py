"""Name -> component registries. Every swappable piece of the core is looked up here by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from grpo_core.errors import UserError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of components (functions or classes) of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            loc = f" ({where})" if where else ""
            raise UserError(f"unknown {self.kind} {name!r}{loc}; {closest(name, self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
