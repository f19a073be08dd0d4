"""Creating an audience is idempotent across a lost reply.

TikTok lets two audiences share a name, so a create that TikTok carried out but whose
reply never arrived, sent again, would leave a second audience (the first one empty and
forgotten). The fake drops the connection after carrying out the create (its
``drop_after`` fault); the client must then find the audience it created by name
instead of creating another, and take it rather than an older one of the same name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from destination.backends import ApiRequest, ApiResponse
from destination.fake_server import FakeTikTok, FaultPlan
from destination.runner.sync import SyncOptions, run_sync
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, TikTokApi
from destination.tiktok.normalize import hash_email

ROOT = Path(__file__).resolve().parent.parent
ADVERTISER = "7000000000000000001"
TOKEN = "idempotent-create-token"
CREATE = "segment/audience/"
LIST = "dmp/custom_audience/list/"


class FaultOnCreate:
    """A backend in front of the fake that meets the first ``times`` audience creates with
    the fake's ``fault`` (``drop_after``: carried out, then the connection closes)."""

    def __init__(self, fake: FakeTikTok, fault: str, times: int = 1) -> None:
        self.fake = fake
        self.fault = fault
        self.left = times

    def send(self, request: ApiRequest) -> ApiResponse:
        if request.path != CREATE or self.left == 0:
            return self.fake.send(request)
        self.left -= 1
        self.fake.inject_faults(FaultPlan({self.fault: 1.0}))
        try:
            return self.fake.send(request)
        finally:
            self.fake.inject_faults(None)


def make_fake(scopes: tuple[int, ...] = (30, 31, 32)) -> FakeTikTok:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER], scopes=scopes)
    return fake


def api_for(backend: Any) -> TikTokApi:
    return TikTokApi(backend, Secret(TOKEN), retry=RetryPolicy(max_attempts=4, initial_wait=0))


def named(fake: FakeTikTok, name: str) -> list[str]:
    return [a.audience_id for a in fake.audiences(ADVERTISER) if a.name == name]


def paths(fake: FakeTikTok) -> list[str]:
    return [r.path for r in fake.requests]


# ------------------------------------------------------------------- a whole sync


def audience_event(i: int, key: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Audience Entered",
        "context": {
            "traits": {"email": f"user{i}@example.com"},
            "personas": {
                "computation_class": "audience",
                "computation_key": key,
                "audience_settings": {"advertiserId": ADVERTISER},
            },
        },
    }


def sync(tmp_path: Path, backend: Any, key: str, users: int) -> dict[str, Any]:
    document = json.loads((ROOT / "mappings" / "segment-native.json").read_text("utf-8"))
    document["settings"].update(
        {"qps": 0, "retry_initial_wait": 0, "max_attempts": 4, "concurrency": 1, "batch_size": 7}
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(document), "utf-8")
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps(audience_event(i, key)) + "\n" for i in range(users)))
    return run_sync(
        SyncOptions(mapping=mapping, events=str(events), rejected=tmp_path / "rejected.ndjson"),
        environ={
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        },
        backend=backend,
    )


def test_a_sync_whose_create_reply_is_lost_ends_with_one_audience_holding_every_user(
    tmp_path: Path,
) -> None:
    fake = make_fake()

    summary = sync(tmp_path, FaultOnCreate(fake, "drop_after"), "vip_customers", users=30)

    assert summary["delivered"] == 30, summary
    (audience_id,) = named(fake, "vip_customers")
    assert fake.members(audience_id)["EMAIL_SHA256"] == {
        hash_email(f"user{i}@example.com") for i in range(30)
    }
    assert paths(fake).count(CREATE) == 1  # looked up, not created again
    assert [a["audience_id"] for a in summary["audiences"]] == [audience_id]
    state = json.loads((tmp_path / "audiences.json").read_text("utf-8"))
    assert json.dumps(state).count(audience_id) == 1  # remembered for the next run


# ------------------------------------------------------------------- the API client


def test_a_lost_create_reply_is_answered_with_the_audience_it_created() -> None:
    fake = make_fake()

    audience_id = api_for(FaultOnCreate(fake, "drop_after")).create_segment_audience(
        ADVERTISER, "Buyers"
    )

    assert named(fake, "Buyers") == [audience_id]
    assert paths(fake) == [CREATE, LIST]


def test_a_create_that_never_reached_tiktok_is_sent_again() -> None:
    """Dropped before TikTok carried it out: the lookup finds nothing, so create again."""
    fake = make_fake()

    audience_id = api_for(FaultOnCreate(fake, "drop_before")).create_segment_audience(
        ADVERTISER, "Buyers"
    )

    assert named(fake, "Buyers") == [audience_id]
    assert paths(fake) == [CREATE, LIST, CREATE]


def test_an_older_audience_of_the_same_name_is_passed_over_for_the_one_just_made() -> None:
    """Another audience already had the name (someone else's, or another tool's): the
    lost create's own audience is taken, the older one is left alone."""
    fake = make_fake()
    older = fake.add_audience(ADVERTISER, "Buyers")

    audience_id = api_for(FaultOnCreate(fake, "drop_after")).create_segment_audience(
        ADVERTISER, "Buyers"
    )

    assert audience_id != older
    assert named(fake, "Buyers") == [older, audience_id]


def test_a_long_name_is_matched_as_tiktok_cuts_it() -> None:
    fake = make_fake()
    name = "Customers who bought twice in the last ninety days and opened the newsletter"
    assert len(name) > 70

    audience_id = api_for(FaultOnCreate(fake, "drop_after")).create_segment_audience(
        ADVERTISER, name
    )

    assert [a.audience_id for a in fake.audiences(ADVERTISER)] == [audience_id]


def test_the_lookup_reads_every_page_of_the_list() -> None:
    fake = make_fake()
    for n in range(230):  # three pages of at most 100
        fake.add_audience(ADVERTISER, f"other {n}")

    audience_id = api_for(FaultOnCreate(fake, "drop_after")).create_segment_audience(
        ADVERTISER, "Buyers"
    )

    assert named(fake, "Buyers") == [audience_id]
    assert [r.params.get("page") for r in fake.requests if r.path == LIST] == ["1", "2", "3"]
    assert paths(fake).count(CREATE) == 1


def test_two_lost_replies_still_leave_one_audience() -> None:
    fake = make_fake()
    backend = FaultOnCreate(fake, "drop_before", times=2)

    audience_id = api_for(backend).create_segment_audience(ADVERTISER, "Buyers")

    assert named(fake, "Buyers") == [audience_id]
    assert paths(fake) == [CREATE, LIST, CREATE, LIST, CREATE]


def test_without_the_read_scope_the_create_is_sent_again_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token without scope 30 cannot list audiences: the create goes on as before (a
    lost reply may then leave an empty audience), and the log says so."""
    fake = make_fake(scopes=(31,))

    audience_id = api_for(FaultOnCreate(fake, "drop_before")).create_segment_audience(
        ADVERTISER, "Buyers"
    )

    assert named(fake, "Buyers") == [audience_id]
    assert paths(fake) == [CREATE, LIST, CREATE]
    assert "cannot look for it" in caplog.text


def test_a_busy_answer_is_not_looked_up() -> None:
    """TikTok answered (rate limit, busy): it did not carry the create out, so no lookup."""
    fake = make_fake()
    fake.fail_next(50002, path=CREATE)

    api_for(fake).create_segment_audience(ADVERTISER, "Buyers")

    assert paths(fake) == [CREATE, CREATE]
