"""Properties of whole sync runs against the fake TikTok under random faults, and of the
batcher and the rate limiter, checked by hypothesis.

A sync run is generated as: input lines (Audience Entered events of distinct users, with
an email, sometimes a phone and an advertising id, for one of two seeded audiences or
for a ``computation_key`` the run creates an audience for; events with no usable
identifier; events no subscription takes; lines that are not JSON objects; blank lines),
a fault plan (random rates of random kinds of ``FAULT_KINDS``, from a seed) and the
run's settings (attempts, batch size, senders, with or without a retry file). Whatever
is drawn:

- every non-blank line is received, and ``received == delivered + rejected + deferred``;
- the rejected file holds ``rejected`` records and the retry file ``deferred`` events,
  each one an input event;
- every event that is neither rejected nor deferred has its hashed identifiers in its
  audience on the fake;
- a retryable fault never rejects an event while attempts remain: with no stop, an
  event is rejected only for its own reason; a stop (TikTok stayed unavailable) rejects
  with ``api_unavailable`` only when there is no retry file, and only a stop defers;
- with one sender, the same plan from the same seed gives the same run again.

Rate-limit faults make the client wait until the next second; the runs here swap the
API client's ``sleep`` for one that returns at once (nothing else is changed), so that
a run takes milliseconds.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from destination.fake_server import FakeTikTok
from destination.fake_server.faults import FAULT_KINDS, FaultPlan
from destination.kit.batching import Batch, Batcher
from destination.kit.ratelimit import RateLimiter
from destination.runner.sync import SyncOptions, run_sync
from destination.tiktok import plugin as sync_module
from destination.tiktok.api import TikTokApi
from destination.tiktok.normalize import (
    advertising_id_type,
    hash_advertising_id,
    hash_email,
    hash_phone,
)
from tests.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent
NATIVE_MAPPING = ROOT / "mappings" / "segment-native.json"

ADVERTISER = "7000000000000000001"
TOKEN = "property-test-token"
SEEDED = 2  # audiences created on the fake before the run: targets 0 and 1
KEYS = ("vip_customers", "churn_risk")  # targets 2 and 3: created by the run

RUN_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LineSpec:
    """One input line, before user numbers and audience ids are known."""

    kind: str  # add | no_identifier | bad_identifier | unsubscribed | not_json | array | blank
    target: int = 0  # add: 0..SEEDED-1 a seeded audience, then the KEYS
    phone: bool = False
    device: str | None = None  # add: the device of an advertising id, None for none
    style: int = 0  # how the identifiers are written (case, spaces, hyphens)


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based, as the reader numbers lines
    raw: bytes
    event: dict[str, Any] | None  # the JSON object on the line, if it is one
    own_reason: str | None  # why the event is rejected on its own; None: it is deliverable
    target: int = 0
    ids: dict[str, str] = field(default_factory=dict)  # id type -> expected hash

    @property
    def blank(self) -> bool:
        return not self.raw.strip()


def _add_specs(*, targets: int) -> st.SearchStrategy[LineSpec]:
    return st.builds(
        LineSpec,
        kind=st.just("add"),
        target=st.integers(0, targets - 1),
        phone=st.booleans(),
        device=st.sampled_from([None, None, "ios", "android", " Android ", "IPADOS"]),
        style=st.integers(0, 3),
    )


_OTHER_SPECS = st.sampled_from(
    [
        LineSpec("no_identifier"),
        LineSpec("bad_identifier"),
        LineSpec("unsubscribed"),
        LineSpec("not_json"),
        LineSpec("array"),
        LineSpec("blank"),
    ]
)


def line_specs(*, targets: int = SEEDED + len(KEYS)) -> st.SearchStrategy[list[LineSpec]]:
    add = _add_specs(targets=targets)
    return st.lists(st.one_of(add, add, _OTHER_SPECS), max_size=60)


def _personas(target: int, audience_ids: list[str]) -> dict[str, Any]:
    personas: dict[str, Any] = {
        "computation_class": "audience",
        "audience_settings": {"advertiserId": ADVERTISER},
    }
    if target < SEEDED:
        personas["external_audience_id"] = audience_ids[target]
        personas["computation_key"] = f"seeded_{target}"
    else:
        personas["computation_key"] = KEYS[target - SEEDED]
    return personas


def _entered(user: str, traits: dict[str, Any], personas: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Audience Entered",
        "userId": user,
        "properties": {},
        "context": {"personas": personas, "traits": traits},
    }


def materialize(specs: list[LineSpec], audience_ids: list[str]) -> list[InputLine]:
    """The input lines of ``specs``: user ``i`` is the one on line ``i + 1``."""
    lines: list[InputLine] = []
    for index, spec in enumerate(specs):
        number = index + 1
        user = f"user{number}"
        if spec.kind == "add":
            email = [
                f"{user}@example.com",
                f"User{number}@Example.COM",
                f"  {user}@example.com ",
                f"{user.upper()}@EXAMPLE.COM",
            ][spec.style]
            traits: dict[str, Any] = {"email": email}
            ids = {"EMAIL_SHA256": hash_email(email)}
            if spec.phone:
                phone = f"+1 650 253 {number:04d}" if spec.style % 2 else f"+1650253{number:04d}"
                traits["phone"] = phone
                ids["PHONE_SHA256"] = hash_phone(phone)
            event = _entered(user, traits, _personas(spec.target, audience_ids))
            if spec.device is not None:
                ad_id = f"{number:08x}-0000-4000-8000-{number + 1:012x}"
                if spec.style >= 2:
                    ad_id = ad_id.upper()
                event["context"]["device"] = {"advertisingId": ad_id, "type": spec.device}
                id_type = advertising_id_type(spec.device)
                assert id_type is not None
                ids[id_type] = hash_advertising_id(ad_id)
            lines.append(InputLine(number, _dump(event), event, None, spec.target, ids))
        elif spec.kind in ("no_identifier", "bad_identifier"):
            traits = {} if spec.kind == "no_identifier" else {"email": "not an address"}
            event = _entered(user, traits, _personas(0, audience_ids))
            lines.append(InputLine(number, _dump(event), event, "no_identifier"))
        elif spec.kind == "unsubscribed":
            event = {"type": "identify", "userId": user, "traits": {"email": f"{user}@x.com"}}
            lines.append(InputLine(number, _dump(event), event, "no_subscription"))
        elif spec.kind == "not_json":
            lines.append(InputLine(number, b'{"type": "track", oops', None, "invalid_json"))
        elif spec.kind == "array":
            lines.append(InputLine(number, b'[{"type": "track"}]', None, "invalid_json"))
        else:
            lines.append(InputLine(number, b" \t" if number % 2 else b"", None, None))
    return lines


def _dump(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode("utf-8")


@dataclass(frozen=True)
class Faults:
    rates: dict[str, float]
    seed: int

    def plan(self) -> FaultPlan:
        """A new plan (the random draws start over from the seed)."""
        return FaultPlan(rates=self.rates, seed=self.seed, slow_seconds=0.001)


@st.composite
def fault_plans(draw: st.DrawFn) -> Faults:
    kinds = draw(st.lists(st.sampled_from(FAULT_KINDS), unique=True, max_size=5))
    share = 60 // max(1, len(kinds))  # in percent: the rates add up to at most 0.6
    rates = {kind: draw(st.integers(0, share)) / 100 for kind in kinds}
    return Faults(rates, draw(st.integers(0, 2**32 - 1)))


@dataclass(frozen=True)
class RunSettings:
    max_attempts: int
    batch_size: int
    concurrency: int
    with_retry_file: bool


run_settings = st.builds(
    RunSettings,
    max_attempts=st.integers(1, 6),
    batch_size=st.integers(1, 20),
    concurrency=st.integers(1, 4),
    with_retry_file=st.booleans(),
)


# ------------------------------------------------------------------------ running


class _NoWaitApi(TikTokApi):
    """The real API client, whose waits (backoff, rate limits) return at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("sleep", lambda _seconds: None)
        super().__init__(*args, **kwargs)


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "TikTokApi", _NoWaitApi)


@dataclass
class Run:
    summary: dict[str, Any]
    rejected: list[dict[str, Any]]
    retried: list[dict[str, Any]]
    lines: list[InputLine]
    fake: FakeTikTok
    audience_ids: list[str]
    requests: list[tuple[str, Any]]


def _fake() -> tuple[FakeTikTok, list[str]]:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER])
    return fake, [fake.add_audience(ADVERTISER, f"seeded {n}") for n in range(SEEDED)]


def _ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def run(specs: list[LineSpec], faults: Faults | None, run_settings: RunSettings) -> Run:
    """One sync of ``specs`` against a new fake meeting ``faults``, in a new folder."""
    fake, audience_ids = _fake()
    lines = materialize(specs, audience_ids)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        events = folder / "events.ndjson"
        events.write_bytes(b"".join(line.raw + b"\n" for line in lines))
        document = json.loads(NATIVE_MAPPING.read_text("utf-8"))
        document["settings"].update(
            {
                "qps": 0,
                "advertiser_qps": 0,
                "retry_initial_wait": 0,
                "max_attempts": run_settings.max_attempts,
                "batch_size": run_settings.batch_size,
                "concurrency": run_settings.concurrency,
            }
        )
        mapping = folder / "mapping.json"
        mapping.write_text(json.dumps(document), "utf-8")
        rejected = folder / "rejected.ndjson"
        retry = folder / "retry.ndjson" if run_settings.with_retry_file else None
        state = folder / "audiences.json"
        fake.inject_faults(faults.plan() if faults is not None else None)
        summary = run_sync(
            SyncOptions(
                mapping=mapping,
                events=str(events),
                rejected=rejected,
                retry=retry,
                overrides={"audience_state": state},
            ),
            environ={"TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_AUDIENCE_STATE": str(state)},
            backend=fake,
        )
        fake.inject_faults(None)
        return Run(
            summary=summary,
            rejected=_ndjson(rejected),
            retried=_ndjson(retry) if retry is not None else [],
            lines=lines,
            fake=fake,
            audience_ids=audience_ids,
            requests=[(r.path, r.json) for r in fake.requests],
        )


def _audience_of(result: Run, line: InputLine) -> str:
    """The audience id a deliverable event's users went to."""
    if line.target < SEEDED:
        return result.audience_ids[line.target]
    key = KEYS[line.target - SEEDED]
    (resolved,) = [a for a in result.summary["audiences"] if a["key"] == key]
    audience_id: str = resolved["audience_id"]
    named = {a.audience_id for a in result.fake.audiences(ADVERTISER) if a.name == key}
    assert audience_id in named, (key, audience_id, named)
    return audience_id


def _frozen(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


def check_accounting(result: Run, *, max_attempts: int) -> None:
    """Every received line is delivered, rejected or deferred, once, for a good reason."""
    summary, lines = result.summary, result.lines
    by_number = {line.number: line for line in lines}
    stopped = summary["stopped"]
    retry_file = summary["retry_file"] is not None

    assert summary["received"] == summary["delivered"] + summary["rejected"] + summary["deferred"]
    assert summary["received"] == sum(1 for line in lines if not line.blank)

    # the rejected file: one record per rejected line, pointing at it, with its reason
    assert len(result.rejected) == summary["rejected"]
    assert Counter(r["reason"] for r in result.rejected) == summary["rejected_by_reason"]
    rejected_numbers = [r["line"] for r in result.rejected]
    assert len(set(rejected_numbers)) == len(rejected_numbers)
    for record in result.rejected:
        line = by_number[record["line"]]
        assert not line.blank
        if line.event is not None:
            assert record["event"] == line.event
        else:
            assert record["raw"] == line.raw.decode("utf-8")
        allowed = {line.own_reason} if line.own_reason is not None else set()
        if stopped is not None and not retry_file and line.event is not None:
            allowed.add(stopped["reason"])
        assert record["reason"] in allowed, (record, stopped, retry_file)

    # the retry file: input events only, and only when TikTok stayed unavailable
    assert len(result.retried) == summary["deferred"]
    if summary["deferred"]:
        assert stopped is not None
        assert stopped["reason"] == "api_unavailable"
        assert retry_file
    input_events = Counter(_frozen(line.event) for line in lines if line.event is not None)
    deferred = Counter(_frozen(event) for event in result.retried)
    assert not deferred - input_events, "the retry file holds events that were not in the input"

    # the stop comes from TikTok staying down (there are no auth faults) after every attempt
    if stopped is not None:
        assert stopped["reason"] == "api_unavailable", stopped
        assert f"gave up after {max_attempts} attempts" in stopped["message"], stopped
    else:
        assert summary["deferred"] == 0
    assert "tiktok_rejected" not in summary["rejected_by_reason"]
    if "api_unavailable" in summary["rejected_by_reason"]:
        assert stopped is not None and stopped["reason"] == "api_unavailable"
        assert not retry_file

    # delivered: whatever is neither rejected nor deferred, and it is in the audience
    delivered = [
        line
        for line in lines
        if line.event is not None
        and line.number not in set(rejected_numbers)
        and _frozen(line.event) not in deferred
    ]
    assert len(delivered) == summary["delivered"]
    for line in delivered:
        assert line.own_reason is None, line
        members = result.fake.members(_audience_of(result, line))
        for id_type, hashed in line.ids.items():
            assert hashed in members.get(id_type, set()), (line.number, id_type)
    if stopped is None:  # nothing stopped the run: every deliverable event was delivered
        assert all(line.own_reason is not None for line in lines if line.number in rejected_numbers)
        assert summary["delivered"] == sum(
            1 for line in lines if line.event is not None and line.own_reason is None
        )


# ---------------------------------------------------------------------- the properties


@RUN_SETTINGS
@given(specs=line_specs(), faults=fault_plans(), run_settings=run_settings)
def test_every_event_is_accounted_for_under_random_faults(
    no_waiting: None, specs: list[LineSpec], faults: Faults, run_settings: RunSettings
) -> None:
    result = run(specs, faults, run_settings)
    check_accounting(result, max_attempts=run_settings.max_attempts)
    summary = result.summary
    event(f"stopped: {summary['stopped']['reason'] if summary['stopped'] else 'no'}")
    event(f"deferred: {'some' if summary['deferred'] else 'none'}")
    event(f"requests past the first attempt: {summary['requests'] > len(result.fake.accepted)}")


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=line_specs(), run_settings=run_settings)
def test_without_faults_every_deliverable_event_is_delivered(
    no_waiting: None, specs: list[LineSpec], run_settings: RunSettings
) -> None:
    result = run(specs, None, run_settings)
    check_accounting(result, max_attempts=run_settings.max_attempts)
    assert result.summary["stopped"] is None
    assert result.summary["rejected"] == sum(1 for line in result.lines if line.own_reason)


@RUN_SETTINGS
@given(
    specs=line_specs(targets=SEEDED),
    faults=fault_plans(),
    max_attempts=st.integers(1, 6),
    batch_size=st.integers(1, 20),
    with_retry_file=st.booleans(),
)
def test_one_sender_replays_the_same_run_from_the_same_seed(
    no_waiting: None,
    specs: list[LineSpec],
    faults: Faults,
    max_attempts: int,
    batch_size: int,
    with_retry_file: bool,
) -> None:
    """Same input, plan and seed, one sender: the same requests and the same summary.

    Only seeded audiences: an audience the run creates is created from the reading
    thread while the sender may be sending, so the two requests can meet the fault
    schedule in either order.
    """
    run_settings = RunSettings(max_attempts, batch_size, 1, with_retry_file)
    first = run(specs, faults, run_settings)
    second = run(specs, faults, run_settings)
    check_accounting(first, max_attempts=max_attempts)
    assert second.requests == first.requests
    assert _without_paths(second.summary) == _without_paths(first.summary)
    assert second.rejected == first.rejected
    assert second.retried == first.retried


def _without_paths(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the run's folder (each run has its own)."""
    kept = {k: v for k, v in summary.items() if k not in ("rejected_file", "retry_file")}
    kept["warnings"] = [w.split(": ", 1)[1] for w in summary["warnings"]]
    return kept


# --------------------------------------------------------------------------- batcher


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.sampled_from("abcde"), max_size=200),
    size=st.integers(1, 12),
    max_held=st.one_of(st.none(), st.integers(0, 40)),
    takes=st.sets(st.integers(0, 199)),
)
def test_batcher_hands_out_every_item_once_in_order_and_never_too_many(
    groups: list[str], size: int, max_held: int | None, takes: set[int]
) -> None:
    batcher: Batcher[int] = Batcher(size, max_held=max_held)
    batches: list[Batch[int]] = []
    for item, group in enumerate(groups):
        full = batcher.add(group, item)
        if full is not None:
            batches.append(full)
        if item in takes and batcher.is_open(group):  # the pipeline takes conflicting groups
            batches.append(batcher.take(group))
        assert batcher.held == item + 1 - sum(len(b.items) for b in batches)
        assert batcher.held <= batcher.max_held
    batches.extend(batcher.drain())

    assert batcher.held == 0
    handed = [item for batch in batches for item in batch.items]
    assert sorted(handed) == list(range(len(groups)))  # every item, exactly once
    for batch in batches:
        assert 1 <= len(batch.items) <= size
        assert {groups[item] for item in batch.items} == {batch.group}
    for group in set(groups):  # the order within a group is kept
        order = [item for item in handed if groups[item] == group]
        assert order == sorted(order)


# ---------------------------------------------------------------------- rate limiter


def _most_in_one_second(times: list[float]) -> int:
    """The most of ``times`` (sorted) that fall in one half-open window [t, t + 1)."""
    most, start = 0, 0
    for end, time in enumerate(times):
        while times[start] <= time - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@settings(max_examples=300, deadline=None)
@given(
    qps=st.integers(1, 50),
    per_key_qps=st.integers(0, 50),
    calls=st.lists(
        st.tuples(
            st.sampled_from([None, "adv-1", "adv-2", "adv-3"]),
            st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 2.5]),
            st.sampled_from(["acquire"] * 9 + ["slow_down"]),
        ),
        max_size=150,
    ),
)
def test_rate_limiter_never_lets_more_than_qps_calls_into_one_second(
    qps: int, per_key_qps: int, calls: list[tuple[str | None, float, str]]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(qps=qps, per_key_qps=per_key_qps, clock=clock, sleep=clock.sleep)
    allowed: list[tuple[float, str | None]] = []
    for key, pause, what in calls:
        clock.now += pause
        if what == "slow_down":
            limiter.slow_down(key)
            continue
        before = clock.now
        limiter.acquire(key)
        assert clock.now >= before
        allowed.append((clock.now, key))

    assert _most_in_one_second(sorted(t for t, _ in allowed)) <= qps
    if per_key_qps:
        for key in {k for _, k in allowed if k is not None}:
            times = sorted(t for t, k in allowed if k == key)
            assert _most_in_one_second(times) <= per_key_qps, key


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=60),
    batch_size=st.integers(1, 12),
    concurrency=st.integers(1, 4),
)
def test_each_user_ends_as_their_last_event_says_whatever_the_batching(
    no_waiting: None,
    flips: list[tuple[int, bool]],
    batch_size: int,
    concurrency: int,
) -> None:
    """Adds and removals for a few users, interleaved: TikTok ends holding exactly the
    users whose last event was an entry (order per user survives batching and senders)."""
    fake, audience_ids = _fake()
    audience_id = audience_ids[0]
    events = [
        {
            "type": "track",
            "event": "Audience Entered" if entered else "Audience Exited",
            "context": {
                "traits": {"email": f"flip{user}@example.com"},
                "personas": {
                    "external_audience_id": audience_id,
                    "audience_settings": {"advertiserId": ADVERTISER},
                },
            },
        }
        for user, entered in flips
    ]
    last = dict(flips)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        document = json.loads(NATIVE_MAPPING.read_text())
        document["settings"].update(
            {
                "qps": 0,
                "retry_initial_wait": 0,
                "batch_size": batch_size,
                "concurrency": concurrency,
            }
        )
        mapping = folder / "mapping.json"
        mapping.write_text(json.dumps(document))
        events_path = folder / "events.ndjson"
        events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
        summary = run_sync(
            SyncOptions(mapping=mapping, events=str(events_path)),
            environ={"TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_AUDIENCE_STATE": str(folder / "a")},
            backend=fake,
        )
    assert summary["delivered"] == len(events)
    held = fake.members(audience_id).get("EMAIL_SHA256", set())
    assert held == {hash_email(f"flip{u}@example.com") for u, entered in last.items() if entered}
