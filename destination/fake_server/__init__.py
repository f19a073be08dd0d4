"""A fake TikTok Marketing API for tests and the demo: in-process or over HTTP.

``FakeTikTok`` is a ``Backend`` (answers ``send`` in-process, checking requests the way
TikTok does and keeping audiences and members); ``serve_in_thread`` / ``serve_forever``
put the same fake behind a loopback HTTP server for ``HttpBackend``.

The modules, one concern each:

- ``state``: ``FakeTikTok`` itself, composed of the parts below, and the request path;
- ``store``: what the fake holds (accounts and Business Centers, tokens, audiences with
  their type, owner, shares and size growing on the clock, ad groups, uploaded files,
  the request log), the set-up and inspection methods, the one lock;
- ``audience_api``: the segment API (partner audiences, their members);
- ``dmp_api``: the custom audience (DMP) endpoints and ``adgroup/get``: customer files,
  rule and lookalike audiences, sharing, applying to ad groups, TikTok's limits;
- ``checks``: the errors, the envelope and the request checks every endpoint shares;
- ``oauth`` and ``portal``: apps, the consent page and the ``oauth2/`` endpoints;
- ``faults``: scripted failures, random faults (``FaultPlan``), refused users, holds;
- ``http``: the HTTP server in front of it all (``multipart`` reads its uploads).
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
