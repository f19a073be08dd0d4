"""The webhook destination, run by the same ``sync`` command as TikTok (issue 15).

A receiver on loopback records what it is sent and answers as a test scripts it; the
webhook's mapping file (``mappings/webhook.json`` and variants) goes through the same
runner: subscriptions, per-event results, the rejected and retry files, workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from destination.cli import main
from destination.kit.action import TwoStepAction
from destination.kit.registry import registered
from destination.webhook.post import Post
from tests.test_sync import audience_event, write_events

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "mappings" / "webhook.json"
TOKEN = "webhook-secret-7c1d"

Reply = tuple[int, Any]  # HTTP status, JSON body (None: none)


class Receiver:
    """Records each POST (headers and JSON body); ``answer(body)`` says what to reply."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answer: Callable[[dict[str, Any]], Reply] = lambda _body: (200, None)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append(body)
                receiver.headers.append(dict(self.headers))
                status, reply = receiver.answer(body)
                data = b"" if reply is None else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"

    @property
    def items(self) -> list[Any]:
        return [item for post in self.posts for item in post["batch"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def mapping_file(tmp_path: Path, url: str, **settings: Any) -> Path:
    document = json.loads(SHIPPED.read_text("utf-8"))
    document["settings"].update({"url": url, "retry_initial_wait": 0, "concurrency": 1, **settings})
    path = tmp_path / "webhook.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def sync(
    capsys: pytest.CaptureFixture[str], mapping: Path, events: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    out = io.StringIO()
    code = main(["sync", "--mapping", str(mapping), "--events", str(events), *extra], stdout=out)
    summary = json.loads(out.getvalue().splitlines()[-1]) if out.getvalue() else {}
    return code, summary, capsys.readouterr().err


def events_of(tmp_path: Path, count: int, *, extra: list[Any] | None = None) -> Path:
    lines: list[Any] = [audience_event(f"u{i}", entered=i % 3 != 0) for i in range(count)]
    return write_events(tmp_path / "events.ndjson", lines + (extra or []))


def test_the_webhook_is_a_registered_destination_beside_tiktok() -> None:
    assert {"tiktok-audiences", "webhook"} <= set(registered())


def test_sync_posts_the_mapped_payloads_in_batches(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = events_of(tmp_path, 25, extra=[{"type": "identify", "userId": "x"}])

    code, summary, _ = sync(
        capsys,
        mapping_file(tmp_path, receiver.url, batch_size=10),
        events,
        "--rejected",
        str(tmp_path / "rejected.ndjson"),
    )

    assert code == 0
    assert [len(p["batch"]) for p in receiver.posts] == [10, 10, 5]
    assert receiver.items[0] == {
        "event": "Audience Exited",
        "user": "u0",
        "audience": "vip_customers",
        "email": hashlib.sha256(b"u0@example.com").hexdigest(),  # mapped under "hashed"
    }
    assert "@example.com" not in json.dumps(receiver.posts)
    assert receiver.items[1]["event"] == "Audience Entered"
    assert summary["received"] == 26
    assert summary["delivered"] == 25
    assert summary["rejected_by_reason"] == {"no_subscription": 1}
    assert summary["requests"] == 3
    assert summary["delivered_by_subscription"] == {"Audience changes": 25}


def test_a_refused_batch_rejects_its_events_and_the_run_goes_on(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([(400, None), (200, None)])
    receiver.answer = lambda _body: next(answers)
    rejected = tmp_path / "rejected.ndjson"

    code, summary, _ = sync(
        capsys,
        mapping_file(tmp_path, receiver.url, batch_size=5),
        events_of(tmp_path, 10),
        "--rejected",
        str(rejected),
    )

    assert code == 0
    assert summary["delivered"] == 5
    assert summary["rejected_by_reason"] == {"webhook_rejected": 5}
    records = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert all("HTTP 400" in r["message"] for r in records)


def test_the_webhook_may_answer_each_item_alone(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def per_item(body: dict[str, Any]) -> Reply:
        results = [
            {"ok": item["user"] != "u2", "message": "unknown user"} for item in body["batch"]
        ]
        return 200, {"results": results}

    receiver.answer = per_item
    rejected = tmp_path / "rejected.ndjson"

    code, summary, _ = sync(
        capsys,
        mapping_file(tmp_path, receiver.url),
        events_of(tmp_path, 4),
        "--rejected",
        str(rejected),
    )

    assert code == 0
    assert summary["delivered"] == 3
    (record,) = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert record["line"] == 3
    assert record["reason"] == "webhook_rejected"
    assert "unknown user" in record["message"]


def test_a_webhook_that_stays_down_stops_the_run_and_defers_every_event(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.answer = lambda _body: (503, None)
    retry = tmp_path / "retry.ndjson"
    events = events_of(tmp_path, 6)

    code, summary, err = sync(
        capsys,
        mapping_file(tmp_path, receiver.url, batch_size=2, max_attempts=2),
        events,
        "--retry-file",
        str(retry),
    )

    assert code == 5
    assert summary["stopped"]["reason"] == "api_unavailable"
    assert summary["deferred"] == 6
    assert len(receiver.posts) == 2  # one batch, tried twice
    assert retry.read_bytes() == events.read_bytes()  # sync --events takes it back as it is
    assert "HTTP 503" in err


def test_workers_give_the_same_posts(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = mapping_file(tmp_path, receiver.url, batch_size=7)
    events = events_of(tmp_path, 40)
    runs = []
    for workers in ("0", "1"):
        receiver.posts.clear()
        code, summary, _ = sync(capsys, mapping, events, "--workers", workers)
        assert code == 0
        runs.append((list(receiver.posts), summary["delivered"]))
    assert runs[0] == runs[1]


def test_a_dry_run_posts_nothing(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, _ = sync(
        capsys, mapping_file(tmp_path, receiver.url), events_of(tmp_path, 3), "--dry-run"
    )
    assert code == 0
    assert summary["delivered"] == 3
    assert receiver.posts == []


def test_the_token_goes_in_the_authorization_header_and_nowhere_else(
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_TOKEN", TOKEN)
    out = io.StringIO()
    mapping = mapping_file(tmp_path, receiver.url)
    argv = ["--debug", "sync", "--mapping", str(mapping), "--events", str(events_of(tmp_path, 2))]
    assert main(argv, stdout=out) == 0
    assert receiver.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in out.getvalue() + capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/events", "http://10.0.0.1/x", "http://u:p@127.0.0.1:1/"]
)
def test_a_url_off_this_machine_is_refused_before_anything_is_sent(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, err = sync(capsys, mapping_file(tmp_path, url), events_of(tmp_path, 1))
    assert code == 2
    assert summary == {}
    assert "url" in err
    assert "p@" not in err


def test_a_webhook_mapping_file_is_checked_against_the_webhooks_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(SHIPPED.read_text("utf-8"))
    document["subscriptions"][0]["action"] = "addToAudience"  # TikTok's, not the webhook's
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(document))

    code, _, err = sync(capsys, path, events_of(tmp_path, 1))

    assert code == 3
    assert "/subscriptions/0/action" in err


def test_hashing_is_the_pure_step_so_worker_processes_do_it() -> None:
    post = Post(None)
    assert isinstance(post, TwoStepAction)
    digest = post.digest({"data": {"a": 1}, "hashed": {"email": " A@x.COM "}})
    assert digest == {"a": 1, "email": hashlib.sha256(b"a@x.com").hexdigest()}
    assert post.place(digest).item is digest
