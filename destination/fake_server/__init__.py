"""A fake TikTok Marketing API for tests and the demo: in-process or over HTTP.

``FakeTikTok`` is a ``Backend`` (answers ``send`` in-process, checking requests the way
TikTok does and keeping audiences and members); ``serve_in_thread`` / ``serve_forever``
put the same fake behind a loopback HTTP server for ``HttpBackend``.
"""

from destination.fake_server.faults import FakeConnectionDrop, FaultPlan, parse_faults
from destination.fake_server.http import RunningServer, serve_forever, serve_in_thread
from destination.fake_server.state import FakeAudience, FakeTikTok

__all__ = [
    "FakeAudience",
    "FakeConnectionDrop",
    "FakeTikTok",
    "FaultPlan",
    "RunningServer",
    "parse_faults",
    "serve_forever",
    "serve_in_thread",
]
