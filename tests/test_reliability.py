"""Reliability: rate limits, faults, crashes and bad input lose nothing.

Every run here checks ``received == delivered + rejected + deferred``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest, ApiResponse, Backend
from destination.cli import main
from destination.fake_server import FakeTikTok, FaultPlan, serve_in_thread
from destination.kit.ratelimit import RateLimiter
from destination.runner.reader import read_ndjson
from destination.runner.sync import SyncOptions, run_sync
from destination.settings import Secret
from destination.tiktok import plugin as sync_module
from destination.tiktok.api import RetryPolicy, TikTokApi, tiktok_backend
from destination.tiktok.normalize import hash_email
from tests.clock import FakeClock, ThreadsClock
from tests.fake_backends import CrashAfter, kill_at_the_hold

ROOT = Path(__file__).resolve().parent.parent
ADVERTISER = "7000000000000000001"
TOKEN = "reliability-token"


def make_fake() -> tuple[FakeTikTok, str]:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER])
    return fake, fake.add_audience(ADVERTISER, "vip")


def event(i: int, audience_id: str, *, entered: bool = True) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Audience Entered" if entered else "Audience Exited",
        "context": {
            "traits": {"email": f"user{i}@example.com"},
            "personas": {
                "external_audience_id": audience_id,
                "audience_settings": {"advertiserId": ADVERTISER},
            },
        },
    }


def write_events(path: Path, lines: list[Any]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            data = line if isinstance(line, bytes) else json.dumps(line).encode()
            handle.write(data + b"\n")
    return path


def write_mapping(tmp_path: Path, **settings: Any) -> Path:
    document = json.loads((ROOT / "mappings" / "segment-native.json").read_text())
    document["settings"].update(
        {"qps": 0, "retry_initial_wait": 0, "max_attempts": 3, "concurrency": 1, **settings}
    )
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(document))
    return path


def environ(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "TIKTOK_ACCESS_TOKEN": TOKEN,
        "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        **more,
    }


def accounted(summary: dict[str, Any]) -> dict[str, Any]:
    assert summary["received"] == summary["delivered"] + summary["rejected"] + summary["deferred"]
    return summary


def accepted_emails(fake: FakeTikTok) -> Counter[str]:
    """How many accepted segment/mapping requests carried each email hash."""
    seen: Counter[str] = Counter()
    for request in fake.accepted:
        if request.path == "segment/mapping/":
            for row in request.json["batch_data"]:
                seen.update(entry["id"] for entry in row if entry)
    return seen


# --- crash and resume ---------------------------------------------------------------


def test_sigkill_mid_run_then_rerun_with_the_same_state_delivers_everything_once(
    tmp_path: Path,
) -> None:
    """Kill ``sync`` while TikTok holds a request; the rerun resumes after the last batch."""
    fake, audience_id = make_fake()
    total, batch = 3000, 50
    events = write_events(tmp_path / "events.ndjson", [event(i, audience_id) for i in range(total)])
    arrived = fake.hold_after("segment/mapping/", 20)  # the 21st batch waits, unprocessed
    with serve_in_thread(fake) as server:
        command = [
            sys.executable, "-m", "destination", "sync",
            "--mapping", str(write_mapping(tmp_path, batch_size=batch)),
            "--events", str(events),
            "--rejected", str(tmp_path / "rejected.ndjson"),
            "--state", str(tmp_path / "state"),
        ]  # fmt: skip
        env = {
            **os.environ,
            **environ(tmp_path, TIKTOK_API_BASE_URL=server.base_url),
            "PYTHONPATH": str(ROOT),
        }
        kill_at_the_hold(fake, arrived, command, env)
        checkpoint = json.loads((tmp_path / "state" / "checkpoint.json").read_text())
        assert checkpoint["progress"]["next_line"] == 20 * batch + 1

        second = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr.decode()
    summary = accounted(json.loads(second.stdout.decode().splitlines()[-1]))
    assert summary["resumed"] is True
    assert summary["received"] == summary["delivered"] == total
    seen = accepted_emails(fake)
    assert len(seen) == total and set(seen.values()) == {1}  # no batch accepted twice
    assert len(fake.members(audience_id)["EMAIL_SHA256"]) == total
    assert (tmp_path / "rejected.ndjson").read_text() == ""


def test_a_resumed_run_counts_and_writes_the_first_runs_rejections_once(tmp_path: Path) -> None:
    fake, audience_id = make_fake()
    lines: list[Any] = []
    for i in range(40):
        lines.append(event(i, audience_id))
        if i % 10 == 3:
            lines.append(b"not json")
    events = write_events(tmp_path / "events.ndjson", lines)
    options = SyncOptions(
        mapping=write_mapping(tmp_path, batch_size=5),
        events=str(events),
        rejected=tmp_path / "rejected.ndjson",
        state=tmp_path / "state",
    )
    with pytest.raises(SystemExit):
        run_sync(options, environ=environ(tmp_path), backend=CrashAfter(fake, 3))
    summary = accounted(run_sync(options, environ=environ(tmp_path), backend=fake))
    assert summary["resumed"] is True
    assert summary["received"] == 44
    assert summary["delivered"] == 40
    assert summary["rejected_by_reason"] == {"invalid_json": 4}
    rejected = [json.loads(x) for x in (tmp_path / "rejected.ndjson").read_text().splitlines()]
    assert sorted(r["line"] for r in rejected) == [5, 16, 27, 38]
    assert set(accepted_emails(fake).values()) == {1}

    again = accounted(run_sync(options, environ=environ(tmp_path), backend=fake))
    assert again["requests"] == 0 and again["received"] == 44  # a finished run stays finished


def test_a_checkpoint_of_another_input_is_refused(tmp_path: Path) -> None:
    fake, audience_id = make_fake()
    state = tmp_path / "state"
    mapping = write_mapping(tmp_path)
    first = write_events(tmp_path / "a.ndjson", [event(1, audience_id)])
    run_sync(
        SyncOptions(mapping=mapping, events=str(first), state=state),
        environ=environ(tmp_path),
        backend=fake,
    )
    write_events(first, [event(1, audience_id), event(2, audience_id)])
    code = main(["sync", "--mapping", str(mapping), "--events", str(first), "--state", str(state)])
    assert code == 2


# --- TikTok down: the retry file ------------------------------------------------------


def test_events_tiktok_could_not_take_go_to_the_retry_file_and_a_later_run_delivers_them(
    tmp_path: Path,
) -> None:
    fake, audience_id = make_fake()
    events = write_events(tmp_path / "events.ndjson", [event(i, audience_id) for i in range(30)])
    mapping = write_mapping(tmp_path, batch_size=10, max_attempts=2)
    fake.fail_next(50000, times=2, path="segment/mapping/")  # the first batch fails twice
    retry = tmp_path / "retry.ndjson"
    summary = accounted(
        run_sync(
            SyncOptions(
                mapping=mapping, events=str(events), rejected=tmp_path / "r.ndjson", retry=retry
            ),
            environ=environ(tmp_path),
            backend=fake,
        )
    )
    assert summary["stopped"]["reason"] == "api_unavailable"
    assert summary["deferred"] == 30 and summary["rejected"] == 0
    with retry.open("rb") as handle:
        assert next(read_ndjson(handle)).event == event(0, audience_id)

    again = accounted(
        run_sync(
            SyncOptions(mapping=mapping, events=str(retry)), environ=environ(tmp_path), backend=fake
        )
    )
    assert again["delivered"] == 30
    assert len(fake.members(audience_id)["EMAIL_SHA256"]) == 30


# --- rate limits ------------------------------------------------------------------------


class SentAt:
    """A backend that notes the sending thread's time on ``clock`` before each request
    goes on to ``backend`` (the moment it left, after the rate limiter let it go)."""

    def __init__(self, backend: Backend, clock: ThreadsClock) -> None:
        self._backend = backend
        self._clock = clock
        self._lock = threading.Lock()
        self.times: list[float] = []

    def send(self, request: ApiRequest) -> ApiResponse:
        sent_at = self._clock.thread_now()
        with self._lock:
            self.times.append(sent_at)
        return self._backend.send(request)


def test_four_senders_never_send_more_requests_in_a_second_than_the_qps_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The senders share one limiter at the configured rates. The time is a fake clock's
    (real seconds on a loaded machine would measure the scheduler, not the limiter); the
    requests go over HTTP to the fake TikTok."""
    clock = ThreadsClock()

    class PacedByTheFakeClock(TikTokApi):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, clock=clock, sleep=clock.sleep)

    monkeypatch.setattr(sync_module, "TikTokApi", PacedByTheFakeClock)
    fake, audience_id = make_fake()
    qps, requests = 25, 60
    events = write_events(
        tmp_path / "events.ndjson", [event(i, audience_id) for i in range(requests)]
    )
    mapping = write_mapping(tmp_path, batch_size=1, qps=qps, advertiser_qps=qps, concurrency=4)
    with serve_in_thread(fake) as server:
        sent = SentAt(tiktok_backend(server.base_url), clock)
        summary = run_sync(
            SyncOptions(mapping=mapping, events=str(events)),
            environ=environ(tmp_path, TIKTOK_API_BASE_URL=server.base_url),
            backend=sent,
        )
    assert accounted(summary)["delivered"] == requests
    assert len(fake.requests) == requests
    times = sorted(sent.times)
    assert len(times) == requests
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= qps
    assert times[-1] - times[0] >= (requests - 1) / qps  # and it did not go slower for nothing
    assert times[-1] - times[0] < 2 * (requests - 1) / qps


def test_the_app_and_each_advertiser_have_their_own_bucket() -> None:
    clock = FakeClock(100.25)
    limiter = RateLimiter(qps=10, per_key_qps=2, clock=clock, sleep=clock.sleep)
    allowed: list[tuple[str, float]] = []
    for key in ["a", "b", "a", "b", "a", "c"]:
        limiter.acquire(key)
        allowed.append((key, clock.now))
    a_times = [t for k, t in allowed if k == "a"]
    assert a_times[1] - a_times[0] >= 0.5 and a_times[2] - a_times[1] >= 0.5  # 2 qps per key
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(allowed)]
    assert all(gap >= 0.1 for gap in gaps)  # 10 qps for the app


def test_a_rate_limit_answer_slows_down_for_the_rest_of_the_second() -> None:
    clock = FakeClock(100.25)
    answers = [
        ApiResponse(200, {"code": 40100, "message": "app limit", "request_id": "1", "data": {}}),
        ApiResponse(200, {"code": 0, "message": "OK", "request_id": "2", "data": {}}),
    ]
    sent_at: list[float] = []

    class Backend:
        def send(self, request: ApiRequest) -> ApiResponse:
            sent_at.append(clock.now)
            return answers.pop(0)

    api = TikTokApi(
        Backend(),
        Secret(TOKEN),
        retry=RetryPolicy(max_attempts=3, initial_wait=0),
        qps=50,
        clock=clock,
        sleep=clock.sleep,
    )
    api.segment_mapping(
        advertiser_ids=[ADVERTISER], action="add", id_schema=["EMAIL_SHA256"], batch_data=[]
    )
    assert sent_at[0] == 100.25
    assert sent_at[1] >= 101.0  # not before the next second


# --- faults over real HTTP ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["drop_before", "drop_after", "http_503", "50002", "slow"])
def test_each_fault_kind_over_http_is_survived(kind: str, tmp_path: Path) -> None:
    fake, audience_id = make_fake()
    fake.inject_faults(FaultPlan({kind: 0.5}, seed=3, slow_seconds=0.01))
    events = write_events(tmp_path / "events.ndjson", [event(i, audience_id) for i in range(40)])
    mapping = write_mapping(tmp_path, batch_size=4, max_attempts=12, concurrency=2)
    with serve_in_thread(fake) as server:
        summary = run_sync(
            SyncOptions(mapping=mapping, events=str(events), rejected=tmp_path / "r.ndjson"),
            environ=environ(tmp_path, TIKTOK_API_BASE_URL=server.base_url),
        )
    assert accounted(summary)["delivered"] == 40, summary
    assert len(fake.members(audience_id)["EMAIL_SHA256"]) == 40
    # the faults were met (and, but for slow replies, retried)
    assert summary["requests"] == 10 if kind == "slow" else summary["requests"] > 10


def test_a_fault_plan_replays_the_same_schedule_from_its_seed() -> None:
    rates = {"50000": 0.2, "http_503": 0.1, "drop_after": 0.1}
    first = [FaultPlan(rates, seed=42).draw() for _ in range(1)]
    plan_a, plan_b = FaultPlan(rates, seed=42), FaultPlan(rates, seed=42)
    schedule = [plan_a.draw() for _ in range(200)]
    assert schedule == [plan_b.draw() for _ in range(200)]
    assert schedule[:1] == first
    assert {"50000", "http_503", "drop_after", None} <= set(schedule)
    with pytest.raises(ValueError):
        FaultPlan({"nope": 0.1})


def test_http_backend_reports_a_dropped_connection_as_retryable() -> None:
    fake, _ = make_fake()
    fake.inject_faults(FaultPlan({"drop_before": 1.0}))
    with serve_in_thread(fake) as server:
        api = TikTokApi(
            tiktok_backend(server.base_url),
            Secret(TOKEN),
            retry=RetryPolicy(max_attempts=2, initial_wait=0),
        )
        with pytest.raises(Exception, match="gave up after 2 attempts"):
            api.create_segment_audience(ADVERTISER, "x")
    assert fake.audiences(ADVERTISER)[1:] == []  # dropped before: nothing was created


# --- bad input ---------------------------------------------------------------------------


def test_bad_lines_are_rejected_with_their_line_numbers_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    fake, audience_id = make_fake()
    lines: list[Any] = [
        event(1, audience_id),
        b"{not json",
        b"[1, 2]",
        b"\xff\xfe\x00binary",
        b"x" * 5000,  # longer than max_event_bytes
        b"",
        {"type": "track", "event": "Audience Entered", "context": {"traits": {"email": 42}}},
        b'{"a": ' * 3000 + b"1" + b"}" * 3000,  # nested too deeply for any JSON parser
        event(2, audience_id),
    ]
    events = write_events(tmp_path / "events.ndjson", lines)
    summary = accounted(
        run_sync(
            SyncOptions(
                mapping=write_mapping(tmp_path, max_event_bytes=4096),
                events=str(events),
                rejected=tmp_path / "rejected.ndjson",
            ),
            environ=environ(tmp_path),
            backend=fake,
        )
    )
    assert summary["received"] == 8 and summary["delivered"] == 2
    records = [json.loads(x) for x in (tmp_path / "rejected.ndjson").read_text().splitlines()]
    by_line = {r["line"]: r for r in records}
    assert sorted(by_line) == [2, 3, 4, 5, 7, 8]
    assert "longer than 4096 bytes" in by_line[5]["message"]
    assert "not UTF-8" in by_line[4]["message"]
    assert by_line[7]["reason"] == "invalid"
    assert "email must be of type string" in by_line[7]["message"]


def test_an_empty_events_file_is_a_run_of_nothing(tmp_path: Path, capsys: Any) -> None:
    events = tmp_path / "empty.ndjson"
    events.write_bytes(b"")
    code = main(
        ["sync", "--mapping", str(write_mapping(tmp_path)), "--events", str(events), "--dry-run"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["received"] == 0 and summary["requests"] == 0


def test_a_mapping_that_points_nowhere_is_reported(tmp_path: Path, capsys: Any) -> None:
    document = json.loads(write_mapping(tmp_path).read_text())
    document["subscriptions"][0]["mapping"]["email"] = {"@path": "$.context.traits.emial"}
    mapping = tmp_path / "typo.json"
    mapping.write_text(json.dumps(document))
    fake, audience_id = make_fake()
    lines = [event(i, audience_id) for i in range(3)]
    for line in lines:
        line["context"]["traits"]["phone"] = "+16502530000"
    events = write_events(tmp_path / "events.ndjson", lines)
    summary = run_sync(
        SyncOptions(mapping=mapping, events=str(events)), environ=environ(tmp_path), backend=fake
    )
    assert summary["delivered"] == 3  # the phone carried them
    # only the field mapped its own way is reported: no advertising id (default mapping,
    # empty in every event here) is normal
    (warning,) = summary["warnings"]
    assert "field email was empty in all 3 events" in warning


def test_tiktok_down_for_good_exits_5_with_every_event_in_the_retry_file(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, audience_id = make_fake()
    fake.inject_faults(FaultPlan({"http_503": 1.0}))
    events = write_events(tmp_path / "events.ndjson", [event(i, audience_id) for i in range(7)])
    with serve_in_thread(fake) as server:
        for name, value in environ(tmp_path, TIKTOK_API_BASE_URL=server.base_url).items():
            monkeypatch.setenv(name, value)
        code = main(
            [
                "sync", "--mapping", str(write_mapping(tmp_path, max_attempts=2)),
                "--events", str(events), "--retry-file", str(tmp_path / "retry.ndjson"),
            ]
        )  # fmt: skip
    assert code == 5
    out, err = capsys.readouterr()
    summary = accounted(json.loads(out.splitlines()[-1]))
    assert summary["deferred"] == 7
    assert len((tmp_path / "retry.ndjson").read_text().splitlines()) == 7
    assert "stopped" in err and TOKEN not in out + err
    assert hash_email("user0@example.com") not in (tmp_path / "retry.ndjson").read_text()


def test_partial_success_rejects_only_the_users_tiktok_refused(tmp_path: Path) -> None:
    fake, audience_id = make_fake()
    fake.refuse_users({hash_email("user3@example.com"), hash_email("user7@example.com")})
    events = write_events(tmp_path / "events.ndjson", [event(i, audience_id) for i in range(10)])
    summary = accounted(
        run_sync(
            SyncOptions(
                mapping=write_mapping(tmp_path, batch_size=5),
                events=str(events),
                rejected=tmp_path / "rejected.ndjson",
            ),
            environ=environ(tmp_path),
            backend=fake,
        )
    )
    assert summary["delivered"] == 8
    assert summary["rejected_by_reason"] == {"tiktok_rejected": 2}
    records = [json.loads(x) for x in (tmp_path / "rejected.ndjson").read_text().splitlines()]
    assert [r["line"] for r in records] == [4, 8]
    assert "refused" in records[0]["message"]
    held = fake.members(audience_id)["EMAIL_SHA256"]
    assert hash_email("user3@example.com") not in held and len(held) == 8
