"""Warehouse syncs that do not finish: a batch TikTok refuses, TikTok unavailable, a run
killed with SIGKILL, and a setting that changes the hashes. Whatever happened, the next
run sends what the audience does not hold yet, and nothing twice that was recorded.

The snapshot records a row only once TikTok accepted it, in one transaction per answered
batch; these tests check that on DuckDB (state in a local file) and PostgreSQL (state in
the database, tests/postgres_server.py).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from destination.backends import ApiRequest, ApiResponse
from destination.cli import main
from destination.fake_server import FakeTikTok, FaultPlan, serve_in_thread
from tests.fake_backends import kill_at_the_hold
from tests.postgres_server import PostgresServer
from tests.warehouse_support import (
    TOKEN,
    Row,
    fake_with_audience,
    members,
    sha,
    sync,
    write_customers,
    write_mapping,
)

ROOT = Path(__file__).resolve().parent.parent
MAPPING_PATH = "segment/mapping/"
QUERY = "select id, email, phone, advertising_id, device_type from {table}"


def person(i: int) -> Row:
    return (i, f"user{i}@example.com", None, None, None)


# ---------------------------------------------------------------- where the rows live


class Warehouse:
    """A customers table and the ``source`` object that reads it, in one engine."""

    def __init__(self, engine: str, directory: Path, postgres: PostgresServer | None) -> None:
        self.engine = engine
        self.directory = directory
        self.postgres = postgres
        self.schema = f"wh_{secrets.token_hex(4)}"

    def write(self, rows: list[Row]) -> None:
        if self.postgres is None:
            write_customers(self.directory / "shop.duckdb", rows)
            return
        with psycopg.connect(self.postgres.url, autocommit=True) as connection:
            connection.execute(f"create schema if not exists {self.schema}")
            connection.execute(f"drop table if exists {self.schema}.customers")
            connection.execute(
                f"create table {self.schema}.customers (id integer primary key, email text, "
                "phone text, advertising_id text, device_type text)"
            )
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"insert into {self.schema}.customers values (%s, %s, %s, %s, %s)", rows
                )

    def source(self) -> dict[str, Any]:
        if self.postgres is None:
            return {
                "url": f"duckdb:///{self.directory / 'shop.duckdb'}",
                "query": QUERY.format(table="customers"),
                "primary_key": "id",
            }
        return {
            "url": self.postgres.url,
            "query": QUERY.format(table=f"{self.schema}.customers"),
            "primary_key": "id",
            "state_schema": f"{self.schema}_state",
        }

    def recorded(self) -> int:
        """How many rows the snapshot holds (for any audience)."""
        if self.postgres is None:
            import duckdb  # noqa: PLC0415

            path = self.directory / "state" / "warehouse.duckdb"
            with duckdb.connect(str(path), read_only=True) as local:
                return int(
                    local.execute("select count(*) from tiktok_audiences_snapshot").fetchone()[0]  # type: ignore[index]
                )
        with psycopg.connect(self.postgres.url, autocommit=True) as connection:
            row = connection.execute(
                f"select count(*) from {self.schema}_state.tiktok_audiences_snapshot"
            ).fetchone()
            assert row is not None
            return int(row[0])

    def drop(self) -> None:
        if self.postgres is not None:
            with psycopg.connect(self.postgres.url, autocommit=True) as connection:
                connection.execute(f"drop schema if exists {self.schema} cascade")
                connection.execute(f"drop schema if exists {self.schema}_state cascade")


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    found = Warehouse(str(request.param), tmp_path, server)
    yield found
    found.drop()


def added_emails(fake: FakeTikTok, *, since: int = 0, accepted: bool = True) -> Counter[str]:
    """How many add requests (accepted ones, or all that arrived) carried each hash."""
    requests = fake.accepted if accepted else fake.requests
    seen: Counter[str] = Counter()
    for request in requests[since:]:
        if request.path == MAPPING_PATH and request.json["action"] == "add":
            for row in request.json["batch_data"]:
                seen.update(entry["id"] for entry in row if entry)
    return seen


def mapping_requests(fake: FakeTikTok) -> int:
    """Requests to segment/mapping that arrived, whole or not (a client killed while
    sending leaves one without its body)."""
    return sum(1 for r in fake.requests if r.path == MAPPING_PATH)


class RefuseBatch:
    """Passes requests to the fake, but TikTok refuses the ``nth`` add batch (from 1) with
    a parameter error: the whole batch is rejected, the others go through."""

    def __init__(self, fake: FakeTikTok, nth: int) -> None:
        self.fake = fake
        self.nth = nth
        self.adds = 0
        self.refused: list[str] = []

    def send(self, request: ApiRequest) -> ApiResponse:
        if request.path == MAPPING_PATH and request.json["action"] == "add":
            self.adds += 1
            if self.adds == self.nth:
                self.refused = [e["id"] for row in request.json["batch_data"] for e in row if e]
                self.fake.fail_next(40002, message="Invalid parameter", path=MAPPING_PATH)
        return self.fake.send(request)


class DownAfter:
    """Passes requests to the fake until ``after`` add batches went through; then TikTok
    answers HTTP 503 to everything (retries run out: the run stops, exit 5)."""

    def __init__(self, fake: FakeTikTok, after: int) -> None:
        self.fake = fake
        self.after = after
        self.adds = 0

    def send(self, request: ApiRequest) -> ApiResponse:
        if request.path == MAPPING_PATH and request.json["action"] == "add":
            self.adds += 1
            if self.adds == self.after + 1:
                self.fake.inject_faults(FaultPlan({"http_503": 1.0}))
        return self.fake.send(request)


# ---------------------------------------------------------- a refused batch, retried


def test_a_refused_batch_is_rejected_by_key_not_recorded_and_sent_again_next_run(
    tmp_path: Path, warehouse: Warehouse
) -> None:
    fake, audience = fake_with_audience()
    rows = [person(i) for i in range(1, 7)]
    warehouse.write(rows)
    mapping = write_mapping(
        tmp_path, audience, warehouse.source(), settings={"batch_size": 2}, name="m.json"
    )
    rejected = tmp_path / "rejected.ndjson"
    refusing = RefuseBatch(fake, nth=2)

    run = sync(mapping, state=tmp_path / "state", backend=refusing, rejected=rejected)
    assert (run["added"], run["delivered"], run["rejected"]) == (6, 4, 2)
    records = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
    assert [r["primary_key"] for r in records] == [{"id": "3"}, {"id": "4"}]
    assert all(r["reason"] and r["change"] == "added" for r in records)
    text = rejected.read_text("utf-8")
    for i in (3, 4):  # neither the identifiers nor their hashes
        assert f"user{i}@" not in text and sha(f"user{i}@example.com") not in text
    assert set(refusing.refused) == {sha("user3@example.com"), sha("user4@example.com")}
    assert warehouse.recorded() == 4

    before = len(fake.accepted)
    again = sync(mapping, state=tmp_path / "state", backend=fake, rejected=rejected)
    assert (again["added"], again["unchanged"], again["delivered"]) == (2, 4, 2)
    assert added_emails(fake, since=before) == Counter(refusing.refused)  # exactly those
    assert warehouse.recorded() == 6
    assert len(members(fake, audience)["EMAIL_SHA256"]) == 6


# --------------------------------------------------------------- TikTok unavailable


def test_rows_tiktok_could_not_take_are_not_recorded_and_the_next_run_sends_them(
    tmp_path: Path, warehouse: Warehouse
) -> None:
    fake, audience = fake_with_audience()
    warehouse.write([person(i) for i in range(1, 11)])
    mapping = write_mapping(
        tmp_path, audience, warehouse.source(), settings={"batch_size": 2}, name="m.json"
    )
    down = DownAfter(fake, after=2)

    run = sync(mapping, state=tmp_path / "state", backend=down, rejected=tmp_path / "r.ndjson")
    assert run["stopped"]["reason"] == "api_unavailable"
    assert run["delivered"] == 4 and run["delivered"] + run["rejected"] == 10
    assert warehouse.recorded() == 4

    fake.inject_faults(None)  # TikTok is back
    before = len(fake.accepted)
    again = sync(mapping, state=tmp_path / "state", backend=fake)
    assert (again["added"], again["unchanged"], again["delivered"]) == (6, 4, 6)
    expected = {sha(f"user{i}@example.com") for i in range(1, 11)}
    assert set(added_emails(fake, since=before)) == {
        sha(f"user{i}@example.com") for i in range(5, 11)
    }
    assert sum(added_emails(fake).values()) == 10  # nothing accepted twice
    assert members(fake, audience)["EMAIL_SHA256"] == expected
    assert warehouse.recorded() == 10


def test_tiktok_down_for_good_exits_5_and_the_next_run_sends_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, audience = fake_with_audience()
    write_customers(tmp_path / "shop.duckdb", [person(i) for i in range(1, 6)])
    source = {
        "url": f"duckdb:///{tmp_path / 'shop.duckdb'}",
        "query": QUERY.format(table="customers"),
        "primary_key": "id",
    }
    mapping = write_mapping(tmp_path, audience, source, settings={"batch_size": 2})
    argv = ["sync", "--mapping", str(mapping), "--state", str(tmp_path / "state")]
    fake.inject_faults(FaultPlan({"http_503": 1.0}))
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        out = io.StringIO()
        assert main([*argv, "--rejected", str(tmp_path / "r.ndjson")], stdout=out) == 5
        summary = json.loads(out.getvalue().splitlines()[-1])
        assert summary["delivered"] == 0 and summary["stopped"]["reason"] == "api_unavailable"
        assert "stopped" in capsys.readouterr().err
        assert members(fake, audience) == {}

        fake.inject_faults(None)
        out = io.StringIO()
        assert main(argv, stdout=out) == 0
        summary = json.loads(out.getvalue().splitlines()[-1])
        assert (summary["added"], summary["delivered"]) == (5, 5)
    assert len(members(fake, audience)["EMAIL_SHA256"]) == 5


# ------------------------------------------------------------- SIGKILL, then resume


@pytest.mark.parametrize("concurrency", [1, 2])
def test_sigkill_mid_run_then_the_rerun_sends_at_most_the_batches_in_flight(
    tmp_path: Path, warehouse: Warehouse, concurrency: int
) -> None:
    total, batch, answered = 40, 2, 6
    needed = total // batch
    fake, audience = fake_with_audience()
    warehouse.write([person(i) for i in range(1, total + 1)])
    mapping = write_mapping(
        tmp_path,
        audience,
        warehouse.source(),
        settings={"batch_size": batch, "concurrency": concurrency},
        name="m.json",
    )
    arrived = fake.hold_after(MAPPING_PATH, answered)  # this add batch waits, unprocessed
    with serve_in_thread(fake) as server:
        command = [
            sys.executable, "-m", "destination", "sync",
            "--mapping", str(mapping),
            "--state", str(tmp_path / "state"),
            "--rejected", str(tmp_path / "rejected.ndjson"),
        ]  # fmt: skip
        env = {
            **os.environ,
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_API_BASE_URL": server.base_url,
            "PYTHONPATH": str(ROOT),
        }
        kill_at_the_hold(fake, arrived, command, env)
        held = len(members(fake, audience).get("EMAIL_SHA256", set()))
        assert answered * batch <= held < total
        assert warehouse.recorded() >= held - (concurrency - 1) * batch  # in flight at most

        second = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
        assert second.returncode == 0, second.stderr.decode()
        summary = json.loads(second.stdout.decode().splitlines()[-1])
        # at the kill, the held batch and at most concurrency - 1 others were unanswered
        unanswered = total - (answered - (concurrency - 1)) * batch
        assert summary["added"] == summary["delivered"] <= unanswered
        assert summary["rejected"] == 0

        requests = len(fake.requests)
        third = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
        assert third.returncode == 0, third.stderr.decode()
        summary = json.loads(third.stdout.decode().splitlines()[-1])
        assert (summary["received"], summary["unchanged"]) == (0, total)
        assert len(fake.requests) == requests  # nothing to send

    expected = {sha(f"user{i}@example.com") for i in range(1, total + 1)}
    assert members(fake, audience) == {"EMAIL_SHA256": expected}
    assert warehouse.recorded() == total
    # the held batch, dropped, counts among the requests; at most the batches in flight
    # at the kill are sent again
    assert mapping_requests(fake) <= needed + concurrency
    if concurrency == 1:  # every batch before the held one was recorded: none sent twice
        assert set(added_emails(fake).values()) == {1}


# -------------------------------------------------- a setting that changes the hashes


@pytest.mark.parametrize(
    ("setting", "before", "after"),
    [
        (
            {"phone_format": "e164_no_plus"},
            {"PHONE_SHA256": {sha("+14155550101"), sha("+14155550102")}},
            {"PHONE_SHA256": {sha("14155550101"), sha("14155550102")}},
        ),
        (
            {"email_remove_dots": True},
            {"EMAIL_SHA256": {sha("first.last@example.com"), sha("plain@example.com")}},
            {"EMAIL_SHA256": {sha("firstlast@example.com"), sha("plain@example.com")}},
        ),
    ],
    ids=["phone_format", "email_remove_dots"],
)
def test_a_setting_that_changes_hashes_resends_the_rows_old_hashes_removed(
    tmp_path: Path,
    warehouse: Warehouse,
    setting: dict[str, Any],
    before: dict[str, set[str]],
    after: dict[str, set[str]],
) -> None:
    fake, audience = fake_with_audience()
    warehouse.write(
        [
            (1, "first.last@example.com", "+14155550101", None, None),
            (2, "plain@example.com", "+14155550102", None, None),
        ]
    )
    source = warehouse.source()
    first = write_mapping(tmp_path, audience, source, name="first.json")
    sync(first, state=tmp_path / "state", backend=fake)
    assert {k: members(fake, audience)[k] for k in before} == before

    changed = write_mapping(tmp_path, audience, source, settings=setting, name="changed.json")
    start = len(fake.accepted)
    run = sync(changed, state=tmp_path / "state", backend=fake)
    assert run["changed"] == 2 and run["rejected"] == 0
    held = members(fake, audience)
    assert {k: held[k] for k in after} == after  # the old hashes are gone
    deleted = {
        e["id"]
        for r in fake.accepted[start:]
        if r.path == MAPPING_PATH and r.json["action"] == "delete"
        for row in r.json["batch_data"]
        for e in row
        if e
    }
    kind = next(iter(before))
    assert before[kind] - after[kind] <= deleted

    again = sync(changed, state=tmp_path / "state", backend=fake)
    assert (again["received"], again["unchanged"]) == (0, 2)
