"""Backends that stand in front of the fake TikTok to change what happens mid-run."""

from __future__ import annotations

from collections.abc import Callable

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server import FakeTikTok


class AfterRequests:
    """Passes requests to the fake; calls ``then(fake)`` once ``after`` have passed."""

    def __init__(self, fake: FakeTikTok, after: int, then: Callable[[FakeTikTok], None]) -> None:
        self.fake = fake
        self.after = after
        self.then = then
        self.sent = 0

    def send(self, request: ApiRequest) -> ApiResponse:
        if self.sent == self.after:
            self.then(self.fake)
        self.sent += 1
        return self.fake.send(request)


class CrashAfter:
    """A backend that lets ``n`` requests through, then dies like a killed process."""

    def __init__(self, fake: FakeTikTok, n: int) -> None:
        self.fake = fake
        self.left = n

    def send(self, request: ApiRequest) -> ApiResponse:
        if self.left == 0:
            raise SystemExit("simulated crash")
        self.left -= 1
        return self.fake.send(request)
