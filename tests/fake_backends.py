"""Backends that stand in front of the fake TikTok to change what happens mid-run, and a
CLI run killed while the fake holds one of its requests."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server import FakeTikTok
from tests.clock import HANG_GUARD


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


def kill_at_the_hold(
    fake: FakeTikTok,
    arrived: threading.Event,
    command: Sequence[str],
    env: Mapping[str, str],
) -> None:
    """Run the CLI ``command`` until the fake holds the request ``fake.hold_after`` named
    (``arrived``), kill it there with SIGKILL, and let the fake go on without carrying
    out the killed client's request."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        guard = time.monotonic() + HANG_GUARD
        while not arrived.wait(0.05):  # however slowly the sync starts
            if process.poll() is not None:
                _, stderr = process.communicate()
                pytest.fail(
                    f"the sync ended ({process.returncode}) before the held request:\n"
                    + stderr.decode(errors="replace")
                )
            assert time.monotonic() < guard, "the sync never reached the held request"
        process.send_signal(signal.SIGKILL)
        assert process.wait(HANG_GUARD) == -signal.SIGKILL
    finally:
        fake.release(process=False)  # the killed client's request is never carried out
        process.kill()
        process.communicate()
