"""Tests of the TikTok API client (destination.tiktok.api) and the backends it sends through.

``classify`` is tested as a table; the retry policy, headers, URL and body through the real
``HttpBackend`` with ``responses`` standing in for TikTok; pacing and backoff with a fake
clock, so no test spends wall time waiting.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

from destination.backends import (
    ApiRequest,
    ApiResponse,
    DryRunBackend,
    check_base_url,
)
from destination.errors import (
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    PermanentError,
    RetryableError,
)
from destination.settings import Secret
from destination.tiktok.api import (
    AUTH_CODES,
    RETRY_CODES,
    RetryPolicy,
    TikTokApi,
    classify,
    failed_rows,
    tiktok_backend,
)
from tests.clock import HANG_GUARD, FakeClock

BASE_URL = "https://business-api.tiktok.com"
MAPPING_URL = "https://business-api.tiktok.com/open_api/v1.3/segment/mapping/"
AUDIENCE_URL = "https://business-api.tiktok.com/open_api/v1.3/segment/audience/"
LIST_URL = "https://business-api.tiktok.com/open_api/v1.3/dmp/custom_audience/list/"
TOKEN = "tok-123"

DOCUMENTED_RETRY_CODES = [40100, 40016, 40133, 40202, 50000, 50002, 51305, 60001]
DOCUMENTED_AUTH_CODES = [40101, 40102, 40104, 40105, 40107, 40110]
DOCUMENTED_PERMANENT_CODES = [40000, 40001, 40002, 40007, 40011]

EMAIL_HASH = "a" * 64
PHONE_HASH = "b" * 64
MAPPING_ARGS: dict[str, Any] = {
    "advertiser_ids": ["7001"],
    "action": "add",
    "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
    "batch_data": [
        [{"id": EMAIL_HASH, "audience_ids": ["123"]}, {}],
        [{}, {"id": PHONE_HASH, "audience_ids": ["123"]}],
    ],
}


def envelope(
    code: int = 0,
    message: str = "OK",
    request_id: str = "req-1",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": request_id, "data": data or {}}


def http_api(**kwargs: Any) -> TikTokApi:
    """A client on the real HTTP backend, retrying up to 4 times without sleeping (and
    with time enough for them on a loaded machine: the budget is counted in real time)."""
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, initial_wait=0, max_seconds=HANG_GUARD))
    kwargs.setdefault("sleep", lambda seconds: None)
    return TikTokApi(tiktok_backend(BASE_URL), Secret(TOKEN), **kwargs)


def send_mapping(api: TikTokApi) -> dict[str, Any]:
    return api.segment_mapping(**MAPPING_ARGS)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Stands in for TikTok; replies registered for one URL are used in order."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


class ScriptedBackend:
    """A one-method backend: answers from a script (the last reply repeats), keeps requests.

    ``sent_at`` records the clock's time at each send when a clock is given.
    """

    def __init__(self, *replies: ApiResponse, clock: Callable[[], float] | None = None) -> None:
        self._replies = list(replies) or [ApiResponse(status=200, body=envelope())]
        self._clock = clock
        self.requests: list[ApiRequest] = []
        self.sent_at: list[float] = []

    def send(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        if self._clock is not None:
            self.sent_at.append(self._clock())
        if len(self._replies) > 1:
            return self._replies.pop(0)
        return self._replies[0]


# --- classify: what a reply means ---------------------------------------------------------


def test_code_lists_match_the_documented_error_codes() -> None:
    assert set(DOCUMENTED_RETRY_CODES) == RETRY_CODES
    assert set(DOCUMENTED_AUTH_CODES) == AUTH_CODES


@pytest.mark.parametrize("code", [0, 20001])
def test_classify_returns_data_for_ok_and_partial_success_codes(code: int) -> None:
    reply = ApiResponse(status=200, body=envelope(code, data={"audience_id": "55"}))

    assert classify(reply, what="add users").data == {"audience_id": "55"}


def test_classify_returns_empty_dict_when_ok_envelope_has_no_data() -> None:
    reply = ApiResponse(status=200, body={"code": 0, "message": "OK", "request_id": "r"})

    assert classify(reply, what="add users").data == {}


@pytest.mark.parametrize("code", DOCUMENTED_RETRY_CODES)
def test_classify_raises_retryable_for_each_retry_code_in_http_200(code: int) -> None:
    reply = ApiResponse(status=200, body=envelope(code, "slow down", "req-9"))

    with pytest.raises(RetryableError) as caught:
        classify(reply, what="add users")

    assert not isinstance(caught.value, ApiUnavailableError)
    assert caught.value.code == code
    assert caught.value.request_id == "req-9"
    assert "slow down" in str(caught.value)


@pytest.mark.parametrize("code", DOCUMENTED_AUTH_CODES)
def test_classify_raises_authentication_error_telling_how_to_reauthorize(code: int) -> None:
    reply = ApiResponse(status=200, body=envelope(code, "Access token is invalid", "req-a"))

    with pytest.raises(AuthenticationError) as caught:
        classify(reply, what="add users")

    message = str(caught.value)
    assert "re-authorize" in message
    assert "TIKTOK_ACCESS_TOKEN" in message
    assert "Access token is invalid" in message
    assert caught.value.code == code
    assert caught.value.request_id == "req-a"


@pytest.mark.parametrize("code", DOCUMENTED_PERMANENT_CODES)
def test_classify_raises_permanent_error_with_tiktoks_message_code_and_request_id(
    code: int,
) -> None:
    reply = ApiResponse(status=200, body=envelope(code, "advertiser_ids is invalid", "req-p"))

    with pytest.raises(PermanentError) as caught:
        classify(reply, what="add users")

    error = caught.value
    assert error.code == code
    assert error.request_id == "req-p"
    assert "advertiser_ids is invalid" in error.message
    assert "advertiser_ids is invalid" in str(error)
    assert f"code {code}" in str(error)
    assert "req-p" in str(error)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
@pytest.mark.parametrize("body", [None, {"error": "upstream"}], ids=["not-json", "no-code"])
def test_classify_raises_retryable_for_429_and_5xx_without_envelope(status: int, body: Any) -> None:
    reply = ApiResponse(status=status, body=body, text="<html>busy</html>")

    with pytest.raises(RetryableError) as caught:
        classify(reply, what="add users")

    assert caught.value.http_status == status
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("status", [400, 404])
def test_classify_raises_permanent_for_4xx_without_envelope(status: int) -> None:
    reply = ApiResponse(status=status, body=None, text="<html>Not Found</html>")

    with pytest.raises(PermanentError) as caught:
        classify(reply, what="add users")

    assert caught.value.http_status == status
    assert f"HTTP {status}" in str(caught.value)


def test_classify_lets_the_envelope_code_decide_over_http_200() -> None:
    reply = ApiResponse(status=200, body=envelope(40133, "advertiser QPS limit"))

    with pytest.raises(RetryableError):
        classify(reply, what="add users")


def test_classify_lets_an_ok_envelope_code_win_over_an_odd_http_status() -> None:
    reply = ApiResponse(status=500, body=envelope(0, data={"ok": True}))

    assert classify(reply, what="add users").data == {"ok": True}


def test_classify_names_what_was_being_done() -> None:
    reply = ApiResponse(status=200, body=envelope(40002, "bad id_schema"))

    with pytest.raises(PermanentError, match="delete users: bad id_schema"):
        classify(reply, what="delete users")


# --- through the real HTTP client ---------------------------------------------------------


def test_segment_mapping_posts_exact_body_to_versioned_url_with_raw_access_token(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(MAPPING_URL, json=envelope(data={"accepted": 2}))

    result = send_mapping(http_api())

    assert result == {}  # no row refused
    assert len(rsps.calls) == 1
    sent = rsps.calls[0].request
    assert sent.method == "POST"
    assert sent.url == MAPPING_URL
    assert sent.headers["Access-Token"] == TOKEN
    assert "Authorization" not in sent.headers
    assert "Bearer" not in sent.headers["Access-Token"]
    assert sent.body is not None
    assert json.loads(sent.body) == MAPPING_ARGS
    assert sent.headers["Content-Type"] == "application/json"


def test_error_envelope_in_http_200_raises_permanent_error_without_retry(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(MAPPING_URL, json=envelope(40002, "id_schema is invalid", "req-x"))
    api = http_api()

    with pytest.raises(PermanentError) as caught:
        send_mapping(api)

    assert len(rsps.calls) == 1
    assert api.requests_sent == 1
    assert caught.value.code == 40002
    assert caught.value.request_id == "req-x"
    assert "id_schema is invalid" in str(caught.value)


def test_retries_http_500_twice_then_succeeds(rsps: responses.RequestsMock) -> None:
    rsps.post(MAPPING_URL, status=500, body="<html>oops</html>")
    rsps.post(MAPPING_URL, status=500, body="<html>oops</html>")
    rsps.post(MAPPING_URL, json=envelope(data={"done": True}))
    api = http_api()

    assert send_mapping(api) == {}  # delivered, no row refused
    assert len(rsps.calls) == 3
    assert api.requests_sent == 3


def test_retries_rate_limit_code_in_http_200_then_succeeds(rsps: responses.RequestsMock) -> None:
    rsps.post(MAPPING_URL, json=envelope(40100, "app rate limit"))
    rsps.post(MAPPING_URL, json=envelope(data={"done": True}))

    assert send_mapping(http_api()) == {}  # delivered, no row refused
    assert len(rsps.calls) == 2


def test_gives_up_with_api_unavailable_after_max_attempts_carrying_last_message(
    rsps: responses.RequestsMock,
) -> None:
    for attempt in range(1, 5):
        rsps.post(MAPPING_URL, json=envelope(50002, f"busy {attempt}", f"req-{attempt}"))
    api = http_api()

    with pytest.raises(ApiUnavailableError) as caught:
        send_mapping(api)

    error = caught.value
    assert isinstance(error, RetryableError)
    assert len(rsps.calls) == 4
    assert api.requests_sent == 4
    assert "busy 4" in str(error)
    assert "busy 1" not in str(error)
    assert error.code == 50002
    assert error.request_id == "req-4"
    assert "4 attempts" in str(error)
    assert isinstance(error.__cause__, RetryableError)


def test_gave_up_message_names_code_and_request_id_once(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(MAPPING_URL, json=envelope(40100, "too many requests", "req-r"))

    with pytest.raises(ApiUnavailableError) as caught:
        send_mapping(http_api())

    assert str(caught.value).count("code 40100") == 1
    assert str(caught.value).count("req-r") == 1


def test_retries_connection_error_then_succeeds(rsps: responses.RequestsMock) -> None:
    rsps.post(MAPPING_URL, body=requests.ConnectionError("connection reset by peer"))
    rsps.post(MAPPING_URL, body=requests.Timeout("read timed out"))
    rsps.post(MAPPING_URL, json=envelope(data={"done": True}))
    api = http_api()

    assert send_mapping(api) == {}  # delivered, no row refused
    assert len(rsps.calls) == 3
    assert api.requests_sent == 3


def test_connection_error_every_time_ends_in_api_unavailable(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(MAPPING_URL, body=requests.ConnectionError("connection refused"))
    api = http_api()

    with pytest.raises(ApiUnavailableError) as caught:
        send_mapping(api)

    assert len(rsps.calls) == 4
    assert "ConnectionError" in str(caught.value)


def test_authentication_code_stops_after_one_call(rsps: responses.RequestsMock) -> None:
    rsps.post(MAPPING_URL, json=envelope(40105, "The access token is invalid", "req-auth"))
    api = http_api()

    with pytest.raises(AuthenticationError) as caught:
        send_mapping(api)

    assert len(rsps.calls) == 1
    assert api.requests_sent == 1
    assert "re-authorize" in str(caught.value)


def test_requests_sent_counts_every_http_attempt_across_calls(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(MAPPING_URL, status=503)
    rsps.post(MAPPING_URL, json=envelope())
    rsps.post(AUDIENCE_URL, body=requests.ConnectionError("reset"))
    rsps.get(LIST_URL, json=envelope(data={"list": []}))  # did the lost create work?
    rsps.post(AUDIENCE_URL, json=envelope(data={"audience_id": "9"}))
    api = http_api()
    assert api.requests_sent == 0

    send_mapping(api)
    assert api.requests_sent == 2
    api.create_segment_audience("7001", "Buyers")

    assert api.requests_sent == 5
    assert len(rsps.calls) == 5


def test_create_segment_audience_sends_create_action_and_returns_audience_id(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(AUDIENCE_URL, json=envelope(data={"audience_id": 7123456}))

    audience_id = http_api().create_segment_audience("7001", "Recent buyers")

    assert audience_id == "7123456"
    sent = rsps.calls[0].request
    assert sent.url == AUDIENCE_URL
    assert sent.headers["Access-Token"] == TOKEN
    assert sent.body is not None
    assert json.loads(sent.body) == {
        "advertiser_id": "7001",
        "action": "create",
        "custom_audience_name": "Recent buyers",
    }


def test_create_reply_without_audience_id_raises_permanent_error(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(AUDIENCE_URL, json=envelope(data={}))
    api = http_api()

    with pytest.raises(PermanentError, match="audience_id"):
        api.create_segment_audience("7001", "Recent buyers")

    assert len(rsps.calls) == 1


# --- the token stays secret ---------------------------------------------------------------


def test_api_repr_does_not_show_the_token() -> None:
    api = http_api()

    assert TOKEN not in repr(api)
    assert BASE_URL in repr(api)


def test_api_request_repr_redacts_secret_headers_and_keeps_others() -> None:
    request = ApiRequest(
        method="POST",
        path="segment/mapping/",
        json={"action": "add"},
        headers={"Access-Token": TOKEN, "authorization": f"Bearer {TOKEN}", "X-Trace": "t-1"},
    )

    shown = repr(request)
    assert TOKEN not in shown
    assert "***" in shown
    assert "t-1" in shown
    assert "segment/mapping/" in shown


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _failures(rsps: responses.RequestsMock) -> list[ApiError]:
    """Run several failing calls through the HTTP client; return the errors raised."""
    scenarios: list[tuple[str, dict[str, Any]]] = [
        (MAPPING_URL, {"json": envelope(40002, "bad request", "r1")}),
        (MAPPING_URL, {"json": envelope(40105, "token invalid", "r2")}),
        (MAPPING_URL, {"json": envelope(40100, "rate limited", "r3")}),
        (MAPPING_URL, {"body": requests.ConnectionError("connection reset")}),
        (MAPPING_URL, {"status": 404, "body": "<html>not found</html>"}),
        (AUDIENCE_URL, {"json": envelope(data={})}),
    ]
    errors: list[ApiError] = []
    for url, reply in scenarios:
        rsps.reset()
        rsps.post(url, **reply)
        api = http_api()
        try:
            if url == AUDIENCE_URL:
                api.create_segment_audience("7001", "Buyers")
            else:
                send_mapping(api)
        except ApiError as exc:
            errors.append(exc)
    return errors


def test_token_never_appears_in_raised_errors(rsps: responses.RequestsMock) -> None:
    errors = _failures(rsps)

    assert [type(e) for e in errors] == [
        PermanentError,
        AuthenticationError,
        ApiUnavailableError,
        ApiUnavailableError,
        PermanentError,
        PermanentError,
    ]
    for error in errors:
        for linked in _error_chain(error):
            assert TOKEN not in str(linked)
            assert TOKEN not in repr(linked)


def test_token_never_appears_in_debug_logs(
    rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rsps.post(MAPPING_URL, status=500)
    rsps.post(MAPPING_URL, json=envelope())

    send_mapping(http_api())
    errors = _failures(rsps)

    assert len(errors) == 6
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


# --- pacing and backoff (fake clock, no wall time) ----------------------------------------


def test_pacing_at_5_qps_spreads_10_calls_over_at_least_1_8_seconds() -> None:
    clock = FakeClock()
    backend = ScriptedBackend(clock=clock)
    api = TikTokApi(backend, Secret(TOKEN), qps=5, clock=clock, sleep=clock.sleep)
    start = clock.now

    for _ in range(10):
        send_mapping(api)

    assert len(backend.requests) == 10
    assert clock.now - start >= 1.8 - 1e-9
    gaps = [later - earlier for earlier, later in itertools.pairwise(backend.sent_at)]
    assert len(gaps) == 9
    assert all(gap >= 0.2 - 1e-9 for gap in gaps)


def test_pacing_with_qps_0_never_sleeps() -> None:
    clock = FakeClock()
    backend = ScriptedBackend(clock=clock)
    api = TikTokApi(backend, Secret(TOKEN), qps=0, clock=clock, sleep=clock.sleep)

    for _ in range(10):
        send_mapping(api)

    assert len(backend.requests) == 10
    assert clock.sleeps == []


def test_backoff_sleeps_before_each_retry_with_growing_jittered_waits() -> None:
    clock = FakeClock()
    backend = ScriptedBackend(
        ApiResponse(status=503, text="busy"),
        ApiResponse(status=200, body=envelope(50000, "system error")),
        ApiResponse(status=200, body=envelope(data={"done": True})),
    )
    policy = RetryPolicy(max_attempts=5, initial_wait=1, max_seconds=60)
    api = TikTokApi(backend, Secret(TOKEN), retry=policy, clock=clock, sleep=clock.sleep)

    assert send_mapping(api) == {}  # delivered, no row refused

    assert len(backend.requests) == 3
    assert len(clock.sleeps) == 2
    assert all(0 < wait <= policy.max_wait for wait in clock.sleeps)
    first, second = clock.sleeps
    assert 1 <= first <= 2  # initial_wait + jitter in [0, 1]
    assert 2 <= second <= 3  # doubled + jitter


def test_backoff_waits_are_capped_at_max_wait() -> None:
    clock = FakeClock()
    backend = ScriptedBackend(
        ApiResponse(status=500),
        ApiResponse(status=500),
        ApiResponse(status=500),
        ApiResponse(status=200, body=envelope()),
    )
    policy = RetryPolicy(max_attempts=5, initial_wait=1, max_seconds=60, max_wait=1.5)
    api = TikTokApi(backend, Secret(TOKEN), retry=policy, clock=clock, sleep=clock.sleep)

    send_mapping(api)

    assert len(clock.sleeps) == 3
    assert all(0 < wait <= 1.5 for wait in clock.sleeps)


def test_permanent_error_is_not_followed_by_any_backoff() -> None:
    clock = FakeClock()
    backend = ScriptedBackend(ApiResponse(status=200, body=envelope(40001, "no permission")))
    api = TikTokApi(backend, Secret(TOKEN), clock=clock, sleep=clock.sleep)

    with pytest.raises(PermanentError):
        send_mapping(api)

    assert clock.sleeps == []
    assert len(backend.requests) == 1


# --- check_base_url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://business-api.tiktok.com",
        "https://sandbox-ads.tiktok.com",
        "https://10.0.0.1:8443",
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://localhost",
        "http://localhost:9000",
        "http://[::1]:9",
    ],
)
def test_check_base_url_accepts_https_anywhere_and_plain_http_on_loopback(url: str) -> None:
    assert check_base_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.0.0.1",
        "http://192.168.1.5:8080",
        "http://localhost.example.com",
        "ftp://business-api.tiktok.com",
        "business-api.tiktok.com",
        "https://",
    ],
)
def test_check_base_url_refuses_plain_http_off_loopback_and_other_schemes(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        check_base_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://business-api.tiktok.com/", "https://business-api.tiktok.com"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ],
)
def test_check_base_url_removes_trailing_slash(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize("url", ["http://[::1", "https://[not-an-ip]/"])
def test_check_base_url_reports_malformed_url_as_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        check_base_url(url)


def test_http_backend_uses_checked_base_url() -> None:
    backend = tiktok_backend("https://business-api.tiktok.com/")

    assert backend.url_for("segment/mapping/") == MAPPING_URL
    assert backend.url_for("/segment/audience/") == AUDIENCE_URL
    with pytest.raises(ConfigurationError):
        tiktok_backend("http://example.com")


# --- DryRunBackend ------------------------------------------------------------------------


def test_dry_run_backend_answers_ok_envelope_and_keeps_requests() -> None:
    backend = DryRunBackend(keep=True)
    first = ApiRequest(method="POST", path="segment/mapping/", json={"a": 1})
    second = ApiRequest(method="POST", path="segment/audience/", json={"b": 2})

    reply = backend.send(first)
    backend.send(second)

    assert reply.status == 200
    assert reply.body["code"] == 0
    assert classify(reply, what="dry run").data == {}
    assert backend.requests == [first, second]


def test_api_on_dry_run_backend_sends_nothing_but_records_the_request() -> None:
    backend = DryRunBackend(keep=True)
    api = TikTokApi(backend, Secret(TOKEN))

    assert send_mapping(api) == {}

    assert len(backend.requests) == 1
    request = backend.requests[0]
    assert request.method == "POST"
    assert request.path == "segment/mapping/"
    assert request.json == MAPPING_ARGS
    assert api.requests_sent == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"failed_rows": [1, {"index": 0, "message": "bad id"}]}, {0: "bad id", 1: "partial"}),
        ({"failed_rows": [7, -1, True, "2"]}, {}),  # out of range or not an index
        ({}, {}),  # names no rows: all delivered (and a warning)
    ],
)
def test_partial_success_names_the_refused_rows(
    data: dict[str, Any], expected: dict[int, str]
) -> None:
    reply = ApiResponse(200, {"code": 20001, "message": "partial", "request_id": "p", "data": data})
    refused = failed_rows(classify(reply, what="add users"), rows=3)
    assert {i: m.removeprefix("TikTok refused this user: ") for i, m in refused.items()} == expected


def test_full_success_refuses_no_row() -> None:
    reply = ApiResponse(200, {"code": 0, "message": "OK", "request_id": "p", "data": {"x": 1}})
    assert failed_rows(classify(reply, what="add users"), rows=3) == {}
