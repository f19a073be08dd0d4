"""The fake TikTok's fault and hold controls: what a test uses to make TikTok misbehave.

``FaultControls`` is the part of ``FakeTikTok`` that holds them: ``fail_next`` scripts the
next answers, ``inject_faults`` meets requests with random faults from a ``FaultPlan``,
``refuse_users`` makes ``segment/mapping`` leave some rows out (partial success), and
``hold_after`` stops a request before it is carried out until ``release``. The request
path (``FakeTikTok.receive``) asks it what to do with each request.

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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from destination.backends import ApiResponse
from destination.errors import RetryableError
from destination.fake_server.checks import envelope, normalize_path
from destination.fake_server.store import FakeStore

__all__ = ["FAULT_KINDS", "FakeConnectionDrop", "FaultControls", "FaultPlan", "parse_faults"]

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

_DEFAULT_MESSAGES = {
    40016: "Too many requests: the app's rate limit was reached",
    40100: "Too many requests: the app's rate limit was reached",
    40133: "Too many requests: the advertiser's QPS limit was reached",
    40202: "Write conflict, please retry",
    50000: "System error",
    50002: "System error",
    51305: "System busy, please retry",
    60001: "System maintenance, please retry later",
}


class FakeConnectionDrop(RetryableError):
    """The fake closed the connection without a reply (in-process: raised to the client)."""


@dataclass
class FaultPlan:
    """Per kind of fault, the probability that a request meets it (see the module)."""

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


@dataclass
class _ScriptedFailure:
    code: int
    http_status: int
    message: str
    remaining: int
    path: str | None

    def reply(self, request_id: str) -> ApiResponse:
        if self.code == 0:
            return _html_reply(self.http_status)
        return envelope(request_id, self.code, self.message, http_status=self.http_status)


@dataclass
class _Hold:
    path: str
    count: int
    arrived: threading.Event
    released: threading.Event = field(default_factory=threading.Event)
    process: bool = True


class FaultControls(FakeStore):
    """The part of ``FakeTikTok`` that makes it fail on purpose; see the module docstring."""

    def __init__(self, **store: Any) -> None:
        super().__init__(**store)
        self._failures: list[_ScriptedFailure] = []
        self._faults: FaultPlan | None = None
        self._hold: _Hold | None = None
        self._refused_ids: frozenset[str] = frozenset()

    def fail_next(
        self,
        code: int,
        *,
        http_status: int = 200,
        message: str = "",
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``path`` if given) with a failure.

        The request is recorded but not processed. ``code`` != 0 gives TikTok's envelope
        with that code and ``http_status``. ``code`` 0 with an error ``http_status`` gives
        an HTML page (e.g. "502 Bad Gateway") and no JSON, like a proxy in front of TikTok.
        Several scripted failures are used in the order they were added.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if code == 0 and http_status < 400:
            raise ValueError("code 0 needs an error http_status (>= 400): a non-JSON reply")
        if not 100 <= http_status <= 599:
            raise ValueError("http_status must be between 100 and 599")
        text = message or _DEFAULT_MESSAGES.get(code, f"Scripted failure (code {code})")
        with self._lock:
            self._failures.append(
                _ScriptedFailure(
                    code=code,
                    http_status=http_status,
                    message=text,
                    remaining=times,
                    path=None if path is None else normalize_path(path),
                )
            )

    def inject_faults(self, plan: FaultPlan | None) -> None:
        """Meet requests with random faults from ``plan`` (None: no more faults)."""
        with self._lock:
            self._faults = plan

    def refuse_users(self, hashes: Iterable[str]) -> None:
        """Rows holding any of these ids are left out of ``segment/mapping``, which then
        answers partial success (20001) naming them in ``data.failed_rows``."""
        with self._lock:
            self._refused_ids = frozenset(hashes)

    def hold_after(self, path: str, count: int) -> threading.Event:
        """Stop the request to ``path`` that comes after ``count`` such requests.

        That request waits, unprocessed, until ``release(process=...)``; the returned
        event is set once it has arrived. A test uses it to kill a client at a known
        point: while TikTok has not yet carried out the request.
        """
        arrived = threading.Event()
        with self._lock:
            self._hold = _Hold(normalize_path(path), count, arrived)
        return arrived

    def release(self, *, process: bool) -> None:
        """Let the held request go on (``process``) or drop it unprocessed."""
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            hold.process = process
            hold.released.set()

    # ------------------------------------------------ asked by the request path

    def _take_hold(self, path: str) -> _Hold | None:
        """The hold this request meets, if any (the caller holds the lock)."""
        hold = self._hold
        if hold is None or hold.path != normalize_path(path):
            return None
        if hold.count > 0:
            hold.count -= 1
            return None
        self._hold = None
        return hold

    @staticmethod
    def _wait_for_release(hold: _Hold) -> None:
        """Wait, without the lock, until the test releases the held request."""
        hold.arrived.set()
        hold.released.wait()
        if not hold.process:
            raise FakeConnectionDrop("the fake dropped the held request")

    def _injected_reply(self, fault: str, request_id: str) -> ApiResponse | None:
        """What a drawn fault does before the request is carried out: a reply instead of
        carrying it out, a dropped connection (raised), or None to go on (after a pause
        if ``slow``)."""
        plan = self._faults
        if fault == "slow" and plan is not None:
            time.sleep(plan.slow_seconds)
        if fault == "drop_before":
            raise FakeConnectionDrop("connection closed with no reply")
        if fault.isdigit():
            message = _DEFAULT_MESSAGES.get(int(fault), "injected fault")
            return envelope(request_id, int(fault), message)
        if fault.startswith("http_"):
            return _html_reply(int(fault.removeprefix("http_")))
        return None

    def _take_failure(self, path: str) -> _ScriptedFailure | None:
        """The scripted failure this request meets, if any (the caller holds the lock)."""
        wanted = normalize_path(path)
        for index, failure in enumerate(self._failures):
            if failure.path is None or failure.path == wanted:
                failure.remaining -= 1
                if failure.remaining == 0:
                    del self._failures[index]
                return failure
        return None


def _html_reply(status: int) -> ApiResponse:
    """A non-JSON error page, as a proxy or load balancer in front of TikTok sends."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    page = (
        f"<html><head><title>{status} {phrase}</title></head>"
        f"<body><center><h1>{status} {phrase}</h1></center></body></html>"
    )
    return ApiResponse(status=status, body=None, text=page)
