"""Whole sync runs against the in-process fake TikTok: what reaches TikTok, what is rejected.

Every run goes through ``sync()`` below, which checks the summary invariants in every
scenario: ``received == delivered + rejected``, the rejected file holds exactly
``rejected`` lines, each with ``line``, ``reason``, ``message`` and the original ``event``
(or the ``raw`` text of a line that was not a JSON object) found at that line number.

The golden files ``fixtures/golden/{native,legacy}-requests.json`` hold every request the
shipped demo fixtures produce. Rewrite them after an intended change with::

    UPDATE_GOLDEN=1 pytest tests/test_sync.py -k golden

then read the diff: the bodies must still follow TikTok's segment/mapping rules, which
``test_golden_requests_follow_the_segment_mapping_rules`` checks (id_schema order, one
entry per slot, lowercase SHA-256 hex ids), and the hand-checked hashes below.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from destination.backends import Backend
from destination.demo import DEMO_ADVERTISER_ID, DEMO_TOKEN, demo_fake
from destination.fake_server import FakeTikTok
from destination.runner.sync import SyncOptions, run_sync
from destination.settings import Secret
from destination.tiktok import actions as actions_module
from destination.tiktok.api import RetryPolicy, TikTokApi
from tests.fake_backends import AfterRequests

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DEMO = ROOT / "fixtures" / "demo"
GOLDEN = ROOT / "fixtures" / "golden"

ADVERTISER = DEMO_ADVERTISER_ID
OTHER_ADVERTISER = "7000000000000000002"
TOKEN = "sync-test-token"
ID_ORDER = ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256")
HEX64 = re.compile(r"[0-9a-f]{64}")

InputLine = dict[str, Any] | str | bytes


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_fake(*advertisers: str, token: str = TOKEN) -> FakeTikTok:
    fake = FakeTikTok()
    for advertiser in advertisers or (ADVERTISER,):
        fake.add_advertiser(advertiser)
    fake.add_token(token, advertiser_ids=list(advertisers or (ADVERTISER,)))
    return fake


def write_mapping(tmp_path: Path, mode: str = "native", **settings: Any) -> Path:
    """The shipped mapping file of ``mode`` with fast settings (and ``settings``) on top."""
    document = json.loads((MAPPINGS / f"segment-{mode}.json").read_text("utf-8"))
    document["settings"].update(
        {"qps": 0, "retry_initial_wait": 0, "max_attempts": 3, "concurrency": 1, **settings}
    )
    path = tmp_path / f"{mode}-{len(list(tmp_path.glob('*.json')))}.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def audience_event(
    user: str,
    *,
    entered: bool = True,
    key: str | None = "vip_customers",
    advertiser: str | None = ADVERTISER,
    external_audience_id: str | None = None,
    traits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Segment Engage 'Audience Entered' (or 'Exited') event for ``user``."""
    personas: dict[str, Any] = {"computation_class": "audience", "audience_settings": {}}
    if key is not None:
        personas["computation_key"] = key
    if advertiser is not None:
        personas["audience_settings"]["advertiserId"] = advertiser
    if external_audience_id is not None:
        personas["external_audience_id"] = external_audience_id
    return {
        "type": "track",
        "event": "Audience Entered" if entered else "Audience Exited",
        "userId": user,
        "properties": {},
        "context": {
            "personas": personas,
            "traits": traits if traits is not None else {"email": f"{user}@example.com"},
        },
    }


def as_bytes(line: InputLine) -> bytes:
    if isinstance(line, dict):
        return json.dumps(line).encode("utf-8")
    if isinstance(line, str):
        return line.encode("utf-8")
    return line


def write_events(path: Path, lines: Sequence[InputLine]) -> Path:
    path.write_bytes(b"".join(as_bytes(line) + b"\n" for line in lines))
    return path


def assert_accounted(
    summary: dict[str, Any], records: list[dict[str, Any]], lines: Sequence[bytes]
) -> None:
    """Every event is delivered or rejected once, and each rejection points at its line."""
    assert summary["received"] == summary["delivered"] + summary["rejected"]
    assert summary["received"] == sum(1 for line in lines if line.strip())
    assert len(records) == summary["rejected"]
    assert Counter(r["reason"] for r in records) == summary["rejected_by_reason"]
    assert len({r["line"] for r in records}) == len(records)
    for record in records:
        assert set(record) in (
            {"line", "reason", "message", "event"},
            {"line", "reason", "message", "raw"},
        ), record
        assert record["reason"]
        assert record["message"]
        original = lines[record["line"] - 1]
        try:
            parsed = json.loads(original.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            assert record["event"] == parsed
        else:
            assert record["raw"] == original.decode("utf-8", "replace").rstrip("\r\n")


@dataclass
class Run:
    summary: dict[str, Any]
    rejected: list[dict[str, Any]]

    def rejected_lines(self) -> list[int]:
        return [r["line"] for r in self.rejected]


def sync_file(
    tmp_path: Path,
    events: Path,
    *,
    mapping: Path,
    backend: Backend | None,
    token: str | None = TOKEN,
    dry_run: bool = False,
    **overrides: Any,
) -> Run:
    rejected = tmp_path / f"rejected-{events.stem}.ndjson"  # never beside a repo fixture
    state = tmp_path / "audiences.json"
    environ = {"TIKTOK_AUDIENCE_STATE": str(state)}
    if token is not None:
        environ["TIKTOK_ACCESS_TOKEN"] = token
    summary = run_sync(
        SyncOptions(
            mapping=mapping,
            events=str(events),
            rejected=rejected,
            dry_run=dry_run,
            overrides={"audience_state": state, **overrides},
        ),
        environ=environ,
        backend=backend,
    )
    records = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
    data = events.read_bytes()
    lines = data.split(b"\n")  # what the reader numbers: lines split at \n only
    if data.endswith(b"\n"):
        lines.pop()
    assert_accounted(summary, records, lines)
    return Run(summary, records)


def sync(
    tmp_path: Path,
    lines: Sequence[InputLine],
    *,
    backend: Backend | None,
    mapping: Path | None = None,
    **kwargs: Any,
) -> Run:
    events = write_events(tmp_path / f"events-{len(list(tmp_path.glob('events-*')))}.ndjson", lines)
    return sync_file(
        tmp_path, events, mapping=mapping or write_mapping(tmp_path), backend=backend, **kwargs
    )


def mapping_calls(fake: FakeTikTok) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path == "segment/mapping/"]


def create_calls(fake: FakeTikTok) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path == "segment/audience/"]


def emails_in(fake: FakeTikTok, audience_id: str) -> set[str]:
    return fake.members(audience_id).get("EMAIL_SHA256", set())


def audience_named(fake: FakeTikTok, name: str) -> str:
    (audience,) = [a for a in fake.audiences() if a.name == name]
    return audience.audience_id


# ------------------------------------------------------------------ golden requests


@pytest.mark.parametrize("mode", ["native", "legacy"])
def test_demo_fixtures_send_exactly_the_golden_requests(mode: str, tmp_path: Path) -> None:
    """The demo fixtures' requests equal the golden file (``UPDATE_GOLDEN=1`` rewrites it)."""
    fake = demo_fake()
    run = sync_file(
        tmp_path,
        DEMO / f"{mode}-events.ndjson",
        mapping=MAPPINGS / f"segment-{mode}.json",
        backend=fake,
        token=DEMO_TOKEN,
        qps=0,
        concurrency=1,  # one request at a time: the order of requests is part of the golden
    )
    actual = [{"method": r.method, "path": r.path, "json": r.json} for r in fake.requests]
    golden = GOLDEN / f"{mode}-requests.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(actual, indent=2) + "\n", "utf-8")
    assert actual == json.loads(golden.read_text("utf-8"))
    assert run.summary["requests"] == len(actual)
    # the audience ids sent are ones the fake handed out, for the audiences named
    held = {a.audience_id: a.name for a in fake.audiences()}
    for request in mapping_calls(fake):
        assert {e["audience_ids"][0] for row in request["batch_data"] for e in row if e} <= set(
            held
        )
    for audience in run.summary["audiences"]:
        assert held[audience["audience_id"]] == audience["name"]
    assert run.summary["stopped"] is None


@pytest.mark.parametrize("mode", ["native", "legacy"])
def test_golden_requests_follow_the_segment_mapping_rules(mode: str) -> None:
    requests = json.loads((GOLDEN / f"{mode}-requests.json").read_text("utf-8"))
    assert requests, "an empty golden file proves nothing"
    for request in requests:
        assert request["method"] == "POST"
        body = request["json"]
        if request["path"] == "segment/audience/":
            assert body["advertiser_id"] == ADVERTISER
            assert body["action"] == "create"
            continue
        assert request["path"] == "segment/mapping/"
        assert body["advertiser_ids"] == [ADVERTISER]
        assert body["action"] in ("add", "delete")
        id_schema = body["id_schema"]
        assert id_schema == [t for t in ID_ORDER if t in id_schema]
        for row in body["batch_data"]:
            assert len(row) == len(id_schema)
            assert any(row), "a row with no identifier at all"
            for entry in row:
                assert entry == {} or (
                    set(entry) == {"id", "audience_ids"}
                    and HEX64.fullmatch(entry["id"])
                    and len(entry["audience_ids"]) == 1
                )
        # every filled slot of every row names the same audience
        assert len({e["audience_ids"][0] for row in body["batch_data"] for e in row if e}) == 1


def rows(body: dict[str, Any]) -> list[dict[str, str]]:
    """A segment/mapping body as one {id type: hash} dict per user."""
    return [
        {kind: entry["id"] for kind, entry in zip(body["id_schema"], row, strict=True) if entry}
        for row in body["batch_data"]
    ]


def test_native_golden_requests_hold_the_hand_checked_hashes() -> None:
    requests = json.loads((GOLDEN / "native-requests.json").read_text("utf-8"))
    creates = [r["json"] for r in requests if r["path"] == "segment/audience/"]
    mappings = [r["json"] for r in requests if r["path"] == "segment/mapping/"]
    # demo_fake() seeded 1800000000000000001; the two created audiences come next
    assert [c["custom_audience_name"] for c in creates] == [
        "high_value_customers",
        "cart_abandoners",
    ]
    vip, carts = "1800000000000000002", "1800000000000000003"
    assert [(m["action"], m["batch_data"][0][0]["audience_ids"]) for m in mappings] == [
        ("add", [vip]),
        ("add", [carts]),
        ("delete", [vip]),
    ]
    assert rows(mappings[0]) == [
        {
            "EMAIL_SHA256": sha("jane.doe@example.com"),  # "Jane.Doe@Example.com " trimmed
            "PHONE_SHA256": sha("+14155550100"),
            "IDFA_SHA256": sha("6d92078a-8246-4ba4-ae5b-76104861e7dc"),
        },
        {
            "EMAIL_SHA256": sha("li.wei@example.org"),
            "AAID_SHA256": sha("38400000-8cf0-11bd-b23e-10b96e40000d"),
        },
        {"PHONE_SHA256": sha("+442079460958")},
        {"EMAIL_SHA256": sha("amara.okafor@example.net")},  # zeroed IDFA left out
        {"EMAIL_SHA256": "8c3c3a8f9e1b7a0d4d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c"},
    ]
    assert rows(mappings[1]) == [
        {"EMAIL_SHA256": sha("sam.taylor@example.com")},  # phone has no region: dropped
        {
            "EMAIL_SHA256": sha("noor.haddad@example.com"),
            "IDFA_SHA256": sha("aebe52e7-03ee-455a-b3c4-e57283966239"),
        },
    ]
    assert rows(mappings[2]) == [
        {
            "EMAIL_SHA256": sha("li.wei@example.org"),
            "AAID_SHA256": sha("38400000-8cf0-11bd-b23e-10b96e40000d"),
        }
    ]


def test_legacy_golden_requests_hold_the_hand_checked_hashes() -> None:
    requests = json.loads((GOLDEN / "legacy-requests.json").read_text("utf-8"))
    assert [(r["path"], r["json"]["action"]) for r in requests] == [
        ("segment/mapping/", "add"),
        ("segment/audience/", "create"),  # twice in the input, created once
        ("segment/mapping/", "delete"),
    ]
    add, create, delete = (r["json"] for r in requests)
    assert create["custom_audience_name"] == "Winter sale prospects"
    assert {e["audience_ids"][0] for row in add["batch_data"] for e in row if e} == {
        "1800000000000000001"  # the audience the shipped legacy mapping names
    }
    assert rows(add) == [
        {"EMAIL_SHA256": sha("maria.garcia@example.com"), "PHONE_SHA256": sha("+14155552671")},
        {
            "PHONE_SHA256": sha("+16502530000"),
            "AAID_SHA256": sha("b6f2c1d4-5e7a-4c3b-9d8e-1f2a3b4c5d6e"),
        },
        {"EMAIL_SHA256": sha("kenji.sato@example.jp")},
        {"EMAIL_SHA256": sha("ahmed.ali@example.com")},
    ]
    assert rows(delete) == [{"EMAIL_SHA256": sha("ahmed.ali@example.com")}]


def test_demo_runs_reject_the_expected_lines(tmp_path: Path) -> None:
    native = sync_file(
        tmp_path,
        DEMO / "native-events.ndjson",
        mapping=MAPPINGS / "segment-native.json",
        backend=demo_fake(),
        token=DEMO_TOKEN,
        qps=0,
    )
    assert [(r["line"], r["reason"]) for r in native.rejected] == [
        (7, "no_identifier"),
        (9, "no_subscription"),
        (11, "no_advertiser"),
        (12, "invalid_json"),
    ]
    assert native.summary["dropped_identifiers"] == {
        "advertising id is all zeros (tracking refused)": 1,
        "phone has no country code and no default_phone_region is set": 1,
    }
    assert native.summary["delivered_by_subscription"] == {
        "Add to Audience": 7,
        "Remove from Audience": 1,
    }


# ------------------------------------------------------------- native audiences


def test_creates_the_audience_of_a_computation_key_once_and_remembers_it(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    events = [audience_event(f"user{i}", key="vip_customers") for i in range(40)]
    mapping = write_mapping(tmp_path, batch_size=10)

    first = sync(tmp_path, events, backend=fake, mapping=mapping)

    assert create_calls(fake) == [
        {"advertiser_id": ADVERTISER, "action": "create", "custom_audience_name": "vip_customers"}
    ]
    audience_id = audience_named(fake, "vip_customers")
    state = json.loads((tmp_path / "audiences.json").read_text("utf-8"))
    assert (
        state["audiences"]["https://business-api.tiktok.com"][ADVERTISER]["vip_customers"][
            "audience_id"
        ]
        == audience_id
    )
    assert [(a["audience_id"], a["created"]) for a in first.summary["audiences"]] == [
        (audience_id, True)
    ]
    assert first.summary["delivered"] == 40

    more = [audience_event(f"later{i}", key="vip_customers") for i in range(5)]
    second = sync(tmp_path, more, backend=fake, mapping=mapping)

    assert len(create_calls(fake)) == 1
    assert [(a["audience_id"], a["created"]) for a in second.summary["audiences"]] == [
        (audience_id, False)
    ]
    assert len(emails_in(fake, audience_id)) == 45


def test_an_external_audience_id_is_used_without_creating_anything(tmp_path: Path) -> None:
    fake = make_fake()
    existing = fake.add_audience(ADVERTISER, "made in TikTok")
    events = [
        audience_event(f"user{i}", key="vip_customers", external_audience_id=existing)
        for i in range(3)
    ]

    run = sync(tmp_path, events, backend=fake)

    assert create_calls(fake) == []
    assert run.summary["audiences"] == []
    assert emails_in(fake, existing) == {sha(f"user{i}@example.com") for i in range(3)}
    assert not (tmp_path / "audiences.json").exists()


def test_each_advertiser_gets_its_own_requests(tmp_path: Path) -> None:
    fake = make_fake(ADVERTISER, OTHER_ADVERTISER)
    events = [
        audience_event("ann", advertiser=ADVERTISER),
        audience_event("bob", advertiser=OTHER_ADVERTISER),
        audience_event("cid", advertiser=ADVERTISER),
    ]

    run = sync(tmp_path, events, backend=fake)

    assert run.summary["delivered"] == 3
    assert sorted(c["advertiser_id"] for c in create_calls(fake)) == [
        ADVERTISER,
        OTHER_ADVERTISER,
    ]
    calls = mapping_calls(fake)
    assert sorted((c["advertiser_ids"], len(c["batch_data"])) for c in calls) == [
        ([ADVERTISER], 2),
        ([OTHER_ADVERTISER], 1),
    ]
    (mine,) = fake.audiences(ADVERTISER)
    (theirs,) = fake.audiences(OTHER_ADVERTISER)
    assert mine.members["EMAIL_SHA256"] == {sha("ann@example.com"), sha("cid@example.com")}
    assert theirs.members["EMAIL_SHA256"] == {sha("bob@example.com")}


def test_each_audience_gets_its_own_mapping_call(tmp_path: Path) -> None:
    fake = make_fake()
    events = [
        audience_event("ann", key="vip_customers"),
        audience_event("bob", key="cart_abandoners"),
        audience_event("cid", key="vip_customers"),
    ]

    sync(tmp_path, events, backend=fake)

    vip = audience_named(fake, "vip_customers")
    carts = audience_named(fake, "cart_abandoners")
    calls = mapping_calls(fake)
    assert len(calls) == 2
    audiences_per_call = [
        {e["audience_ids"][0] for row in c["batch_data"] for e in row if e} for c in calls
    ]
    assert sorted(map(sorted, audiences_per_call)) == sorted([[vip], [carts]])
    assert emails_in(fake, vip) == {sha("ann@example.com"), sha("cid@example.com")}
    assert emails_in(fake, carts) == {sha("bob@example.com")}


def test_audiences_past_what_an_action_remembers_still_get_their_own_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions_module, "_MAX_REMEMBERED_GROUPS", 2)
    fake = make_fake()
    keys = ["vip_customers", "cart_abandoners", "lapsed_buyers"]
    users = ["ann", "bob", "cid", "dan", "eve", "fay", "gus"]
    events = [audience_event(user, key=keys[i % 3]) for i, user in enumerate(users)]

    sync(tmp_path, events, backend=fake)

    for i, key in enumerate(keys):
        expected = {sha(f"{user}@example.com") for user in users[i::3]}
        assert emails_in(fake, audience_named(fake, key)) == expected


# ----------------------------------------------------------------------- ordering


@pytest.mark.parametrize(
    ("sequence", "member_at_end", "calls"),
    [
        ((True, False, True), True, ["add", "delete", "add"]),
        ((False, True, False), False, ["delete", "add", "delete"]),
    ],
    ids=["entered-exited-entered-ends-in", "exited-entered-exited-ends-out"],
)
def test_changes_to_one_audience_reach_tiktok_in_input_order(
    sequence: tuple[bool, ...], member_at_end: bool, calls: list[str], tmp_path: Path
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    others = [audience_event(f"other{i}", external_audience_id=audience_id) for i in range(3)]
    flips = [
        audience_event("jane", entered=entered, external_audience_id=audience_id)
        for entered in sequence
    ]

    run = sync(
        tmp_path, [*others, *flips], backend=fake, mapping=write_mapping(tmp_path, batch_size=1000)
    )

    assert run.summary["delivered"] == 6
    assert (sha("jane@example.com") in emails_in(fake, audience_id)) is member_at_end
    assert emails_in(fake, audience_id) >= {sha(f"other{i}@example.com") for i in range(3)}
    # a flip of jane's closes the opposite batch holding her first; the others' adds do
    # not conflict with her removal, so they travel in whatever batch is open
    assert [c["action"] for c in mapping_calls(fake)] == calls


def test_adds_and_removals_of_different_users_share_full_batches(tmp_path: Path) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    events = [
        audience_event(f"user{i}", entered=i % 2 == 0, external_audience_id=audience_id)
        for i in range(100)
    ]
    run = sync(tmp_path, events, backend=fake, mapping=write_mapping(tmp_path, batch_size=25))
    assert run.summary["delivered"] == 100
    assert sorted(len(c["batch_data"]) for c in mapping_calls(fake)) == [25, 25, 25, 25]


# -------------------------------------------------------------------- batch sizes


@pytest.mark.parametrize("batch_size", [1, 10, 1000])
def test_batch_size_changes_the_requests_but_not_what_tiktok_holds(
    batch_size: int, tmp_path: Path
) -> None:
    fake = make_fake()
    vip = fake.add_audience(ADVERTISER, "vip")
    carts = fake.add_audience(ADVERTISER, "carts")
    per_audience = {vip: 157, carts: 43}
    events = [
        audience_event(f"{audience_id}-user{i}", external_audience_id=audience_id)
        for i in range(max(per_audience.values()))
        for audience_id, count in per_audience.items()
        if i < count
    ]

    run = sync(
        tmp_path, events, backend=fake, mapping=write_mapping(tmp_path, batch_size=batch_size)
    )

    assert run.summary["delivered"] == 200
    calls = mapping_calls(fake)
    assert max(len(c["batch_data"]) for c in calls) <= batch_size
    for audience_id, count in per_audience.items():
        mine = [c for c in calls if c["batch_data"][0][0]["audience_ids"] == [audience_id]]
        assert len(mine) == math.ceil(count / batch_size)
        assert emails_in(fake, audience_id) == {
            sha(f"{audience_id}-user{i}@example.com") for i in range(count)
        }
    assert run.summary["requests"] == len(calls)


# ---------------------------------------------------------------- TikTok refusals


def test_a_refused_batch_rejects_only_its_events_and_the_run_goes_on(tmp_path: Path) -> None:
    fake = make_fake()
    fake.fail_next(40002, path="segment/mapping/", message="Audience is still being processed")
    events = [audience_event(f"user{i}", key="vip_customers") for i in range(25)]

    run = sync(tmp_path, events, backend=fake, mapping=write_mapping(tmp_path, batch_size=10))

    assert run.summary["stopped"] is None
    assert run.summary["rejected_by_reason"] == {"tiktok_rejected": 10}
    assert run.rejected_lines() == list(range(1, 11))
    assert all("Audience is still being processed" in r["message"] for r in run.rejected)
    assert all("40002" in r["message"] for r in run.rejected)
    assert run.summary["delivered"] == 15
    assert emails_in(fake, audience_named(fake, "vip_customers")) == {
        sha(f"user{i}@example.com") for i in range(10, 25)
    }
    assert len(create_calls(fake)) == 1


def test_a_refused_audience_creation_rejects_the_events_of_that_key_only(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    fake.fail_next(40002, path="segment/audience/", message="Audience limit reached")
    events = [
        audience_event("ann", key="refused"),
        audience_event("bob", key="refused"),
        audience_event("cid", key="accepted"),
    ]

    run = sync(tmp_path, events, backend=fake)

    assert [(r["line"], r["reason"]) for r in run.rejected] == [
        (1, "tiktok_rejected"),
        (2, "tiktok_rejected"),
    ]
    assert all("Audience limit reached" in r["message"] for r in run.rejected)
    assert [c["custom_audience_name"] for c in create_calls(fake)] == ["refused", "accepted"]
    assert run.summary["delivered"] == 1


@pytest.mark.parametrize(
    ("code", "http_status"),
    [(40100, 200), (50000, 503), (0, 503)],
    ids=["rate-limit-envelope", "system-error-503", "html-503-from-a-proxy"],
)
def test_retryable_faults_are_retried_until_everything_is_delivered(
    code: int, http_status: int, tmp_path: Path
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    fake.fail_next(code, http_status=http_status, times=2)
    events = [audience_event(f"user{i}", external_audience_id=audience_id) for i in range(12)]

    run = sync(
        tmp_path,
        events,
        backend=fake,
        mapping=write_mapping(tmp_path, batch_size=5, max_attempts=3),
    )

    assert run.summary["delivered"] == 12
    assert run.summary["rejected"] == 0
    assert run.summary["requests"] == 3 + 2  # three batches, the first tried three times
    assert len(fake.requests) == 5
    assert len(emails_in(fake, audience_id)) == 12


def test_retry_initial_wait_zero_retries_without_sleeping() -> None:
    fake = make_fake()
    fake.fail_next(50000, times=2)
    sleeps: list[float] = []
    api = TikTokApi(
        fake,
        Secret(TOKEN),
        retry=RetryPolicy(max_attempts=3, initial_wait=0),
        sleep=sleeps.append,
    )

    api.create_segment_audience(ADVERTISER, "vip")

    assert len(sleeps) == 2
    assert sleeps == [0, 0]


# ----------------------------------------------------------------- stopping early


def test_a_revoked_token_stops_the_run_and_every_undelivered_event_is_rejected(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    events = [audience_event(f"user{i}", external_audience_id=audience_id) for i in range(50)]
    mapping = write_mapping(tmp_path, batch_size=10)

    run = sync(
        tmp_path,
        events,
        backend=AfterRequests(fake, 2, lambda f: f.revoke_token(TOKEN)),
        mapping=mapping,
    )

    stopped = run.summary["stopped"]
    assert stopped["reason"] == "auth"
    assert "re-authorize" in stopped["message"]
    assert "TIKTOK_ACCESS_TOKEN" in stopped["message"]
    assert run.summary["delivered"] == 20
    assert run.summary["rejected_by_reason"] == {"auth": 30}
    # lines 21-30 were in the refused batch, 31-50 were never read before the stop
    assert run.rejected_lines() == list(range(21, 51))
    assert all("re-authorize" in r["message"] for r in run.rejected)
    assert run.summary["requests"] == 3
    assert len(emails_in(fake, audience_id)) == 20

    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER])  # the user re-authorized
    retry = sync(tmp_path, [r["event"] for r in run.rejected], backend=fake, mapping=mapping)

    assert retry.summary["delivered"] == 30
    assert retry.summary["stopped"] is None
    assert emails_in(fake, audience_id) == {sha(f"user{i}@example.com") for i in range(50)}


def test_an_auth_failure_while_creating_an_audience_rejects_the_whole_input(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    fake.fail_next(40105, path="segment/audience/")
    events = [audience_event(f"user{i}") for i in range(5)]

    run = sync(tmp_path, [*events, "not json"], backend=fake)

    assert run.summary["stopped"]["reason"] == "auth"
    assert run.summary["delivered"] == 0
    # a line that is not an event gets its own reason, stop or not
    assert run.summary["rejected_by_reason"] == {"auth": 5, "invalid_json": 1}
    assert run.rejected_lines() == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "audiences.json").exists()
    assert len(fake.requests) == 1


def test_tiktok_staying_down_stops_the_run_with_every_event_accounted_for(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    events = [audience_event(f"user{i}", external_audience_id=audience_id) for i in range(30)]
    mapping = write_mapping(tmp_path, batch_size=10, max_attempts=2)
    goes_down = AfterRequests(fake, 1, lambda f: f.fail_next(50000, times=100))

    run = sync(tmp_path, events, backend=goes_down, mapping=mapping)

    assert run.summary["stopped"]["reason"] == "api_unavailable"
    assert "gave up after 2 attempts" in run.summary["stopped"]["message"]
    assert run.summary["delivered"] == 10
    assert run.summary["rejected_by_reason"] == {"api_unavailable": 20}
    assert run.rejected_lines() == list(range(11, 31))
    assert run.summary["requests"] == 1 + 2


# ------------------------------------------------------------------------ dry run


def test_dry_run_sends_nothing_and_creates_no_audience(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    real = sync_file(
        tmp_path / "real",
        DEMO / "native-events.ndjson",
        mapping=MAPPINGS / "segment-native.json",
        backend=demo_fake(),
        token=DEMO_TOKEN,
        qps=0,
    )
    fake = demo_fake()

    dry = sync_file(
        tmp_path,
        DEMO / "native-events.ndjson",
        mapping=MAPPINGS / "segment-native.json",
        backend=fake,  # handed in, yet a dry run must not use it
        token=None,
        dry_run=True,
        qps=0,
    )

    assert fake.requests == []
    assert dry.summary["dry_run"] is True
    assert not (tmp_path / "audiences.json").exists()
    assert [(a["audience_id"], a["created"]) for a in dry.summary["audiences"]] == [
        ("dry-run:high_value_customers", False),
        ("dry-run:cart_abandoners", False),
    ]
    # the calls a real run makes are counted: the segment/mapping calls and the creates
    assert len(real.summary["audiences"]) == 2
    assert dry.summary["requests"] == real.summary["requests"] == 3 + 2
    for key in ("received", "delivered", "rejected", "rejected_by_reason"):
        assert dry.summary[key] == real.summary[key]
    assert dry.rejected == real.rejected


def test_dry_run_leaves_an_existing_audience_state_untouched(tmp_path: Path) -> None:
    fake = make_fake()
    events = [audience_event("ann", key="vip_customers")]
    sync(tmp_path, events, backend=fake)
    state = tmp_path / "audiences.json"
    before = state.read_bytes()

    dry = sync(
        tmp_path,
        [*events, audience_event("bob", key="brand_new")],
        backend=fake,
        token=None,
        dry_run=True,
    )

    assert state.read_bytes() == before
    assert [(a["key"], a["created"]) for a in dry.summary["audiences"]] == [
        ("vip_customers", False),
        ("brand_new", False),
    ]
    assert dry.summary["audiences"][1]["audience_id"] == "dry-run:brand_new"
    assert len(fake.requests) == 2  # the real run's create and mapping call only


# ---------------------------------------------------------------------- bad input


def test_lines_that_are_not_json_objects_are_rejected_with_their_line_numbers(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    good = audience_event("ann", external_audience_id=audience_id)
    lines: list[InputLine] = [
        good,  # 1
        "",  # 2: blank, skipped
        "{not json",  # 3
        "[1, 2, 3]",  # 4: JSON, but an array
        b"\xff\xfe binary \x00 bytes",  # 5: not UTF-8
        "   \t",  # 6: blank, skipped
        '"just a string"',  # 7
        "42",  # 8
        audience_event("bob", external_audience_id=audience_id),  # 9
    ]

    run = sync(tmp_path, lines, backend=fake)

    assert run.summary["received"] == 7
    assert run.summary["delivered"] == 2
    assert [(r["line"], r["reason"]) for r in run.rejected] == [
        (3, "invalid_json"),
        (4, "invalid_json"),
        (5, "invalid_json"),
        (7, "invalid_json"),
        (8, "invalid_json"),
    ]
    messages = {r["line"]: r["message"] for r in run.rejected}
    assert "not valid JSON" in messages[3]
    assert "not a JSON object (a list)" in messages[4]
    assert "not UTF-8" in messages[5]
    assert all("event" not in r for r in run.rejected)


def test_events_no_subscription_matches_are_rejected_as_no_subscription(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    lines: list[InputLine] = [
        {"type": "page", "name": "Pricing", "userId": "u1"},
        audience_event("ann", external_audience_id=audience_id),
        {"type": "track", "event": "Order Completed", "userId": "u2"},
        {"type": "identify", "userId": "u3", "traits": {"email": "u3@example.com"}},
    ]

    run = sync(tmp_path, lines, backend=fake)

    assert [(r["line"], r["reason"]) for r in run.rejected] == [
        (1, "no_subscription"),
        (3, "no_subscription"),
        (4, "no_subscription"),
    ]
    assert run.summary["delivered"] == 1
    assert len(fake.requests) == 1


def test_events_without_an_audience_or_advertiser_are_rejected_for_that(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    lines: list[InputLine] = [
        audience_event("ann", key=None),
        audience_event("bob", advertiser=None),
    ]

    run = sync(tmp_path, lines, backend=fake)

    assert [(r["line"], r["reason"]) for r in run.rejected] == [
        (1, "no_audience"),
        (2, "no_advertiser"),
    ]
    assert fake.requests == []


def test_events_copied_from_a_rejected_file_are_accepted_again(tmp_path: Path) -> None:
    """The rejected file's ``event`` is the original event, ready to be fed back."""
    fake = make_fake()
    audience_id = fake.add_audience(ADVERTISER, "vip")
    fake.fail_next(40002, path="segment/mapping/")
    events = [audience_event(f"user{i}", external_audience_id=audience_id) for i in range(3)]

    first = sync(tmp_path, events, backend=fake)
    again = sync(tmp_path, [copy.deepcopy(r["event"]) for r in first.rejected], backend=fake)

    assert first.summary["rejected"] == 3
    assert again.summary["delivered"] == 3
    assert emails_in(fake, audience_id) == {sha(f"user{i}@example.com") for i in range(3)}


def test_a_utf8_byte_order_mark_before_the_first_event_is_ignored(tmp_path: Path) -> None:
    fake = make_fake()
    events = tmp_path / "bom.ndjson"
    events.write_bytes(b"\xef\xbb\xbf" + json.dumps(audience_event("bom")).encode() + b"\n")
    run = sync_file(tmp_path, events, mapping=write_mapping(tmp_path), backend=fake)
    assert run.summary["delivered"] == 1
    assert emails_in(fake, audience_named(fake, "vip_customers")) == {sha("bom@example.com")}


def test_an_existing_rejected_file_is_made_private_before_events_are_written(
    tmp_path: Path,
) -> None:
    rejected = tmp_path / "rejected.ndjson"
    rejected.write_text("old\n")
    rejected.chmod(0o644)
    events = write_events(tmp_path / "e.ndjson", ["not json"])
    run_sync(
        SyncOptions(mapping=write_mapping(tmp_path), events=str(events), rejected=rejected),
        environ={"TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_AUDIENCE_STATE": str(tmp_path / "a.json")},
        backend=make_fake(),
    )
    assert rejected.stat().st_mode & 0o777 == 0o600
    assert "old" not in rejected.read_text()
