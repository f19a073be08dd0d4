"""A thin client for the TikTok Marketing API: one method per endpoint.

The ``Access-Token`` header is added in one place (``_call_once``); ``classify`` is the one
function that decides what a reply means (the envelope's ``code`` first, the HTTP status
when there is no envelope); the tenacity policy retries only what ``classify`` calls
retryable, with exponential backoff and jitter, bounded in attempts and time.

The token comes from a ``TokenProvider``: a fixed ``Secret`` (``StaticToken``, what
``TIKTOK_ACCESS_TOKEN`` gives) or the token store's entry, which can be refreshed. When
TikTok answers 40102 (token expired) and the provider can refresh, the token is
refreshed once and the request sent again before the error is let through.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import requests
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from destination.backends import ApiRequest, ApiResponse, Backend, HttpBackend
from destination.errors import (
    ApiUnavailableError,
    AuthenticationError,
    MisconfiguredError,
    PermanentError,
    RateLimitError,
    RetryableError,
)
from destination.kit.ratelimit import RateLimiter
from destination.kit.settings import Secret

__all__ = [
    "AUTH_CODES",
    "OK_CODES",
    "REAUTHORIZE_HINT",
    "RETRY_CODES",
    "TOKEN_EXPIRED",
    "UPDATE_ACTIONS",
    "Envelope",
    "RetryPolicy",
    "StaticToken",
    "TikTokApi",
    "TokenProvider",
    "UpdateAction",
    "classify",
    "failed_rows",
]

log = logging.getLogger(__name__)

API_VERSION = "v1.3"
API_ROOT = f"open_api/{API_VERSION}"  # under the base URL: the version in one place


def tiktok_backend(
    base_url: str, *, timeout: float = 30.0, session: requests.Session | None = None
) -> HttpBackend:
    """HTTP to TikTok's Marketing API (or anything at another base URL speaking it)."""
    return HttpBackend(base_url, root=API_ROOT, timeout=timeout, session=session)


PARTIAL_SUCCESS = 20001
OK_CODES = frozenset({0, PARTIAL_SUCCESS})
RETRY_CODES = frozenset({40100, 40016, 40133, 40202, 50000, 50002, 51305, 60001})
APP_RATE_LIMIT_CODES = frozenset({40100, 40016})
ADVERTISER_RATE_LIMIT_CODES = frozenset({40133})
AUTH_CODES = frozenset({40101, 40102, 40104, 40105, 40107, 40110})
TOKEN_EXPIRED = 40102
#: TikTok keeps at most this many characters of an audience name: longer ones are cut
#: to 67 and "...".
MAX_NAME_LENGTH = 70
LIST_PAGE_SIZE = 100  # the most dmp/custom_audience/list/ gives per page
MAX_IDS_PER_REQUEST = 100  # dmp/custom_audience/get/ and delete/ take 1 to 100 ids
# An advertiser has at most 400 audiences of its own, plus shared ones: more pages than
# this means a reply that is not telling the truth, not more audiences.
MAX_LIST_PAGES = 50
ADGROUP_PAGE_SIZE = 1000  # the most adgroup/get/ gives per page
MAX_ADGROUP_PAGES = 1000  # a million ad groups: more pages is a reply not telling the truth
MAX_SHARE_IDS = 10  # dmp/custom_audience/share/: 1 to 10 audiences, 1 to 10 advertisers
#: What a customer file holds: each line one person, with any of the id types.
CALCULATE_TYPE = "MULTIPLE_TYPES"
UpdateAction = Literal["APPEND", "REMOVE", "REPLACE"]
UPDATE_ACTIONS: tuple[UpdateAction, ...] = ("APPEND", "REMOVE", "REPLACE")
#: A rule audience's ``audience_type`` -> the type ``dmp/custom_audience/list/`` shows.
RULE_AUDIENCE_TYPES: Mapping[str, str] = {
    "ENGAGEMENT": "Engagement",
    "ENGAGEMENT_ORGANIC_VIDEO": "Engagement",
    "ENGAGEMENT_LIVE_VIDEO": "Engagement",
    "APP": "App Activity",
}
REAUTHORIZE_HINT = (
    "TikTok did not accept the access token; re-authorize: run "
    "`tiktok-audiences auth login --app-id <your app id>` (or set TIKTOK_ACCESS_TOKEN "
    "to a new token)"
)


@dataclass(frozen=True)
class Envelope:
    """A successful reply: ``code`` 0, or 20001 (partial success: ``data`` says more)."""

    code: int
    message: str
    request_id: str
    data: dict[str, Any]


def classify(response: ApiResponse, *, what: str, reauthorize: str = REAUTHORIZE_HINT) -> Envelope:
    """The reply's envelope when TikTok says OK, else raise the matching error.

    ``reauthorize`` ends the message of an authentication error: what the user does next.
    """
    body = response.body
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, int):
        if response.status == 429 or response.status >= 500:
            raise RetryableError(
                f"{what}: TikTok answered HTTP {response.status}", http_status=response.status
            )
        raise PermanentError(
            f"{what}: unexpected reply without a TikTok envelope", http_status=response.status
        )
    assert isinstance(body, dict)
    message = str(body.get("message", ""))
    request_id = str(body.get("request_id", ""))
    if code in OK_CODES:
        data = body.get("data")
        return Envelope(code, message, request_id, data if isinstance(data, dict) else {})
    detail = f"{what}: {message}" if message else what
    if code in AUTH_CODES:
        raise AuthenticationError(
            f"{detail}. {reauthorize}",
            code=code,
            http_status=response.status,
            request_id=request_id,
        )
    if code in APP_RATE_LIMIT_CODES or code in ADVERTISER_RATE_LIMIT_CODES:
        raise RateLimitError(
            detail,
            per_advertiser=code in ADVERTISER_RATE_LIMIT_CODES,
            code=code,
            http_status=response.status,
            request_id=request_id,
        )
    if code in RETRY_CODES or response.status == 429 or response.status >= 500:
        raise RetryableError(detail, code=code, http_status=response.status, request_id=request_id)
    raise PermanentError(detail, code=code, http_status=response.status, request_id=request_id)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, total time, and the first backoff.

    The n-th wait is ``initial_wait * 2**(n-1)`` capped at ``max_wait``, plus a random
    jitter of up to ``initial_wait`` (so ``initial_wait=0`` means no waiting at all).
    """

    max_attempts: int = 5
    max_seconds: float = 120.0
    initial_wait: float = 1.0
    max_wait: float = 30.0

    def wait(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt (tenacity's ``wait`` hook)."""
        backoff: float = self.initial_wait * 2 ** (state.attempt_number - 1)
        return min(self.max_wait, backoff + random.uniform(0, self.initial_wait))


def gave_up(exc: RetryError, *, then: str = "") -> ApiUnavailableError:
    """The error of a request whose retries ran out: its last failure, how many attempts
    were made, and ``then`` (what the user does next)."""
    last = exc.last_attempt.exception()
    assert isinstance(last, RetryableError)
    return ApiUnavailableError(
        f"{last.message} (gave up after {exc.last_attempt.attempt_number} attempts){then}",
        code=last.code,
        http_status=last.http_status,
        request_id=last.request_id,
    )


class TokenProvider(Protocol):
    """Where the ``Access-Token`` comes from, and how to get a new one if it expired."""

    @property
    def reauthorize_hint(self) -> str:
        """What to tell the user when TikTok refuses the token."""
        ...

    def current(self) -> Secret: ...

    def can_refresh(self) -> bool:
        """True if ``refresh`` can be tried (a refresh token and the app secret exist)."""
        ...

    def refresh(self) -> None:
        """Get a new token (one HTTP call); raise ``AuthenticationError`` if refused."""
        ...


class StaticToken:
    """A fixed token: ``TIKTOK_ACCESS_TOKEN``, or a test's. It cannot be refreshed."""

    def __init__(self, token: Secret, *, reauthorize_hint: str = REAUTHORIZE_HINT) -> None:
        self._token = token
        self.reauthorize_hint = reauthorize_hint

    def __repr__(self) -> str:
        return "StaticToken(***)"

    def current(self) -> Secret:
        return self._token

    def can_refresh(self) -> bool:
        return False

    def refresh(self) -> None:
        raise AssertionError("a static token cannot be refreshed")


SAME_REFUSALS_TO_STOP = 3


class RefusalWatch:
    """Tells a run that can deliver nothing from one whose data TikTok refuses.

    As long as TikTok has accepted no request of the run, each refusal is compared with
    the first: a wrong base URL (404s, pages that are no TikTok envelope), an advertiser
    the token may not manage, an audience that does not exist or a mapping TikTok cannot
    take is refused the same way every time, and after ``limit`` such refusals the run
    stops (``MisconfiguredError``) instead of sending the rest of the input to be
    refused. One accepted request ends the watch: refusals after it are about the data.
    """

    def __init__(self, limit: int = SAME_REFUSALS_TO_STOP) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._accepted = False
        self._first: tuple[int, int] | None = None  # (code, HTTP status) of the first
        self._same = 0  # refusals like the first, none different
        self._last = ""

    def accepted(self) -> None:
        self._accepted = True

    def refused(self, error: PermanentError) -> None:
        """Count a refusal; raise ``MisconfiguredError`` at the ``limit``-th of one kind."""
        kind = (error.code, 0 if error.code else error.http_status)
        with self._lock:
            if self._accepted or self._same < 0:
                return
            if self._first is None:
                self._first = kind
            if kind != self._first:
                self._same = -1  # refused in different ways: a matter of the data
                return
            self._same += 1
            self._last = str(error)
            if self._same < self._limit:
                return
        raise MisconfiguredError(
            f"TikTok refused the first {self._limit} requests of this run the same way and "
            f"accepted none ({error}): check base_url, the advertiser and audience settings "
            "and the mapping file",
            code=error.code,
            http_status=error.http_status,
            request_id=error.request_id,
        )

    def verdict(self) -> str | None:
        """After the run: why nothing could be delivered, if every request it made was
        refused the same way (fewer than ``limit`` of them); else None."""
        with self._lock:
            if self._accepted or self._same <= 0:
                return None
            return (
                f"TikTok refused every request of this run ({self._same}) the same way and "
                f"accepted none ({self._last}): check base_url, the advertiser and audience "
                "settings and the mapping file"
            )


class TikTokApi:
    """The endpoints the destination uses. ``requests_sent`` counts HTTP calls made.

    ``token`` is a ``Secret`` (a fixed token) or a ``TokenProvider``.
    """

    def __init__(
        self,
        backend: Backend,
        token: Secret | TokenProvider,
        *,
        retry: RetryPolicy | None = None,
        qps: float = 0.0,
        advertiser_qps: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._backend = backend
        self._tokens: TokenProvider = StaticToken(token) if isinstance(token, Secret) else token
        self._retry = retry or RetryPolicy()
        self._limiter = RateLimiter(qps=qps, per_key_qps=advertiser_qps, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._count_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._refresh_failed: str | None = None  # why the refresh failed: no more tries
        self.requests_sent = 0
        self.refusals = RefusalWatch()

    def __repr__(self) -> str:
        return f"TikTokApi({self._backend!r})"

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        advertiser_id: str | None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, Path]] | None = None,
        recover: Callable[[], Envelope | None] | None = None,
    ) -> Envelope:
        """One request, retried as the policy says; refreshed once if the token expired.

        ``recover`` runs before each attempt that follows one whose reply was lost (no
        answer from TikTok: the request may have been carried out); what it returns, if
        anything, is the answer, and the request is not sent again.
        """
        refreshed = False
        while True:
            token = self._tokens.current()
            try:
                return self._call_once(
                    method,
                    path,
                    token,
                    what=what,
                    advertiser_id=advertiser_id,
                    body=body,
                    params=params,
                    files=files,
                    recover=recover,
                )
            except AuthenticationError as exc:
                if refreshed or exc.code != TOKEN_EXPIRED or not self._tokens.can_refresh():
                    raise
            with self._refresh_lock:  # one refresh, however many senders met the expiry
                if self._refresh_failed is not None:
                    raise AuthenticationError(self._refresh_failed, code=TOKEN_EXPIRED)
                if self._tokens.current() == token:
                    log.info("%s: the access token has expired; refreshing it", what)
                    self._count()
                    try:
                        self._tokens.refresh()
                    except PermanentError as exc:
                        # TikTok refused the refresh request itself, or its answer holds
                        # no token: no later request can succeed either
                        self._refresh_failed = (
                            f"{what}: the access token expired and could not be refreshed "
                            f"({exc}); {self._tokens.reauthorize_hint}"
                        )
                        raise AuthenticationError(self._refresh_failed, code=TOKEN_EXPIRED) from exc
            refreshed = True

    def _count(self) -> None:
        with self._count_lock:
            self.requests_sent += 1

    def _call_once(
        self,
        method: str,
        path: str,
        token: Secret,
        *,
        what: str,
        advertiser_id: str | None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, Path]] | None = None,
        recover: Callable[[], Envelope | None] | None = None,
    ) -> Envelope:
        request = ApiRequest(
            method=method,
            path=path,
            params=dict(params or {}),
            json=body,
            headers={"Access-Token": token.reveal()},
            files=dict(files or {}),
        )
        reply_lost = False

        def note_lost_reply(state: RetryCallState) -> None:
            nonlocal reply_lost
            failure = state.outcome.exception() if state.outcome is not None else None
            # no code: no answer from TikTok (transport failure, a gateway's page)
            reply_lost = reply_lost or (isinstance(failure, RetryableError) and not failure.code)

        policy = self._retry
        retrying = Retrying(
            # ApiUnavailableError: retries (``recover``'s own) already ran out
            retry=retry_if_exception_type(RetryableError)
            & retry_if_not_exception_type(ApiUnavailableError),
            stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_seconds),
            wait=policy.wait,
            sleep=self._sleep,
            before_sleep=note_lost_reply,
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if reply_lost and recover is not None:
                        recovered = recover()
                        if recovered is not None:
                            return recovered
                    self._limiter.acquire(advertiser_id)
                    self._count()
                    try:
                        envelope = classify(
                            self._backend.send(request),
                            what=what,
                            reauthorize=self._tokens.reauthorize_hint,
                        )
                    except PermanentError as exc:
                        self.refusals.refused(exc)
                        raise
                    except RateLimitError as exc:
                        self._limiter.slow_down(advertiser_id if exc.per_advertiser else None)
                        raise
                    self.refusals.accepted()
                    return envelope
        except RetryError as exc:
            raise gave_up(exc) from exc.last_attempt.exception()
        raise AssertionError("unreachable: tenacity either returns or raises")

    # --- the token ------------------------------------------------------------------------

    def user_info(self) -> dict[str, Any]:
        """``user/info/``: a cheap call that tells whether the token still works."""
        return self._call(
            "GET", "user/info/", what="check the access token", advertiser_id=None
        ).data

    # --- Segment API (partner audiences) -------------------------------------------------

    def create_segment_audience(self, advertiser_id: str, name: str) -> str:
        """``segment/audience/`` create: the new audience's id, once even if a reply is lost.

        TikTok lets audiences share a name, so a create that TikTok carried out but whose
        reply was lost (a dropped connection, a timeout, a gateway's error page), sent
        again, would leave two audiences, the first one empty and never used. So after
        such a failure, before the create is sent again, the advertiser's audiences are
        listed, and the one the lost attempt made is taken if it is there: a partner
        audience (what this endpoint makes) of the advertiser's own, not shared, with
        exactly the name TikTok keeps for ``name``; of several, the newest (by
        ``create_time``, then id), which is the lost attempt's whenever TikTok carried it
        out. After an answer from TikTok (busy, rate limit) nothing is looked up: TikTok
        did not carry the create out.

        What the lookup cannot tell: if the lost attempt never reached TikTok and an
        older partner audience of that name exists (another tool's, or this tool's under
        another state file), that one is taken. Knowing which audiences existed before
        would take a list before every create: a request, and the read scope (30), for
        every audience made, against a lost reply, which is rare itself. A token without
        scope 30 cannot look: the create is sent again as before, and a warning says an
        empty audience may be left behind.
        """
        envelope = self._call(
            "POST",
            "segment/audience/",
            what="create audience",
            advertiser_id=advertiser_id,
            body={
                "advertiser_id": advertiser_id,
                "action": "create",
                "custom_audience_name": name,
            },
            recover=self._made_by_lost_attempt(advertiser_id, name, "Partner", "audience_id"),
        )
        audience_id = envelope.data.get("audience_id")
        if not audience_id:
            raise PermanentError("create audience: TikTok's reply has no audience_id")
        return str(audience_id)

    def _made_by_lost_attempt(
        self, advertiser_id: str, name: str, audience_type: str, id_field: str
    ) -> Callable[[], Envelope | None]:
        """The ``recover`` of a create: the newest audience of ``audience_type`` named
        ``name`` that ``advertiser_id`` owns, as the reply that was lost (its id under
        ``id_field``), or None (not found, or the list cannot be read: sent again)."""

        def recover() -> Envelope | None:
            try:
                found = self._newest_own_audience(advertiser_id, name, audience_type)
            except PermanentError as exc:
                log.warning(
                    "create audience %r: the reply was lost, and TikTok may have created it; "
                    "cannot look for it in the audience list (%s), so it is created again, "
                    "which may leave an empty audience of that name",
                    name,
                    exc,
                )
                return None
            if found is None:
                return None
            log.info(
                "create audience %r: the reply was lost, but TikTok had created it (%s)",
                name,
                found,
            )
            return Envelope(0, "created (the reply was lost)", "", {id_field: found})

        return recover

    def _newest_own_audience(self, advertiser_id: str, name: str, audience_type: str) -> str | None:
        """The id of the newest audience of ``audience_type`` that ``advertiser_id`` owns,
        not shared yet (a new one is not), named ``name`` or what TikTok keeps of it: the
        Segment API cuts names to ``MAX_NAME_LENGTH``."""
        kept = name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 3] + "..."
        matches = [
            audience
            for audience in self.list_audiences(advertiser_id)
            if audience.get("name") in (name, kept)
            and audience.get("type") == audience_type
            and audience.get("shared") is not True
            and str(audience.get("owner_id", advertiser_id)) == advertiser_id
            and audience.get("audience_id")
        ]
        if not matches:
            return None
        newest = max(
            matches,
            key=lambda a: (str(a.get("create_time", "")), str(a["audience_id"]).zfill(32)),
        )
        return str(newest["audience_id"])

    def list_audiences(self, advertiser_id: str) -> list[dict[str, Any]]:
        """``dmp/custom_audience/list/``: the advertiser's audiences (own and shared), every
        page."""
        return self._pages(
            "dmp/custom_audience/list/",
            what="list audiences",
            advertiser_id=advertiser_id,
            page_size=LIST_PAGE_SIZE,
            max_pages=MAX_LIST_PAGES,
        )

    def _pages(
        self, path: str, *, what: str, advertiser_id: str, page_size: int, max_pages: int
    ) -> list[dict[str, Any]]:
        """Every entry of a paged GET (``page`` / ``page_size``, ``page_info.total_page``),
        ``max_pages`` pages at most."""
        found: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= pages:
            data = self._call(
                "GET",
                path,
                what=what,
                advertiser_id=advertiser_id,
                params={
                    "advertiser_id": advertiser_id,
                    "page": str(page),
                    "page_size": str(page_size),
                },
            ).data
            listed = data.get("list")
            if not isinstance(listed, list) or not listed:
                break
            found.extend(entry for entry in listed if isinstance(entry, dict))
            info = data.get("page_info")
            total = info.get("total_page") if isinstance(info, dict) else None
            pages = min(total, max_pages) if isinstance(total, int) else page
            page += 1
        return found

    def get_audiences(
        self, advertiser_id: str, audience_ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        """``dmp/custom_audience/get/``: each audience's ``audience_details`` and
        ``audience_history``, in the order TikTok answers (1 to 100 ids)."""
        _check_id_count(audience_ids)
        data = self._call(
            "GET",
            "dmp/custom_audience/get/",
            what="get audiences",
            advertiser_id=advertiser_id,
            params={
                "advertiser_id": advertiser_id,
                # a list in a query string: TikTok reads it JSON-encoded
                "custom_audience_ids": json.dumps(list(audience_ids)),
            },
        ).data
        listed = data.get("list")
        return (
            [entry for entry in listed if isinstance(entry, dict)]
            if isinstance(listed, list)
            else []
        )

    def delete_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> None:
        """``dmp/custom_audience/delete/`` (1 to 100 ids): TikTok deletes all or none."""
        _check_id_count(audience_ids)
        self._call(
            "POST",
            "dmp/custom_audience/delete/",
            what="delete audiences",
            advertiser_id=advertiser_id,
            body={"advertiser_id": advertiser_id, "custom_audience_ids": list(audience_ids)},
        )

    # --- DMP: customer files, rule and lookalike audiences, sharing, ad groups ----------

    def upload_audience_file(self, advertiser_id: str, path: Path, signature: str) -> str:
        """``dmp/custom_audience/file/upload/``: ``path`` sent as a multipart form (streamed
        from disk) with its MD5 ``signature``; the answer is TikTok's ``file_path`` for a
        create or update.

        Sent again after a lost reply: an upload creates nothing by itself (a file no
        create or update names is left unused), so a second one costs only the transfer.
        """
        envelope = self._call(
            "POST",
            "dmp/custom_audience/file/upload/",
            what=f"upload customer file {path.name}",
            advertiser_id=advertiser_id,
            params={
                "advertiser_id": advertiser_id,
                "file_signature": signature,
                "calculate_type": CALCULATE_TYPE,
            },
            files={"file": (path.name, path)},
        )
        file_path = envelope.data.get("file_path")
        if not file_path:
            raise PermanentError("upload customer file: TikTok's reply has no file_path")
        return str(file_path)

    def create_customer_file_audience(
        self, advertiser_id: str, name: str, file_paths: Sequence[str]
    ) -> str:
        """``dmp/custom_audience/create/`` from uploaded files: the new audience's id, once
        even if a reply is lost (looked up by name, as ``create_segment_audience`` does)."""
        return self._create(
            "dmp/custom_audience/create/",
            {
                "advertiser_id": advertiser_id,
                "custom_audience_name": name,
                "calculate_type": CALCULATE_TYPE,
                "file_paths": list(file_paths),
            },
            what="create customer file audience",
            audience_type="Customer File",
        )

    def update_customer_file_audience(
        self,
        advertiser_id: str,
        audience_id: str,
        action: UpdateAction,
        file_paths: Sequence[str],
    ) -> None:
        """``dmp/custom_audience/update/`` with the ``action`` always written out: TikTok
        replaces the audience's members when the action is left out.

        APPEND and REMOVE are sent again after a lost reply: the same file added or taken
        away twice leaves the same members. A REPLACE is not: TikTok allows about one a
        day, so a second one would be refused whether or not the first was carried out;
        ``ApiUnavailableError`` then says the outcome is unknown.
        """
        if action not in UPDATE_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(UPDATE_ACTIONS)}, not {action!r}")

        def replace_lost() -> Envelope | None:
            raise ApiUnavailableError(
                f"replace the members of audience {audience_id}: the reply was lost, so "
                "whether TikTok replaced them is unknown, and a second replace within 24 "
                "hours would be refused: check the audience (`tiktok-audiences audiences get "
                f"{audience_id}`) before applying again"
            )

        self._call(
            "POST",
            "dmp/custom_audience/update/",
            what=f"{action.lower()} the members of audience {audience_id}",
            advertiser_id=advertiser_id,
            body={
                "advertiser_id": advertiser_id,
                "custom_audience_id": audience_id,
                "action": action,
                "file_paths": list(file_paths),
            },
            recover=replace_lost if action == "REPLACE" else None,
        )

    def create_rule_audience(self, body: Mapping[str, Any]) -> str:
        """``dmp/custom_audience/rule/create/`` (an engagement or app activity audience, the
        body as ``dmp.definitions`` builds it): the new audience's id, once even if a reply
        is lost (looked up by name and the type TikTok lists it as)."""
        audience_type = RULE_AUDIENCE_TYPES.get(str(body.get("audience_type")))
        if audience_type is None:
            raise ValueError(f"audience_type must be one of {', '.join(RULE_AUDIENCE_TYPES)}")
        return self._create(
            "dmp/custom_audience/rule/create/",
            body,
            what="create rule audience",
            audience_type=audience_type,
        )

    def create_lookalike(self, body: Mapping[str, Any]) -> str:
        """``dmp/custom_audience/lookalike/create/``: the new lookalike's id, once even if a
        reply is lost (looked up by name)."""
        return self._create(
            "dmp/custom_audience/lookalike/create/",
            body,
            what="create lookalike audience",
            audience_type="Lookalike",
        )

    def _create(self, path: str, body: Mapping[str, Any], *, what: str, audience_type: str) -> str:
        """A DMP create: ``data.custom_audience_id``; after a lost reply the audience the
        lost attempt made is taken if listed (see ``create_segment_audience``)."""
        advertiser_id = str(body["advertiser_id"])
        name = str(body["custom_audience_name"])
        envelope = self._call(
            "POST",
            path,
            what=f"{what} {name!r}",
            advertiser_id=advertiser_id,
            body=dict(body),
            recover=self._made_by_lost_attempt(
                advertiser_id, name, audience_type, "custom_audience_id"
            ),
        )
        audience_id = envelope.data.get("custom_audience_id")
        if not audience_id:
            raise PermanentError(f"{what}: TikTok's reply has no custom_audience_id")
        return str(audience_id)

    def refresh_lookalike(self, advertiser_id: str, audience_id: str) -> None:
        """``dmp/custom_audience/lookalike/update/``: rebuild a lookalike from its source
        as it is now (sent again after a lost reply: a second refresh changes nothing)."""
        self._call(
            "POST",
            "dmp/custom_audience/lookalike/update/",
            what=f"refresh lookalike audience {audience_id}",
            advertiser_id=advertiser_id,
            body={"advertiser_id": advertiser_id, "custom_audience_id": audience_id},
        )

    def share_audiences(
        self, advertiser_id: str, audience_ids: Sequence[str], advertiser_ids: Sequence[str]
    ) -> None:
        """``dmp/custom_audience/share/``: share 1 to 10 audiences with 1 to 10 advertisers
        of the same Business Center (sent again after a lost reply: sharing with an
        advertiser that has the audience already gives nothing new)."""
        _check_count("audience ids", audience_ids, MAX_SHARE_IDS)
        _check_count("advertiser ids", advertiser_ids, MAX_SHARE_IDS)
        self._call(
            "POST",
            "dmp/custom_audience/share/",
            what="share audiences",
            advertiser_id=advertiser_id,
            body={
                "advertiser_id": advertiser_id,
                "custom_audience_ids": list(audience_ids),
                "shared_advertiser_ids": list(advertiser_ids),
            },
        )

    def cancel_share(self, advertiser_id: str, audience_id: str, shared_advertiser_id: str) -> None:
        """``dmp/custom_audience/share/cancel/``: stop sharing an audience with one advertiser.

        Sent again after a lost reply. The owner cannot read whom an audience is shared
        with (``get`` says only whether it is shared), so a cancel the lost attempt had
        carried out cannot be told apart first: TikTok may then refuse the second one
        (``PermanentError``), though sharing has stopped.
        """
        self._call(
            "POST",
            "dmp/custom_audience/share/cancel/",
            what=f"stop sharing audience {audience_id}",
            advertiser_id=advertiser_id,
            body={
                "advertiser_id": advertiser_id,
                "custom_audience_id": audience_id,
                "shared_advertiser_id": shared_advertiser_id,
            },
        )

    def apply_audience(
        self,
        advertiser_id: str,
        audience_id: str,
        adgroup_ids: Sequence[str],
        *,
        mode: Literal["Apply", "Disconnect"],
        usage: Literal["Include", "Exclude"],
    ) -> None:
        """``dmp/custom_audience/apply/``: include the audience in (or exclude it from) the
        ad groups' targeting, or disconnect it from them.

        After a lost reply the ad groups are read first: if each already targets the
        audience as asked (or, disconnecting, no longer names it), the lost attempt was
        carried out and nothing is sent again; a disconnect repeated could be refused.
        """
        what = f"{mode.lower()} audience {audience_id} ({usage.lower()})"
        slot = "audience_ids" if usage == "Include" else "excluded_audience_ids"

        def done_by_the_lost_attempt() -> Envelope | None:
            try:
                adgroups = self.list_adgroups(advertiser_id)
            except PermanentError as exc:
                log.warning("%s: the reply was lost; cannot read the ad groups (%s)", what, exc)
                return None
            wanted = set(adgroup_ids)
            for adgroup in adgroups:
                adgroup_id = str(adgroup.get("adgroup_id"))
                if adgroup_id in wanted:
                    named = adgroup.get(slot)
                    if (isinstance(named, list) and audience_id in named) != (mode == "Apply"):
                        return None  # not done: send it again
                    wanted.discard(adgroup_id)
            return None if wanted else Envelope(0, "done (the reply was lost)", "", {})

        self._call(
            "POST",
            "dmp/custom_audience/apply/",
            what=what,
            advertiser_id=advertiser_id,
            body={
                "advertiser_id": advertiser_id,
                "custom_audience_id": audience_id,
                "adgroup_ids": list(adgroup_ids),
                "action_mode": mode,
                "usage_mode": usage,
            },
            recover=done_by_the_lost_attempt,
        )

    def list_adgroups(self, advertiser_id: str) -> list[dict[str, Any]]:
        """``adgroup/get/``: the advertiser's ad groups (with the audiences each includes
        and excludes), every page."""
        return self._pages(
            "adgroup/get/",
            what="list ad groups",
            advertiser_id=advertiser_id,
            page_size=ADGROUP_PAGE_SIZE,
            max_pages=MAX_ADGROUP_PAGES,
        )

    def segment_mapping(
        self,
        *,
        advertiser_ids: Sequence[str],
        action: str,
        id_schema: Sequence[str],
        batch_data: Sequence[Sequence[Mapping[str, Any]]],
    ) -> dict[int, str]:
        """Send one batch; the answer is the rows TikTok refused (index -> message)."""
        envelope = self._call(
            "POST",
            "segment/mapping/",
            what=f"{action} users",
            advertiser_id=advertiser_ids[0] if len(advertiser_ids) == 1 else None,
            body={
                "advertiser_ids": list(advertiser_ids),
                "action": action,
                "id_schema": list(id_schema),
                "batch_data": [list(row) for row in batch_data],
            },
        )
        return failed_rows(envelope, rows=len(batch_data))


def _check_id_count(audience_ids: Sequence[str]) -> None:
    """TikTok's bounds on the ids of one request; callers split longer lists."""
    _check_count("audience ids", audience_ids, MAX_IDS_PER_REQUEST)


def _check_count(what: str, ids: Sequence[str], most: int) -> None:
    """1 to ``most`` ids in one request, as TikTok allows; callers split longer lists."""
    if not 1 <= len(ids) <= most:
        raise ValueError(f"1 to {most} {what} a request, got {len(ids)}")


def failed_rows(envelope: Envelope, *, rows: int) -> dict[int, str]:
    """The rows a partial success (20001) names as failed, by index.

    TikTok's reference does not document the shape of a partial-success reply for this
    endpoint. Read here: ``data.failed_rows`` as a list of row indexes or of objects with
    ``index`` and ``message``. A partial success that names no rows is logged and counted
    as delivered (nothing better can be known).
    """
    if envelope.code != PARTIAL_SUCCESS:
        return {}
    listed = envelope.data.get("failed_rows")
    failures: dict[int, str] = {}
    for entry in listed if isinstance(listed, list) else []:
        index = entry.get("index") if isinstance(entry, dict) else entry
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < rows:
            text = entry.get("message") if isinstance(entry, dict) else None
            failures[index] = f"TikTok refused this user: {text or envelope.message}"
    if not failures:
        log.warning(
            "TikTok answered partial success (20001) without naming the failed users "
            "(request_id %s); counting the batch as delivered",
            envelope.request_id,
        )
    return failures
