"""The command line, in-process: ``main(argv, stdout=...)``, its exit codes and its output.

Runs that talk to TikTok use the fake TikTok served over real HTTP on loopback
(``TIKTOK_API_BASE_URL`` points at it), so the whole path from argv to the wire is used.
``run_cli`` checks in every run that the access token shows up in neither stdout, stderr
nor the rejected file.

Exit codes: 0 done, 2 settings or usage, 3 mapping file, 4 credentials refused,
5 TikTok unavailable, 6 events input unreadable.
"""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from destination.cli import main
from destination.demo import DEMO_ADVERTISER_ID, demo_fake
from destination.fake_server import FakeTikTok, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DEMO_EVENTS = ROOT / "fixtures" / "demo" / "native-events.ndjson"
TOKEN = "cli-secret-token-5b1e9c"


@dataclass
class Served:
    fake: FakeTikTok
    state: Path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    """The demo fake TikTok on loopback, accepting TOKEN; the environment points at it."""
    fake = demo_fake()
    fake.add_token(TOKEN, advertiser_ids=[DEMO_ADVERTISER_ID])
    state = tmp_path / "state" / "audiences.json"
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_AUDIENCE_STATE", str(state))
        yield Served(fake, state)


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads(self.stdout.splitlines()[-1])
        assert summary["received"] == summary["delivered"] + summary["rejected"]
        return summary


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> CliRun:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    run = CliRun(code, out.getvalue(), capsys.readouterr().err)
    assert TOKEN not in run.stdout
    assert TOKEN not in run.stderr
    if "--rejected" in argv:
        rejected = Path(argv[list(argv).index("--rejected") + 1])
        if rejected.exists():
            assert TOKEN not in rejected.read_text("utf-8")
    return run


def write_mapping(
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None] | None = None,
    *,
    mode: str = "native",
    **settings: Any,
) -> Path:
    document = json.loads((MAPPINGS / f"segment-{mode}.json").read_text("utf-8"))
    document["settings"].update({"qps": 0, "retry_initial_wait": 0, "concurrency": 1, **settings})
    if change is not None:
        change(document)
    path = tmp_path / f"mapping-{mode}.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def audience_events(count: int, *, external_audience_id: str | None = None) -> str:
    """``count`` 'Audience Entered' events of vip_customers as NDJSON."""
    personas: dict[str, Any] = {
        "computation_key": "vip_customers",
        "audience_settings": {"advertiserId": DEMO_ADVERTISER_ID},
    }
    if external_audience_id is not None:
        personas["external_audience_id"] = external_audience_id
    return "".join(
        json.dumps(
            {
                "type": "track",
                "event": "Audience Entered",
                "userId": f"user{i}",
                "context": {"personas": personas, "traits": {"email": f"user{i}@example.com"}},
            }
        )
        + "\n"
        for i in range(count)
    )


def read_rejected(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


# --------------------------------------------------------------------------- sync


def test_sync_prints_a_json_summary_last_and_exits_0_when_some_events_are_rejected(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rejected = tmp_path / "rejected.ndjson"

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path),
        "--events",
        DEMO_EVENTS,
        "--rejected",
        rejected,
    )

    assert run.code == 0
    summary = run.summary
    assert (summary["received"], summary["delivered"], summary["rejected"]) == (12, 8, 4)
    assert summary["rejected_file"] == str(rejected)
    assert len(read_rejected(rejected)) == 4
    assert stat.S_IMODE(rejected.stat().st_mode) == 0o600  # it holds personal data
    assert "12 events: 8 delivered, 4 rejected" in run.stderr
    assert str(rejected) in run.stderr
    assert len(served.fake.requests) == summary["requests"] == 5
    assert served.state.exists()


def test_batch_size_flag_overrides_the_mapping_file(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text(audience_events(7), "utf-8")

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path, batch_size=1000),
        "--events",
        events,
        "--batch-size",
        "3",
    )

    assert run.code == 0
    mapping_calls = [r.json for r in served.fake.requests if r.path == "segment/mapping/"]
    assert [len(c["batch_data"]) for c in mapping_calls] == [3, 3, 1]


def test_events_dash_reads_standard_input(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "sys.stdin", SimpleNamespace(buffer=io.BytesIO(audience_events(4).encode()))
    )

    run = run_cli(capsys, "sync", "--mapping", write_mapping(tmp_path), "--events", "-")

    assert run.code == 0
    assert (run.summary["received"], run.summary["delivered"]) == (4, 4)
    (audience,) = [a for a in served.fake.audiences() if a.name == "vip_customers"]
    assert len(audience.members["EMAIL_SHA256"]) == 4


def test_dry_run_needs_no_token_and_sends_nothing(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path),
        "--events",
        DEMO_EVENTS,
        "--dry-run",
    )

    assert run.code == 0
    assert served.fake.requests == []
    assert run.summary["dry_run"] is True
    assert run.summary["requests"] == 3 + 2  # the would-be segment/mapping calls and creates
    assert "[dry run]" in run.stderr
    assert not served.state.exists()


# ------------------------------------------------------------- bad mapping files


def _set_mapping(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["subscriptions"][0]["mapping"][key] = value

    return change


def _set_subscription(index: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["subscriptions"][index][key] = value

    return change


@pytest.mark.parametrize(
    ("change", "pointer", "expected"),
    [
        (
            _set_mapping("emial", {"@path": "$.context.traits.email"}),
            "/subscriptions/0/mapping/emial",
            "a field of addToAudience",
        ),
        (
            _set_subscription(0, "action", "addUser"),
            "/subscriptions/0/action",
            "'addToAudience', 'removeFromAudience'",
        ),
        (
            _set_subscription(1, "subscribe", 'type = "track" and'),
            "/subscriptions/1/subscribe",
            "a valid subscription",
        ),
        (
            _set_mapping("email", {"@path": "$.context..email"}),
            "/subscriptions/0/mapping/email/@path",
            "invalid at character",
        ),
        (
            lambda document: document["settings"].update({"batch_size": 0}),
            "/settings/batch_size",
            "minimum of 1",
        ),
    ],
    ids=["unknown-field", "legacy-action-in-native", "subscribe-syntax", "bad-path", "setting"],
)
def test_a_bad_mapping_file_exits_3_with_one_line_naming_file_and_pointer(
    change: Callable[[dict[str, Any]], None],
    pointer: str,
    expected: str,
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mapping = write_mapping(tmp_path, change)

    run = run_cli(capsys, "sync", "--mapping", mapping, "--events", DEMO_EVENTS)

    assert run.code == 3
    (line,) = run.stderr.splitlines()
    assert str(mapping) in line
    assert f"at {pointer}:" in line
    assert expected in line
    assert run.stdout == ""
    assert served.fake.requests == []


def test_a_mapping_file_that_is_not_json_exits_3(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "broken.json"
    mapping.write_text('{"mode": "native",', "utf-8")

    run = run_cli(capsys, "sync", "--mapping", mapping, "--events", DEMO_EVENTS)

    assert run.code == 3
    (line,) = run.stderr.splitlines()
    assert str(mapping) in line
    assert "valid JSON" in line
    assert served.fake.requests == []


def test_a_missing_mapping_file_exits_3(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.json"

    run = run_cli(capsys, "sync", "--mapping", missing, "--events", DEMO_EVENTS)

    assert run.code == 3
    assert str(missing) in run.stderr
    assert served.fake.requests == []


# ------------------------------------------------------------- other failures


def test_a_missing_token_exits_2_and_says_which_variable_to_set(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")

    run = run_cli(capsys, "sync", "--mapping", write_mapping(tmp_path), "--events", DEMO_EVENTS)

    assert run.code == 2
    assert "TIKTOK_ACCESS_TOKEN" in run.stderr
    assert run.stdout == ""
    assert served.fake.requests == []


def test_a_missing_events_file_exits_6(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-events.ndjson"

    run = run_cli(capsys, "sync", "--mapping", write_mapping(tmp_path), "--events", missing)

    assert run.code == 6
    (line,) = run.stderr.splitlines()
    assert str(missing) in line
    assert served.fake.requests == []


def test_refused_credentials_exit_4_and_reject_every_event_with_auth(
    served: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served.fake.revoke_token(TOKEN)
    events = tmp_path / "events.ndjson"
    events.write_text(audience_events(6), "utf-8")
    rejected = tmp_path / "rejected.ndjson"

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path),
        "--events",
        events,
        "--rejected",
        rejected,
    )

    assert run.code == 4
    summary = run.summary
    assert summary["stopped"]["reason"] == "auth"
    assert summary["rejected_by_reason"] == {"auth": 6}
    assert [r["line"] for r in read_rejected(rejected)] == [1, 2, 3, 4, 5, 6]
    assert "re-authorize" in run.stderr
    assert len(served.fake.requests) == 1


def test_tiktok_staying_down_exits_5_with_every_event_accounted_for(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served.fake.fail_next(50000, times=100)
    audience_id = served.fake.add_audience(DEMO_ADVERTISER_ID, "existing")
    events = tmp_path / "events.ndjson"
    events.write_text(audience_events(5, external_audience_id=audience_id), "utf-8")
    rejected = tmp_path / "rejected.ndjson"

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path, max_attempts=2),
        "--events",
        events,
        "--rejected",
        rejected,
    )

    assert run.code == 5
    summary = run.summary
    assert summary["stopped"]["reason"] == "api_unavailable"
    assert (summary["received"], summary["rejected"]) == (5, 5)
    assert {r["reason"] for r in read_rejected(rejected)} == {"api_unavailable"}
    assert summary["requests"] == len(served.fake.requests) == 2


def test_a_rejected_file_that_cannot_be_created_is_a_clear_error_before_any_request(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rejected = tmp_path / "no-such-folder" / "rejected.ndjson"

    run = run_cli(
        capsys,
        "sync",
        "--mapping",
        write_mapping(tmp_path),
        "--events",
        DEMO_EVENTS,
        "--rejected",
        rejected,
    )

    assert run.code in (2, 6)
    (line,) = run.stderr.splitlines()
    assert str(rejected) in line
    assert served.fake.requests == []


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "sync", "--events", "-")

    assert run.code == 2
    assert "--mapping" in run.stderr


# ------------------------------------------------------------ other commands


def test_schema_prints_the_json_schema_of_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "schema", "addToAudience")

    assert run.code == 0
    schema = json.loads(run.stdout)
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert {"email", "phone", "advertising_id", "external_audience_id"} <= set(schema["properties"])
    validator = Draft202012Validator(schema)
    assert validator.is_valid({"email": "a@example.com", "send_email": True})
    assert not validator.is_valid({"send_email": "yes"})


@pytest.mark.parametrize("mode", ["native", "legacy"])
def test_the_shipped_mapping_files_are_the_templates_derived_from_the_fields(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, "mapping-template", "--mode", mode)

    assert run.code == 0
    template = json.loads(run.stdout)
    shipped = json.loads((MAPPINGS / f"segment-{mode}.json").read_text("utf-8"))
    assert template["subscriptions"] == shipped["subscriptions"]
    assert template["mode"] == shipped["mode"] == mode


def test_demo_exits_0_and_shows_what_the_fake_tiktok_holds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_cli(capsys, "demo")

    assert run.code == 0
    assert "what the fake TikTok now holds" in run.stdout
    assert "'high_value_customers'" in run.stdout
    assert "requests reached the fake server" in run.stdout
