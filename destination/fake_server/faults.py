"""Fault injection for the fake TikTok: failures at set rates, replayable from a seed.

A ``FaultPlan`` names, per kind of fault, the probability that a request meets it. Each
request draws once from a ``random.Random(seed)``, so the same plan and the same order
of requests give the same schedule. Kinds:

- a TikTok code to retry later: ``"40100"``, ``"40016"``, ``"40133"``, ``"40202"``,
  ``"50000"``, ``"50002"``, ``"51305"``, ``"60001"`` (an envelope in HTTP 200);
- ``"http_429"``, ``"http_500"``, ``"http_503"``: that status with an HTML body;
- ``"slow"``: the reply comes after ``slow_seconds``;
- ``"drop_before"``: the connection closes with no reply and nothing is done;
- ``"drop_after"``: the request is carried out, then the connection closes with no
  reply (the client cannot know it worked).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from destination.errors import RetryableError

__all__ = ["FAULT_KINDS", "FakeConnectionDrop", "FaultPlan", "parse_faults"]

RETRY_CODES = ("40100", "40016", "40133", "40202", "50000", "50002", "51305", "60001")
FAULT_KINDS: tuple[str, ...] = (
    *RETRY_CODES,
    "http_429",
    "http_500",
    "http_503",
    "slow",
    "drop_before",
    "drop_after",
)


class FakeConnectionDrop(RetryableError):
    """The fake closed the connection without a reply (in-process: raised to the client)."""


@dataclass
class FaultPlan:
    rates: Mapping[str, float]
    seed: int = 0
    slow_seconds: float = 0.2
    _random: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rates) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if any(not 0 <= r <= 1 for r in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError("fault rates must be in 0..1 and add up to at most 1")
        self._random = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault the next request meets, or None."""
        with self._lock:
            roll = self._random.random()
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind, 0.0)
            if roll < rate:
                return kind
            roll -= rate
        return None


def parse_faults(text: str) -> dict[str, float]:
    """``"50000=0.1,http_503=0.05"`` -> ``{"50000": 0.1, "http_503": 0.05}``."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault {part!r} is not KIND=RATE")
        rates[kind.strip()] = float(value)
    return rates
