"""Review of the warehouse sync (issue 16): cases the first tests left out, each a bug
found and fixed (DuckDB, local state, against the in-process fake TikTok)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from destination.errors import ConfigurationError, InputError
from destination.warehouse.engines import DuckDBEngine, QueryRefused, Recorded
from tests.test_warehouse import ALICE, BOB, DAN, source_for
from tests.warehouse_support import (
    fake_with_audience,
    members,
    sha,
    sync,
    write_customers,
    write_mapping,
)

MAPPING_PATH = "segment/mapping/"


def test_a_stop_on_the_removals_rejects_every_change_of_the_plan(tmp_path: Path) -> None:
    """The removals are all answered before the first addition (the barrier line); a stop
    met there must still finish that line: counted and in the rejected file."""
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB])
    mapping = write_mapping(tmp_path, audience, source_for(db, "local"))
    state = tmp_path / "state"
    sync(mapping, state=state, backend=fake)

    write_customers(db, [(1, "alice@new.example.com", None, None, None), BOB, DAN])
    fake.fail_next(40105, message="token refused", path=MAPPING_PATH)  # the removals' batch
    rejected = tmp_path / "rejected.ndjson"
    run = sync(mapping, state=state, backend=fake, rejected=rejected)

    assert run["stopped"] is not None and run["stopped"]["reason"] == "auth"
    assert (run["changed"], run["added"]) == (1, 1)
    records = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
    # the changed row's removal, then its addition (the barrier line), then Dan's
    assert [(r["line"], r["action"], r["primary_key"]) for r in records] == [
        (1, "remove", {"id": "1"}),
        (2, "add", {"id": "1"}),
        (3, "add", {"id": "4"}),
    ]
    assert run["received"] == 3 and run["rejected"] == 3
    assert run["source"]["recorded"] == 0

    again = sync(mapping, state=state, backend=fake)
    assert (again["changed"], again["added"], again["delivered"]) == (1, 1, 3)


def test_a_changed_row_whose_removal_went_through_is_not_held_any_more(tmp_path: Path) -> None:
    """Alice's identifiers become null: her old ones are removed, her new row has nothing
    to add. The snapshot must not keep saying the audience holds the old ones, or the next
    runs remove them again, whoever holds them by then (here Erin, with Alice's old email
    and phone)."""
    fake, audience = fake_with_audience()
    db = tmp_path / "shop.duckdb"
    write_customers(db, [ALICE, BOB])
    mapping = write_mapping(tmp_path, audience, source_for(db, "local"))
    state = tmp_path / "state"
    sync(mapping, state=state, backend=fake)

    nothing = (1, None, None, None, None)
    write_customers(db, [nothing, BOB])
    run = sync(mapping, state=state, backend=fake)
    assert run["changed"] == 1 and run["rejected_by_reason"] == {"no_identifier": 1}
    assert members(fake, audience) == {"EMAIL_SHA256": {sha("bob@example.com")}}

    erin = (5, "alice@example.com", "+14155550101", None, None)
    write_customers(db, [nothing, BOB, erin])
    before = len(fake.requests)
    run = sync(mapping, state=state, backend=fake)
    assert (run["added"], run["changed"], run["removed"]) == (2, 0, 0)  # Alice is tried again
    sent = [r.json for r in fake.requests[before:] if r.path.endswith(MAPPING_PATH)]
    assert [body["action"] for body in sent if body] == ["add"]  # no removal again

    sync(mapping, state=state, backend=fake)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("bob@example.com"), sha("alice@example.com")},
        "PHONE_SHA256": {sha("+14155550101")},
    }


def test_duckdb_failing_to_stage_or_record_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    """Staging another engine's rows (spilling where it cannot) and recording what TikTok
    accepted (a snapshot that cannot be written) fail as the run's errors (exit 2, 3 or
    6), never as a raw DuckDB exception (an unexpected error, exit 1)."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory", "utf-8")
    staging = DuckDBEngine(memory_limit="2MB", temp_directory=blocked / "spill")
    try:
        staging.execute("create table wh_work.wh_current (pk varchar, fp varchar, row varchar)")
        rows = [(str(i), "f" * 32, "r" * 300) for i in range(50_000)]
        with pytest.raises((ConfigurationError, QueryRefused)):
            for _ in range(5):
                staging.load("wh_work.wh_current", ("pk", "fp", "row"), rows)
    finally:
        staging.close()

    path = tmp_path / "warehouse.duckdb"
    writable = DuckDBEngine(memory_limit="64MB", temp_directory=None, attach={"s": (path, False)})
    writable.create_snapshot("s.main.snapshot")
    writable.close()
    read_only = DuckDBEngine(memory_limit="64MB", temp_directory=None, attach={"s": (path, True)})
    try:
        with pytest.raises(InputError, match="cannot record"):
            read_only.record("s.main.snapshot", "t", ["1"], [Recorded("2", "fp", "{}")])
    finally:
        read_only.close()
