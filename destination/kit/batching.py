"""Batching in the open: items gather per group until a batch is full or input ends.

``Batcher.add`` answers the batch that became full (if any) so the caller sends it at
once; ``drain`` hands over what is left, oldest group first, at the end of input. A cap
on everything held keeps memory flat when events spread over many groups: past it, the
largest open batch is handed over early.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Batch", "Batcher"]

T = TypeVar("T")


@dataclass(frozen=True)
class Batch(Generic[T]):
    group: Hashable
    items: list[T]


class Batcher(Generic[T]):
    def __init__(self, size: int, *, max_held: int | None = None) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self.size = size
        self.max_held = max_held if max_held is not None else size * 10
        self._open: dict[Hashable, list[T]] = {}
        self._held = 0

    @property
    def held(self) -> int:
        """How many items wait in open batches."""
        return self._held

    def is_open(self, group: Hashable) -> bool:
        """Whether items of ``group`` are waiting."""
        return group in self._open

    def add(self, group: Hashable, item: T) -> Batch[T] | None:
        """Add one item; return a batch that must be sent now, if any."""
        items = self._open.get(group)
        if items is None:
            items = self._open[group] = []
        items.append(item)
        self._held += 1
        if len(items) >= self.size:
            return self.take(group)
        if self._held > self.max_held:
            return self.take(max(self._open, key=lambda g: len(self._open[g])))
        return None

    def drain(self) -> Iterator[Batch[T]]:
        """Every open batch, in the order their groups were first seen."""
        while self._open:
            yield self.take(next(iter(self._open)))

    def take(self, group: Hashable) -> Batch[T]:
        """Hand over the open batch of ``group`` now (it must be open)."""
        items = self._open.pop(group)
        self._held -= len(items)
        return Batch(group, items)
