"""The benchmark's fake TikTok: the demo fake plus the 8 audiences the generated events name.

``python -m benchmarks.fake_server [--port 0] [--lean]`` serves it over HTTP on 127.0.0.1
until it is terminated (SIGTERM or Ctrl-C), after printing one line on stdout,
``listening on URL``, once the socket listens. The fake keeps every audience member, so
this process grows with the run: that memory is the server's, not the destination's, and
is not counted in the destination's peak RSS.

The full fake checks every row of every ``segment/mapping`` call: about 8 ms of CPU per
1000-user request here, on top of the HTTP server's own work; on a 2-core machine that
CPU is taken from the destination. It keeps only the latest ``KEPT_REQUESTS`` requests
(the garbage collector's passes over a million events' worth of kept bodies took half of
its CPU). ``--lean`` answers ``segment/mapping`` calls that carry the demo token with a
plain success, without checking them (everything else still goes to the full fake): what
remains is the HTTP server's reading and JSON parsing.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/fake_server.py
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate import ADVERTISER_ID, AUDIENCE_IDS, AUDIENCE_KEYS
from destination.backends import ApiRequest, ApiResponse
from destination.demo import DEMO_ADVERTISER_ID, DEMO_LEGACY_AUDIENCE, DEMO_TOKEN, demo_fake
from destination.fake_server import FakeTikTok, serve_forever

__all__ = ["KEPT_REQUESTS", "LeanFake", "benchmark_fake", "main"]

KEPT_REQUESTS = 100


class LeanFake(FakeTikTok):
    """The fake, except that ``segment/mapping`` calls with the demo token just succeed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lean_calls = 0

    def receive(self, request: ApiRequest) -> ApiResponse:
        token = next(
            (value for name, value in request.headers.items() if name.lower() == "access-token"),
            None,
        )
        if (
            request.method == "POST"
            and request.path.strip("/") == "segment/mapping"
            and token == DEMO_TOKEN
        ):
            self.lean_calls += 1  # only for the request id: a lost increment does no harm
            body = {
                "code": 0,
                "message": "OK",
                "request_id": f"lean{self.lean_calls:020d}",
                "data": {},
            }
            return ApiResponse(status=200, body=body)
        return super().receive(request)


def benchmark_fake(*, lean: bool = False) -> FakeTikTok:
    """The demo fake TikTok (token ``demo-access-token``) with the benchmark's audiences."""
    assert ADVERTISER_ID == DEMO_ADVERTISER_ID
    if lean:
        # what demo_fake() sets up, minus the OAuth app, on the lean class
        fake: FakeTikTok = LeanFake(keep_requests=KEPT_REQUESTS)
        fake.add_advertiser(DEMO_ADVERTISER_ID, name="Demo advertiser")
        fake.add_token(DEMO_TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
        fake.add_audience(DEMO_ADVERTISER_ID, DEMO_LEGACY_AUDIENCE)
    else:
        fake = demo_fake(keep_requests=KEPT_REQUESTS)
    for key, expected in zip(AUDIENCE_KEYS, AUDIENCE_IDS, strict=True):
        audience_id = fake.add_audience(ADVERTISER_ID, key)
        if audience_id != expected:
            raise RuntimeError(
                f"the fake gave audience {key!r} the id {audience_id}, the events name {expected}"
            )
    return fake


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # serve_forever returns normally on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the benchmark's fake TikTok server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    parser.add_argument(
        "--lean", action="store_true", help="segment/mapping calls just succeed (see above)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    serve_forever(
        benchmark_fake(lean=args.lean),
        host=args.host,
        port=args.port,
        on_ready=lambda url: print(f"listening on {url}", flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
