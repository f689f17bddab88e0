"""One registry mechanism for generators, tasks and models.

Names are unique per registry; looking up a typo answers with "did you mean ...".
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from sim2obs.errors import Sim2obsValueError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of objects (classes or factories) of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""

        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise Sim2obsValueError(f"{self.kind} name already registered", value=name)
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.6)
            raise UnknownNameError(self.kind, name, self._items, close) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
