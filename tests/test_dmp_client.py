"""The DMP methods of the TikTok client (issue 17) and multipart uploads.

The client methods run against a scripted backend that keeps every request: paths,
bodies, the explicit update action, what happens after a lost reply (a create is not
sent twice, a REPLACE is not repeated). Uploads go through the real ``HttpBackend`` to a
small HTTP server on 127.0.0.1 that checks the bytes received and their MD5, and whose
memory use does not grow with the file.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest, ApiResponse, HttpBackend
from destination.errors import ApiUnavailableError, PermanentError, RetryableError
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, TikTokApi
from tests.upload_server import upload_server

ADVERTISER = "7000000000000000001"
TOKEN = "dmp-client-token-0123456789"
LIST = "dmp/custom_audience/list/"
ADGROUPS = "adgroup/get/"

Answer = ApiResponse | Callable[[ApiRequest], ApiResponse]


def ok(**data: Any) -> ApiResponse:
    return ApiResponse(200, {"code": 0, "message": "OK", "request_id": "r1", "data": data})


def lost(_: ApiRequest) -> ApiResponse:
    """The request reached TikTok, which carried it out; the reply never came back."""
    raise RetryableError("POST failed in transport: ConnectionError")


class Scripted:
    """Answers each path from its queue (the last answer repeats); keeps every request."""

    def __init__(self, answers: dict[str, list[Answer]]) -> None:
        self.answers = answers
        self.requests: list[ApiRequest] = []

    def send(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        queue = self.answers[request.path]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def sent(self, path: str) -> list[ApiRequest]:
        return [r for r in self.requests if r.path == path]


def api_for(backend: Any) -> TikTokApi:
    return TikTokApi(backend, Secret(TOKEN), retry=RetryPolicy(max_attempts=4, initial_wait=0))


def listed(*audiences: dict[str, Any]) -> ApiResponse:
    return ok(list=list(audiences), page_info={"page": 1, "total_page": 1})


# ------------------------------------------------------------------------ requests


def test_upload_sends_the_file_as_a_form_with_its_signature(tmp_path: Path) -> None:
    upload = tmp_path / "people.csv"
    upload.write_text("EMAIL_SHA256\n" + "a" * 64 + "\n")
    backend = Scripted({"dmp/custom_audience/file/upload/": [ok(file_path="tt/f1")]})

    assert api_for(backend).upload_audience_file(ADVERTISER, upload, "0" * 32) == "tt/f1"

    [request] = backend.requests
    assert request.method == "POST"
    assert request.json is None
    assert dict(request.files) == {"file": ("people.csv", upload)}
    assert dict(request.params) == {
        "advertiser_id": ADVERTISER,
        "file_signature": "0" * 32,
        "calculate_type": "MULTIPLE_TYPES",
    }


def test_upload_without_a_file_path_in_the_reply_is_refused(tmp_path: Path) -> None:
    upload = tmp_path / "people.csv"
    upload.write_text("EMAIL_SHA256\n")
    backend = Scripted({"dmp/custom_audience/file/upload/": [ok()]})
    with pytest.raises(PermanentError, match="no file_path"):
        api_for(backend).upload_audience_file(ADVERTISER, upload, "0" * 32)


def test_create_customer_file_audience_names_the_uploaded_files() -> None:
    backend = Scripted({"dmp/custom_audience/create/": [ok(custom_audience_id="111")]})

    audience_id = api_for(backend).create_customer_file_audience(
        ADVERTISER, "Buyers", ["tt/f1", "tt/f2"]
    )

    assert audience_id == "111"
    assert backend.requests[0].json == {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "Buyers",
        "calculate_type": "MULTIPLE_TYPES",
        "file_paths": ["tt/f1", "tt/f2"],
    }


@pytest.mark.parametrize("action", ["APPEND", "REMOVE", "REPLACE"])
def test_update_always_writes_its_action(action: Any) -> None:
    backend = Scripted({"dmp/custom_audience/update/": [ok()]})

    api_for(backend).update_customer_file_audience(ADVERTISER, "111", action, ["tt/f1"])

    assert backend.requests[0].json == {
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "111",
        "action": action,
        "file_paths": ["tt/f1"],
    }


@pytest.mark.parametrize("action", ["", "append", "DELETE"])
def test_update_refuses_an_action_tiktok_does_not_know_before_sending(action: Any) -> None:
    backend = Scripted({})
    with pytest.raises(ValueError, match="APPEND, REMOVE, REPLACE"):
        api_for(backend).update_customer_file_audience(ADVERTISER, "111", action, ["tt/f1"])
    assert backend.requests == []


def test_rule_and_lookalike_creates_send_the_body_as_built() -> None:
    rule = {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "Viewers",
        "audience_type": "ENGAGEMENT",
        "is_auto_refresh": True,
        "rule_spec": {"inclusion_rule_set": {"operator": "OR", "rules": []}},
    }
    lookalike = {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "Like viewers",
        "lookalike_spec": {"source_audience_id": "5", "audience_size": "NARROW"},
    }
    backend = Scripted(
        {
            "dmp/custom_audience/rule/create/": [ok(custom_audience_id="201")],
            "dmp/custom_audience/lookalike/create/": [ok(custom_audience_id="202")],
        }
    )
    api = api_for(backend)

    assert api.create_rule_audience(rule) == "201"
    assert api.create_lookalike(lookalike) == "202"
    assert [r.json for r in backend.requests] == [rule, lookalike]


def test_a_rule_audience_type_the_client_cannot_look_up_is_refused() -> None:
    backend = Scripted({})
    body = {"advertiser_id": ADVERTISER, "custom_audience_name": "x", "audience_type": "PIXEL"}
    with pytest.raises(ValueError, match="ENGAGEMENT"):
        api_for(backend).create_rule_audience(body)
    assert backend.requests == []


def test_refresh_share_cancel_and_apply_bodies() -> None:
    backend = Scripted(
        {
            "dmp/custom_audience/lookalike/update/": [ok()],
            "dmp/custom_audience/share/": [ok()],
            "dmp/custom_audience/share/cancel/": [ok()],
            "dmp/custom_audience/apply/": [ok()],
        }
    )
    api = api_for(backend)

    api.refresh_lookalike(ADVERTISER, "202")
    api.share_audiences(ADVERTISER, ["201", "202"], ["7000000000000000002"])
    api.cancel_share(ADVERTISER, "201", "7000000000000000002")
    api.apply_audience(ADVERTISER, "201", ["9001", "9002"], mode="Apply", usage="Exclude")

    assert [(r.path, r.json) for r in backend.requests] == [
        (
            "dmp/custom_audience/lookalike/update/",
            {"advertiser_id": ADVERTISER, "custom_audience_id": "202"},
        ),
        (
            "dmp/custom_audience/share/",
            {
                "advertiser_id": ADVERTISER,
                "custom_audience_ids": ["201", "202"],
                "shared_advertiser_ids": ["7000000000000000002"],
            },
        ),
        (
            "dmp/custom_audience/share/cancel/",
            {
                "advertiser_id": ADVERTISER,
                "custom_audience_id": "201",
                "shared_advertiser_id": "7000000000000000002",
            },
        ),
        (
            "dmp/custom_audience/apply/",
            {
                "advertiser_id": ADVERTISER,
                "custom_audience_id": "201",
                "adgroup_ids": ["9001", "9002"],
                "action_mode": "Apply",
                "usage_mode": "Exclude",
            },
        ),
    ]


@pytest.mark.parametrize(("audiences", "advertisers"), [(0, 1), (11, 1), (1, 0), (1, 11)])
def test_share_keeps_to_tiktoks_ten_and_ten(audiences: int, advertisers: int) -> None:
    backend = Scripted({})
    with pytest.raises(ValueError, match="1 to 10"):
        api_for(backend).share_audiences(
            ADVERTISER,
            [str(i) for i in range(audiences)],
            [str(7000 + i) for i in range(advertisers)],
        )
    assert backend.requests == []


def test_list_adgroups_reads_every_page() -> None:
    pages = [
        ok(list=[{"adgroup_id": "1"}, {"adgroup_id": "2"}], page_info={"total_page": 2}),
        ok(list=[{"adgroup_id": "3"}], page_info={"total_page": 2}),
    ]
    backend = Scripted({ADGROUPS: list(pages)})

    found = api_for(backend).list_adgroups(ADVERTISER)

    assert [a["adgroup_id"] for a in found] == ["1", "2", "3"]
    assert [r.params["page"] for r in backend.requests] == ["1", "2"]
    assert {r.params["advertiser_id"] for r in backend.requests} == {ADVERTISER}


def test_tiktoks_refusal_carries_its_message() -> None:
    refused = ApiResponse(
        200, {"code": 40002, "message": "a shared audience cannot be edited", "request_id": "x"}
    )
    backend = Scripted({"dmp/custom_audience/update/": [refused]})
    with pytest.raises(PermanentError, match="a shared audience cannot be edited"):
        api_for(backend).update_customer_file_audience(ADVERTISER, "111", "APPEND", ["f"])
    assert len(backend.requests) == 1  # a refusal is not retried


# ------------------------------------------------------------- lost replies


@pytest.mark.parametrize(
    ("path", "listed_type", "create"),
    [
        (
            "dmp/custom_audience/create/",
            "Customer File",
            lambda api: api.create_customer_file_audience(ADVERTISER, "Buyers", ["f"]),
        ),
        (
            "dmp/custom_audience/rule/create/",
            "App Activity",
            lambda api: api.create_rule_audience(
                {
                    "advertiser_id": ADVERTISER,
                    "custom_audience_name": "Buyers",
                    "audience_type": "APP",
                }
            ),
        ),
        (
            "dmp/custom_audience/lookalike/create/",
            "Lookalike",
            lambda api: api.create_lookalike(
                {"advertiser_id": ADVERTISER, "custom_audience_name": "Buyers"}
            ),
        ),
    ],
)
def test_a_create_whose_reply_was_lost_is_found_not_sent_again(
    path: str, listed_type: str, create: Callable[[TikTokApi], str]
) -> None:
    older = {"audience_id": "300", "name": "Buyers", "type": listed_type, "owner_id": ADVERTISER}
    made = {**older, "audience_id": "301", "create_time": "2026-01-02 00:00:00"}
    other_type = {**made, "audience_id": "302", "type": "Partner"}
    backend = Scripted({path: [lost], LIST: [listed(older, made, other_type)]})

    assert create(api_for(backend)) == "301"
    assert len(backend.sent(path)) == 1


def test_a_create_whose_reply_was_lost_and_not_made_is_sent_again() -> None:
    path = "dmp/custom_audience/create/"
    backend = Scripted({path: [lost, ok(custom_audience_id="400")], LIST: [listed()]})

    audience_id = api_for(backend).create_customer_file_audience(ADVERTISER, "Buyers", ["f"])

    assert audience_id == "400"
    assert len(backend.sent(path)) == 2


def test_a_replace_whose_reply_was_lost_is_not_sent_again() -> None:
    path = "dmp/custom_audience/update/"
    backend = Scripted({path: [lost, ok()]})

    with pytest.raises(ApiUnavailableError, match="unknown") as raised:
        api_for(backend).update_customer_file_audience(ADVERTISER, "111", "REPLACE", ["f"])

    assert "audiences get 111" in str(raised.value)
    assert len(backend.sent(path)) == 1


def test_an_append_whose_reply_was_lost_is_sent_again() -> None:
    path = "dmp/custom_audience/update/"
    backend = Scripted({path: [lost, ok()]})

    api_for(backend).update_customer_file_audience(ADVERTISER, "111", "APPEND", ["f"])

    assert len(backend.sent(path)) == 2


@pytest.mark.parametrize(
    ("mode", "targeting", "sends"),
    [
        ("Apply", {"audience_ids": ["201"]}, 1),  # the lost attempt included it
        ("Apply", {"audience_ids": []}, 2),  # it did not: sent again
        ("Disconnect", {"audience_ids": []}, 1),
        ("Disconnect", {"audience_ids": ["201"]}, 2),
    ],
)
def test_an_apply_whose_reply_was_lost_is_sent_again_only_if_not_done(
    mode: Any, targeting: dict[str, Any], sends: int
) -> None:
    path = "dmp/custom_audience/apply/"
    adgroups = ok(list=[{"adgroup_id": "9001", **targeting}], page_info={"total_page": 1})
    backend = Scripted({path: [lost, ok()], ADGROUPS: [adgroups]})

    api_for(backend).apply_audience(ADVERTISER, "201", ["9001"], mode=mode, usage="Include")

    assert len(backend.sent(path)) == sends


# -------------------------------------------------------------- multipart over HTTP


def test_an_upload_reaches_the_server_as_a_standard_multipart_form(tmp_path: Path) -> None:
    upload = tmp_path / "people.csv"
    content = b"EMAIL_SHA256,PHONE_SHA256\n" + b"".join(
        hashlib.sha256(str(i).encode()).hexdigest().encode() + b",\n" for i in range(5000)
    )
    upload.write_bytes(content)
    md5 = hashlib.md5(content).hexdigest()
    with upload_server(tmp_path) as (url, received):
        backend = HttpBackend(url, root="open_api/v1.3")
        file_path = api_for(backend).upload_audience_file(ADVERTISER, upload, md5)

    assert file_path == "up/1"
    [request] = received
    assert request.path == "/open_api/v1.3/dmp/custom_audience/file/upload/"  # no query
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["Content-Length"]) == request.body.stat().st_size
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Access-Token"] == TOKEN
    parts = request.parts()
    assert parts["file"] == ("people.csv", content)
    assert hashlib.md5(parts["file"][1]).hexdigest() == md5
    assert parts["file_signature"] == (None, md5.encode())
    assert parts["advertiser_id"] == (None, ADVERTISER.encode())
    assert parts["calculate_type"] == (None, b"MULTIPLE_TYPES")


def test_an_upload_streams_the_file_in_bounded_memory(tmp_path: Path) -> None:
    """A 24 MB file is sent with far less than 24 MB of Python memory (the server, in the
    same process, writes what it receives to disk in 64 KB chunks)."""
    upload = tmp_path / "big.csv"
    line = b"a" * 64 + b"," + b"b" * 64 + b"\n"
    with upload.open("wb") as out:
        for _ in range(24 * 1024 * 1024 // len(line)):
            out.write(line)
    size = upload.stat().st_size
    with upload_server(tmp_path) as (url, received):
        api = api_for(HttpBackend(url, root="open_api/v1.3"))
        api.upload_audience_file(ADVERTISER, upload, "0" * 32)  # warm: pools, imports
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            api.upload_audience_file(ADVERTISER, upload, "0" * 32)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    assert received[-1].parts()["file"][1] == upload.read_bytes()
    assert peak < 2 * 1024 * 1024 < size // 10, f"peak {peak} bytes for a {size}-byte file"


def test_a_file_that_cannot_be_read_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with upload_server(tmp_path) as (url, received):
        api = api_for(HttpBackend(url, root="open_api/v1.3"))
        with pytest.raises(PermanentError, match="cannot read the file to upload"):
            api.upload_audience_file(ADVERTISER, tmp_path / "missing.csv", "0" * 32)
    assert received == []


def test_a_request_with_files_keeps_its_token_out_of_its_repr(tmp_path: Path) -> None:
    request = ApiRequest(
        "POST",
        "dmp/custom_audience/file/upload/",
        params={"advertiser_id": ADVERTISER},
        headers={"Access-Token": TOKEN},
        files={"file": ("people.csv", tmp_path / "people.csv")},
    )
    shown = repr(request)
    assert TOKEN not in shown
    assert "people.csv" in shown
    with pytest.raises(ValueError, match="not both"):
        ApiRequest("POST", "x", json={}, files={"file": ("a.csv", tmp_path / "a.csv")})
