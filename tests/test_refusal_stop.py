"""A run TikTok refuses the same way from its first request stops early (issue 14).

A wrong base URL (404 pages), an audience that does not exist or a mapping TikTok cannot
take used to end with exit 0 and every event ``tiktok_rejected``, each batch sent to be
refused. Now three refusals of one kind with nothing accepted stop the run (exit 2), the
events not sent are rejected with reason ``configuration``, and a shorter run refused
throughout ends with the same exit code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest, ApiResponse
from destination.cli import main
from destination.fake_server import serve_in_thread
from destination.runner.sync import SyncOptions, run_sync
from tests.test_cli import read_rejected as read_records
from tests.test_sync import (
    TOKEN,
    audience_event,
    make_fake,
    write_events,
    write_mapping,
)

MISSING_AUDIENCE = "1899999999999999999"


class Answers:
    """A backend answering every request with one canned reply (a wrong server)."""

    def __init__(self, reply: ApiResponse) -> None:
        self.reply = reply
        self.requests: list[ApiRequest] = []

    def send(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        return self.reply


def run(tmp_path: Path, backend: Any, users: int, **settings: Any) -> dict[str, Any]:
    events = write_events(
        tmp_path / "events.ndjson",
        [audience_event(f"u{i}", external_audience_id=MISSING_AUDIENCE) for i in range(users)],
    )
    return run_sync(
        SyncOptions(
            mapping=write_mapping(tmp_path, batch_size=1, **settings),
            events=str(events),
            rejected=tmp_path / "rejected.ndjson",
        ),
        environ={
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        },
        backend=backend,
    )


@pytest.mark.parametrize(
    "reply",
    [
        ApiResponse(404, None, "<html>Not Found</html>"),
        ApiResponse(200, None, "<html>a login page</html>"),
        ApiResponse(400, {"code": 40002, "message": "id_schema: invalid", "request_id": "r"}),
    ],
    ids=["404", "not-json", "40002"],
)
def test_the_same_refusal_three_times_stops_the_run(tmp_path: Path, reply: ApiResponse) -> None:
    backend = Answers(reply)

    summary = run(tmp_path, backend, users=20)

    assert len(backend.requests) == 3  # not 20
    assert summary["stopped"]["reason"] == "configuration"
    assert (
        "refused the first 3 requests of this run the same way" in (summary["stopped"]["message"])
    )
    assert summary["received"] == summary["rejected"] == 20
    assert summary["rejected_by_reason"] == {"tiktok_rejected": 2, "configuration": 18}
    records = read_records(tmp_path / "rejected.ndjson")
    assert sorted(r["line"] for r in records) == list(range(1, 21))


def test_an_audience_that_does_not_exist_stops_the_cli_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = make_fake()
    events = write_events(
        tmp_path / "events.ndjson",
        [audience_event(f"u{i}", external_audience_id=MISSING_AUDIENCE) for i in range(10)],
    )
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_AUDIENCE_STATE", str(tmp_path / "audiences.json"))
        argv = ["sync", "--mapping", str(write_mapping(tmp_path, batch_size=2))]
        code = main([*argv, "--events", str(events)], stdout=io.StringIO())

    assert code == 2
    assert len(fake.requests) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("tiktok-audiences: stopped: TikTok refused the first 3 requests")
    assert "check base_url, the advertiser and audience settings" in last


def test_a_short_run_refused_throughout_ends_with_exit_2_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Answers(ApiResponse(404, None, "Not Found"))

    summary = run(tmp_path, backend, users=2)

    assert len(backend.requests) == 2
    assert summary["stopped"]["reason"] == "configuration"
    assert "refused every request of this run (2) the same way" in summary["stopped"]["message"]
    assert summary["rejected_by_reason"] == {"tiktok_rejected": 2}


def test_refusals_after_an_accepted_request_are_about_the_data_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    fake.fail_next(40002, message="bad row", times=5, path="segment/mapping/")
    events = write_events(tmp_path / "events.ndjson", [audience_event(f"u{i}") for i in range(8)])

    summary = run_sync(
        SyncOptions(
            mapping=write_mapping(tmp_path, batch_size=1),
            events=str(events),
            rejected=tmp_path / "rejected.ndjson",
        ),
        environ={
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        },
        backend=fake,
    )

    # the audience was created (accepted) first: five refused batches stop nothing
    assert summary["stopped"] is None
    assert summary["delivered"] == 3
    assert summary["rejected_by_reason"] == {"tiktok_rejected": 5}


def test_refusals_of_different_kinds_do_not_stop_the_run(tmp_path: Path) -> None:
    replies = iter(
        [ApiResponse(404, None, "Not Found")]
        + [ApiResponse(400, {"code": 40002, "message": "x", "request_id": "r"})] * 9
    )

    class Mixed(Answers):
        def send(self, request: ApiRequest) -> ApiResponse:
            self.requests.append(request)
            return next(replies)

    backend = Mixed(ApiResponse(0))
    summary = run(tmp_path, backend, users=10)

    assert len(backend.requests) == 10
    assert summary["stopped"] is None
    assert summary["rejected_by_reason"] == {"tiktok_rejected": 10}
