"""``FakeTikTok``: an in-process fake of the parts of TikTok's Marketing API this
destination uses, as one object composed of its parts.

``FakeTikTok`` implements the ``Backend`` protocol (``send(request) -> response``). It
checks requests the way TikTok does, answers with TikTok's envelope
``{"code", "message", "request_id", "data"}`` (HTTP 200 for API-level errors) and keeps
audiences and their members, so tests can assert what TikTok would hold. A rejected
request changes nothing.

Its parts, one concern each (all share ``store.FakeStore``: the lock, the accounts, the
tokens, the audiences, the ad groups and the request log):

- ``audience_api.AudienceApi``: the segment API (partner audiences and their members);
- ``dmp_api.DmpApi``: the custom audience (DMP) endpoints and ``adgroup/get``;
- ``oauth.OAuthPortal``: apps, the consent portal and the ``oauth2/`` endpoints;
- ``faults.FaultControls``: scripted failures, random faults, refused users, holds.

This module keeps only the request path: record the request, meet the faults, route it
to its endpoint, answer. (Its name predates the split; ``AUTH_CODE_SECONDS``,
``ID_TYPES``, ``FakeAudience`` and ``PortalReply`` are still importable from it.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server.audience_api import ID_TYPES
from destination.fake_server.checks import Partial, Rejected, envelope, normalize_path
from destination.fake_server.dmp_api import DmpApi
from destination.fake_server.faults import FakeConnectionDrop, FaultControls
from destination.fake_server.oauth import AUTH_CODE_SECONDS, OAuthPortal
from destination.fake_server.portal import PortalReply
from destination.fake_server.store import FakeAudience

__all__ = ["AUTH_CODE_SECONDS", "ID_TYPES", "FakeAudience", "FakeTikTok", "PortalReply"]


class FakeTikTok(DmpApi, OAuthPortal, FaultControls):
    """A fake TikTok Marketing API, in-process and thread-safe (one lock).

    Set it up with ``add_advertiser`` and ``add_token`` (advertisers first), then hand it
    to the code under test as its ``Backend``. ``fail_next`` scripts failures.

    ``fresh_audience_seconds`` > 0 makes writes to an audience created through the API
    less than that many seconds ago (per ``clock``) fail with 40002, as TikTok does for a
    minute or two after creation.

    ``keep_requests`` bounds what ``requests``, ``received_at`` and ``accepted`` hold to
    the latest that many (None, the default, keeps all of them: tests read them). A server
    that runs for long, such as ``fake-server`` or the benchmark's, sets it: kept bodies
    grow without end, and the garbage collector's passes over them cost the fake much of
    its CPU (figures in benchmarks/RESULTS.md).
    """

    def __init__(
        self,
        max_batch_users: int = 10_000,
        max_audiences_per_advertiser: int = 400,
        clock: Callable[[], float] = time.monotonic,
        fresh_audience_seconds: float = 0.0,
        keep_requests: int | None = None,
    ) -> None:
        super().__init__(
            max_batch_users=max_batch_users,
            max_audiences_per_advertiser=max_audiences_per_advertiser,
            fresh_audience_seconds=fresh_audience_seconds,
            clock=clock,
            keep_requests=keep_requests,
        )

    def __repr__(self) -> str:
        return (
            f"FakeTikTok(advertisers={len(self._advertisers)}, "
            f"audiences={len(self._audiences)}, adgroups={len(self._adgroups)}, "
            f"requests={len(self._requests)})"
        )

    # ---------------------------------------------------------------------- Backend

    def send(self, request: ApiRequest) -> ApiResponse:
        """Handle one request the way TikTok would."""
        # Keep our own copy: a caller mutating its dicts later must not rewrite history.
        return self.receive(
            replace(
                request,
                params=dict(request.params),
                headers=dict(request.headers),
                json=copy.deepcopy(request.json),
                files=dict(request.files),
            )
        )

    def receive(self, received: ApiRequest) -> ApiResponse:
        """``send`` for a request no one else holds (the HTTP server's, parsed from the
        wire): kept as it is, without a copy."""
        with self._lock:
            request_id = self._log(received)
            fault = self._faults.draw() if self._faults is not None else None
            hold = self._take_hold(received.path)
        if hold is not None:
            self._wait_for_release(hold)
        if fault is not None:
            injected = self._injected_reply(fault, request_id)
            if injected is not None:
                return injected
        response = self._process(received, request_id)
        if fault == "drop_after":
            raise FakeConnectionDrop("connection closed after the request was carried out")
        return response

    def _process(self, received: ApiRequest, request_id: str) -> ApiResponse:
        with self._lock:
            failure = self._take_failure(received.path)
            if failure is not None:
                return failure.reply(request_id)
            try:
                data = self._dispatch(received)
            except Rejected as exc:
                return envelope(request_id, exc.code, exc.message, http_status=exc.http_status)
            except Partial as partial:
                self._accepted.append(received)
                return envelope(request_id, 20001, "Partial success", data=partial.data)
            self._accepted.append(received)
            return envelope(request_id, data=data)

    def _dispatch(self, request: ApiRequest) -> dict[str, Any]:
        """Route a request to its endpoint: an app's (id and secret) or a token's."""
        path = normalize_path(request.path)
        app_methods = self._app_routes.get(path)
        if app_methods is not None:
            app_handler = app_methods.get(request.method.upper())
            if app_handler is None:
                raise Rejected(40000, f"method {request.method.upper()} not allowed", 405)
            return app_handler(request)
        methods = self._routes.get(path)
        if methods is None:
            raise Rejected(40000, "path not found", http_status=404)
        method = request.method.upper()
        if method not in methods:
            raise Rejected(40000, f"method {method} not allowed", http_status=405)
        handler, scope = methods[method]
        grant = self._authenticate(request.headers)
        if scope is not None and scope not in grant.scopes:
            raise Rejected(40001, f"No permission: the access token lacks scope {scope}")
        return handler(grant, request)
