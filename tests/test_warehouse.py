"""Warehouse syncs on DuckDB (the embedded default) against the in-process fake TikTok:
first sync, inserts, deletes, changed identifiers, each sync mode, both state places."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from destination.errors import ConfigurationError
from tests.warehouse_support import (
    fake_with_audience,
    members,
    sha,
    sync,
    write_customers,
    write_mapping,
)

ALICE = (1, "alice@example.com", "+14155550101", None, None)
BOB = (2, "bob@example.com", None, None, None)
CAROL = (3, None, "+14155550103", None, None)
DAN = (4, None, None, "6D92078A-8246-4BA4-AE5B-76104861E7DC", "ios")


@pytest.fixture(params=["local", "in_source"])
def state_place(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def source_for(db: Path, place: str, **extra: object) -> dict[str, object]:
    source: dict[str, object] = {
        "url": f"duckdb:///{db}",
        "query": "select id, email, phone, advertising_id, device_type from customers",
        "primary_key": "id",
        **extra,
    }
    if place == "in_source":
        source["state_schema"] = "tiktok_sync"
    return source


def test_first_sync_adds_every_row_and_a_rerun_sends_nothing(
    tmp_path: Path, state_place: str
) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB, CAROL, DAN])
    mapping = write_mapping(tmp_path, audience, source_for(db, state_place))
    state = tmp_path / "state"

    first = sync(mapping, state=state, backend=fake)
    assert (first["added"], first["removed"], first["changed"], first["unchanged"]) == (4, 0, 0, 0)
    assert first["delivered"] == 4
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@example.com"), sha("bob@example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
        "IDFA_SHA256": {sha("6d92078a-8246-4ba4-ae5b-76104861e7dc")},
    }
    requests = len(fake.requests)

    second = sync(mapping, state=state, backend=fake)
    assert (second["added"], second["removed"], second["changed"]) == (0, 0, 0)
    assert second["unchanged"] == 4
    assert second["received"] == 0
    assert len(fake.requests) == requests  # not one call


def test_mirror_sends_only_inserts_deletes_and_changes(tmp_path: Path, state_place: str) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB, CAROL])
    mapping = write_mapping(tmp_path, audience, source_for(db, state_place))
    state = tmp_path / "state"
    sync(mapping, state=state, backend=fake)

    alice_moved = (1, "alice@new.example.com", "+14155550101", None, None)
    write_customers(db, [alice_moved, CAROL, DAN])  # Bob left, Dan came, Alice's email changed
    before = len(fake.requests)
    run = sync(mapping, state=state, backend=fake)

    assert (run["added"], run["removed"], run["changed"], run["unchanged"]) == (1, 1, 1, 1)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@new.example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
        "IDFA_SHA256": {sha("6d92078a-8246-4ba4-ae5b-76104861e7dc")},
    }
    bodies = [r.json for r in fake.requests[before:] if r.path.endswith("segment/mapping/")]
    # every removal reaches TikTok before any addition
    actions = [b["action"] for b in bodies]
    assert actions == sorted(actions, key=lambda a: a != "delete")
    assert "delete" in actions and "add" in actions
    removed = {
        e["id"]
        for b in bodies
        if b["action"] == "delete"
        for row in b["batch_data"]
        for e in row
        if e
    }
    assert removed == {sha("bob@example.com"), sha("alice@example.com"), sha("+14155550101")}

    third = sync(mapping, state=state, backend=fake)
    assert third["received"] == 0 and third["unchanged"] == 3


def test_add_mode_never_removes_and_remove_mode_removes_what_the_query_lists(
    tmp_path: Path,
) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB])
    adding = write_mapping(tmp_path, audience, source_for(db, "local", sync_mode="add"))
    sync(adding, state=tmp_path / "state", backend=fake)
    write_customers(db, [ALICE])
    run = sync(adding, state=tmp_path / "state", backend=fake)
    assert run["removed"] == 0 and run["received"] == 0
    assert sha("bob@example.com") in members(fake, audience)["EMAIL_SHA256"]

    write_customers(db, [BOB], table="unsubscribed")
    removing = write_mapping(
        tmp_path,
        audience,
        {
            "url": f"duckdb:///{db}",
            "table": "unsubscribed",
            "primary_key": ["id"],
            "sync_mode": "remove",
        },
        name="remove.json",
    )
    run = sync(removing, state=tmp_path / "state-remove", backend=fake)
    assert run["removed"] == 1 and run["delivered"] == 1
    assert members(fake, audience)["EMAIL_SHA256"] == {sha("alice@example.com")}


def test_a_dry_run_is_the_plan_without_a_request_or_a_state_change(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB])
    mapping = write_mapping(tmp_path, audience, source_for(db, "local"))
    state = tmp_path / "state"

    plan = sync(mapping, state=state, backend=fake, dry_run=True)
    assert plan["added"] == 2 and plan["source"]["samples"] == {"added": ["1", "2"]}
    assert fake.requests == [] and not state.exists()

    sync(mapping, state=state, backend=fake)
    write_customers(db, [ALICE])
    requests = len(fake.requests)
    plan = sync(mapping, state=state, backend=fake, dry_run=True)
    assert (plan["removed"], plan["unchanged"]) == (1, 1)
    assert len(fake.requests) == requests
    assert sync(mapping, state=state, backend=fake)["removed"] == 1  # the dry run kept nothing


def test_rows_tiktok_refuses_are_rejected_by_key_and_tried_again(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    nobody = (5, "not an email", None, None, None)  # no usable identifier
    write_customers(db, [ALICE, nobody])
    mapping = write_mapping(tmp_path, audience, source_for(db, "local"))
    rejected = tmp_path / "rejected.ndjson"

    run = sync(mapping, state=tmp_path / "state", backend=fake, rejected=rejected)
    assert (run["delivered"], run["rejected"]) == (1, 1)
    assert run["source"]["recorded"] == 1  # Alice only
    [record] = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert record["primary_key"] == {"id": "5"} and record["change"] == "added"
    assert record["reason"] == "no_identifier"
    assert "not an email" not in rejected.read_text()  # no identifier in the rejected file

    again = sync(mapping, state=tmp_path / "state", backend=fake, rejected=rejected)
    assert again["added"] == 1 and again["rejected"] == 1  # tried again, never skipped


def test_a_mirror_that_would_empty_the_audience_stops_unless_allowed(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB, CAROL])
    mapping = write_mapping(tmp_path, audience, source_for(db, "local"))
    sync(mapping, state=tmp_path / "state", backend=fake)
    write_customers(db, [])
    requests = len(fake.requests)

    with pytest.raises(ConfigurationError, match="max_removal_fraction") as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert "--allow-mass-removal" in str(caught.value)
    assert len(fake.requests) == requests

    run = sync(mapping, state=tmp_path / "state", backend=fake, allow_mass_removal=True)
    assert run["removed"] == 3 and members(fake, audience) == {}
