"""Warehouse syncs from a real PostgreSQL server (tests/postgres_server.py) against the
in-process fake TikTok, with the snapshot in a local DuckDB file (the rows streamed into
it) and in a schema of the PostgreSQL database itself (``source.state_schema``).

The server is shared by the whole session: each test works in schemas of its own. Its
URL carries a real password, which no error, log line or summary may show.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from sqlalchemy.engine import make_url

from destination.cli import main
from destination.errors import ConfigurationError, InputError, MappingError
from destination.fake_server import serve_in_thread
from destination.warehouse.snapshot import TABLE
from destination.warehouse.source import STATE_FILE
from tests.postgres_server import PostgresServer, free_loopback_port
from tests.warehouse_support import (
    ADVERTISER,
    ENVIRON,
    TOKEN,
    Row,
    fake_with_audience,
    members,
    sha,
    sync,
    write_mapping,
)

ALICE = (1, "alice@example.com", "+14155550101", None, None)
BOB = (2, "bob@example.com", None, None, None)
CAROL = (3, None, "+14155550103", None, None)
DAN = (4, None, None, "6D92078A-8246-4BA4-AE5B-76104861E7DC", "ios")
COLUMNS = "id integer, email text, phone text, advertising_id text, device_type text"
QUERY = "select id, email, phone, advertising_id, device_type from {schema}.customers"


@dataclass
class Database:
    """The session's server, seen by one test: its own schema for the source tables and
    another for the in-database state (both dropped at the end)."""

    server: PostgresServer
    schema: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state_schema(self) -> str:
        return f"{self.schema}_state"

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def write(self, rows: Iterable[Row], *, table: str = "customers", key: bool = True) -> None:
        """(Re)write ``table`` of the test's schema with ``rows`` of ``COLUMNS``."""
        constraint = ", primary key (id)" if key else ""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"drop table if exists {self.schema}.{table}")
            connection.execute(f"create table {self.schema}.{table} ({COLUMNS}{constraint})")
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"insert into {self.schema}.{table} values (%s, %s, %s, %s, %s)", list(rows)
                )

    def source(self, place: str, **extra: Any) -> dict[str, Any]:
        source: dict[str, Any] = {
            "url": self.url,
            "query": QUERY.format(schema=self.schema),
            "primary_key": "id",
            **extra,
        }
        if place == "in_database":
            source["state_schema"] = self.state_schema
        return source

    def schemas_like(self, prefix: str) -> list[str]:
        """The schemas whose name starts with ``prefix``."""
        rows = self.execute(
            "select schema_name from information_schema.schemata "
            "where starts_with(schema_name, %s)",
            [prefix],
        )
        return [str(name) for (name,) in rows]

    def recorded(self) -> list[tuple[str, str]]:
        """The in-database snapshot: (target, primary key) per recorded row."""
        return [
            (str(t), str(k))
            for t, k in self.execute(
                f"select target, pk from {self.state_schema}.{TABLE} order by pk"
            )
        ]


@pytest.fixture
def db(postgres_server: PostgresServer) -> Iterator[Database]:
    database = Database(postgres_server, f"wh_{secrets.token_hex(4)}")
    database.execute(f"create schema {database.schema}")
    yield database
    database.execute(f"drop schema if exists {database.schema} cascade")
    database.execute(f"drop schema if exists {database.state_schema} cascade")


@pytest.fixture(params=["local", "in_database"])
def place(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def assert_no_password(password: str, *texts: str) -> None:
    for text in texts:
        assert password not in text


# ------------------------------------------------------------------ the sync itself


def test_first_sync_then_inserts_deletes_and_changed_emails_and_phones(
    tmp_path: Path, db: Database, place: str
) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB, CAROL])
    mapping = write_mapping(tmp_path, audience, db.source(place))
    state = tmp_path / "state"

    first = sync(mapping, state=state, backend=fake)
    assert (first["added"], first["removed"], first["changed"], first["unchanged"]) == (3, 0, 0, 0)
    assert first["delivered"] == 3
    assert first["source"]["engine"] == "postgresql"
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@example.com"), sha("bob@example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
    }
    requests = len(fake.requests)
    again = sync(mapping, state=state, backend=fake)
    assert (again["received"], again["unchanged"]) == (0, 3)
    assert len(fake.requests) == requests  # not one call

    alice_moved = (1, "alice@new.example.com", "+14155550101", None, None)  # email changed
    carol_moved = (3, None, "+14155550199", None, None)  # phone changed
    db.write([alice_moved, carol_moved, DAN])  # Bob deleted, Dan inserted
    run = sync(mapping, state=state, backend=fake)
    assert (run["added"], run["removed"], run["changed"], run["unchanged"]) == (1, 1, 2, 0)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@new.example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550199")},
        "IDFA_SHA256": {sha("6d92078a-8246-4ba4-ae5b-76104861e7dc")},
    }
    third = sync(mapping, state=state, backend=fake)
    assert (third["received"], third["unchanged"]) == (0, 3)


def test_add_mode_never_removes(tmp_path: Path, db: Database, place: str) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB])
    mapping = write_mapping(tmp_path, audience, db.source(place, sync_mode="add"))
    sync(mapping, state=tmp_path / "state", backend=fake)
    db.write([ALICE, CAROL])  # Bob left, Carol came

    run = sync(mapping, state=tmp_path / "state", backend=fake)
    assert (run["added"], run["removed"], run["delivered"]) == (1, 0, 1)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@example.com"), sha("bob@example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
    }


def test_remove_mode_removes_every_row_the_query_returns(
    tmp_path: Path, db: Database, place: str
) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB, CAROL])
    adding = write_mapping(tmp_path, audience, db.source(place), name="add.json")
    sync(adding, state=tmp_path / "state", backend=fake)

    db.write([BOB, CAROL], table="unsubscribed")
    removing = write_mapping(
        tmp_path,
        audience,
        {
            **db.source(place, sync_mode="remove"),
            "query": f"select * from {db.schema}.unsubscribed",
        },
        name="remove.json",
    )
    run = sync(removing, state=tmp_path / "state", backend=fake)
    assert (run["removed"], run["delivered"]) == (2, 2)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@example.com")},
        "PHONE_SHA256": {sha("+14155550101")},
    }


def test_a_composite_primary_key(tmp_path: Path, db: Database, place: str) -> None:
    fake, audience = fake_with_audience()
    db.execute(f"create table {db.schema}.accounts (shop text, id integer, email text)")
    db.execute(
        f"insert into {db.schema}.accounts values "
        "('eu', 1, 'eu1@example.com'), ('us', 1, 'us1@example.com'), ('us', 2, 'not an email')"
    )
    source = {
        **db.source(place),
        "query": f"select shop, id, email from {db.schema}.accounts",
        "primary_key": ["shop", "id"],
    }
    mapping = write_mapping(tmp_path, audience, source)
    rejected = tmp_path / "rejected.ndjson"

    first = sync(mapping, state=tmp_path / "state", backend=fake, rejected=rejected)
    assert (first["added"], first["delivered"], first["rejected"]) == (3, 2, 1)
    [record] = [json.loads(line) for line in rejected.read_text("utf-8").splitlines()]
    assert record["primary_key"] == {"shop": "us", "id": "2"}  # both columns, by name
    assert "not an email" not in rejected.read_text("utf-8")

    db.execute(f"update {db.schema}.accounts set email = 'eu1@new.example.com' where shop = 'eu'")
    db.execute(f"delete from {db.schema}.accounts where id = 2")
    run = sync(mapping, state=tmp_path / "state", backend=fake, rejected=rejected)
    assert (run["added"], run["removed"], run["changed"], run["unchanged"]) == (0, 0, 1, 1)
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("eu1@new.example.com"), sha("us1@example.com")},
    }


def test_in_database_state_lives_in_the_named_schema_one_row_per_accepted_key(
    tmp_path: Path, db: Database
) -> None:
    fake, audience = fake_with_audience()
    nobody = (5, "not an email", None, None, None)  # TikTok gets nothing for it
    db.write([ALICE, BOB, nobody])
    mapping = write_mapping(tmp_path, audience, db.source("in_database"))

    run = sync(mapping, state=None, backend=fake, rejected=tmp_path / "rejected.ndjson")
    assert (run["delivered"], run["rejected"]) == (2, 1)
    target = f"tiktok:7000000000000000001:{audience}"
    assert db.recorded() == [(target, "1"), (target, "2")]  # the rejected row is not there
    [(schema,)] = db.execute(
        "select table_schema from information_schema.tables where table_name = %s "
        "and starts_with(table_schema, %s)",
        [TABLE, db.schema],
    )
    assert schema == db.state_schema

    db.write([ALICE])
    sync(mapping, state=None, backend=fake)
    assert db.recorded() == [(target, "1")]


def test_local_state_streams_the_rows_into_duckdb_and_leaves_the_database_alone(
    tmp_path: Path, db: Database
) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB, CAROL])
    mapping = write_mapping(tmp_path, audience, db.source("local"))
    sync(mapping, state=tmp_path / "state", backend=fake)

    with duckdb.connect(str(tmp_path / "state" / STATE_FILE), read_only=True) as local:
        keys = local.execute(f"select pk from main.{TABLE} order by pk").fetchall()
    assert keys == [("1",), ("2",), ("3",)]
    assert not db.schemas_like(db.schema + "_")  # no state schema in the database


# ------------------------------------------------------------ stopped before any call


@pytest.mark.parametrize(
    ("query", "key", "pointer", "named"),
    [
        ("select id, emial from {schema}.customers", "id", "/source/query", "emial"),
        ("select id, email from {schema}.nowhere", "id", "/source/query", "nowhere"),
        ("select email from {schema}.customers", "id", "/source/primary_key", "id is not"),
        ("select id, email from {schema}.customers", ["id", "shop"], "/source/primary_key", "shop"),
    ],
    ids=["missing-column", "missing-table", "missing-key", "missing-key-column"],
)
def test_a_bad_query_stops_before_any_call(
    tmp_path: Path,
    db: Database,
    place: str,
    query: str,
    key: str | list[str],
    pointer: str,
    named: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB])
    source = {**db.source(place), "query": query.format(schema=db.schema), "primary_key": key}
    mapping = write_mapping(tmp_path, audience, source)

    with pytest.raises(MappingError) as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert caught.value.pointer == pointer
    assert named in str(caught.value)
    assert fake.requests == []
    assert_no_password(db.server.password, str(caught.value), caplog.text)


def test_duplicate_primary_keys_are_named(tmp_path: Path, db: Database, place: str) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, ALICE, BOB, BOB, (7, "x@example.com", None, None, None)], key=False)
    mapping = write_mapping(tmp_path, audience, db.source(place))

    with pytest.raises(MappingError) as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert caught.value.pointer == "/source/primary_key"
    assert "id=1 (2 rows)" in str(caught.value) and "id=2 (2 rows)" in str(caught.value)
    assert "id=7" not in str(caught.value)
    assert fake.requests == []


def test_null_keys_stop_the_run(tmp_path: Path, db: Database, place: str) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, (None, "nokey@example.com", None, None, None)], key=False)
    mapping = write_mapping(tmp_path, audience, db.source(place))

    with pytest.raises(MappingError, match="1 rows have none") as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert caught.value.pointer == "/source/primary_key"
    assert fake.requests == []
    assert not db.schemas_like(db.schema + "_")  # nothing created for a run that never began


# --------------------------------------------------------------------- the password


def test_an_unreachable_database_is_an_input_error_without_the_password(
    tmp_path: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, audience = fake_with_audience()
    closed = make_url(db.url).set(port=free_loopback_port()).render_as_string(hide_password=False)
    mapping = write_mapping(tmp_path, audience, {**db.source("local"), "url": closed})

    with pytest.raises(InputError, match="cannot reach the database") as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert "***" in str(caught.value)  # the URL is shown, its password hidden
    assert fake.requests == []
    assert_no_password(db.server.password, str(caught.value), caplog.text)


def run_cli(capsys: pytest.CaptureFixture[str], mapping: Path, state: Path) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(["sync", "--mapping", str(mapping), "--state", str(state)], stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_the_command_line_exits_6_and_3_and_never_prints_the_password(
    tmp_path: Path,
    db: Database,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB])
    password = db.server.password
    closed = make_url(db.url).set(port=free_loopback_port()).render_as_string(hide_password=False)
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        unreachable = write_mapping(
            tmp_path, audience, {**db.source("local"), "url": closed}, name="closed.json"
        )
        code, out, err = run_cli(capsys, unreachable, tmp_path / "state")
        assert code == 6 and "cannot reach the database" in err
        assert_no_password(password, out, err)

        broken = write_mapping(
            tmp_path,
            audience,
            {**db.source("in_database"), "query": f"select nope from {db.schema}.customers"},
            name="broken.json",
        )
        code, out, err = run_cli(capsys, broken, tmp_path / "state")
        assert code == 3 and "/source/query" in err
        assert_no_password(password, out, err)
        assert fake.requests == []

        working = write_mapping(tmp_path, audience, db.source("in_database"), name="ok.json")
        code, out, err = run_cli(capsys, working, tmp_path / "state")
        assert code == 0, err
        assert json.loads(out.splitlines()[-1])["delivered"] == 2
        assert_no_password(password, out, err)


def test_the_password_from_pgpassword_works_and_is_never_shown(
    tmp_path: Path,
    db: Database,
    place: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """libpq (under psycopg and SQLAlchemy) reads PGPASSWORD when the URL has none."""
    caplog.set_level(logging.DEBUG)
    password = db.server.password
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.setenv("PGPASSWORD", password)
    server = db.server
    bare = f"postgresql://{server.user}@{server.host}:{server.port}/{server.database}"
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB])
    mapping = write_mapping(tmp_path, audience, {**db.source(place), "url": bare})

    summary = sync(mapping, state=tmp_path / "state", backend=fake)
    assert summary["delivered"] == 2
    broken = write_mapping(
        tmp_path,
        audience,
        {**db.source(place), "url": bare, "query": "select"},
        name="broken.json",
    )
    with pytest.raises(MappingError) as caught:
        sync(broken, state=tmp_path / "state", backend=fake)
    assert_no_password(password, json.dumps(summary), str(caught.value), caplog.text)

    monkeypatch.setenv("PGPASSWORD", "wrong-" + password[:4])  # libpq really used it
    with pytest.raises(InputError, match="password authentication failed"):
        sync(mapping, state=tmp_path / "state", backend=fake)


def test_the_password_is_in_no_log_line_summary_or_state(
    tmp_path: Path, db: Database, place: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB, CAROL])
    mapping = write_mapping(tmp_path, audience, db.source(place))
    state = tmp_path / "state"
    summary = sync(mapping, state=state, backend=fake, environ=ENVIRON)
    db.write([ALICE, CAROL])
    second = sync(mapping, state=state, backend=fake, environ=ENVIRON)
    assert second["removed"] == 1

    password = db.server.password
    assert_no_password(password, json.dumps(summary), json.dumps(second), caplog.text)
    for path in state.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes()
    if place == "in_database":
        dumped = db.execute(f"select * from {db.state_schema}.{TABLE}")
        assert password not in repr(dumped)


# ------------------------------------------------------ the query's text, as written


def test_a_colon_word_in_the_query_is_text_not_a_parameter(
    tmp_path: Path, db: Database, place: str
) -> None:
    """``:name`` is how the sync's own statements take parameters; in the user's query it
    is SQL text (a literal here) that must reach the engine as written, on PostgreSQL and
    on DuckDB alike."""
    fake, audience = fake_with_audience()
    db.write([ALICE, BOB])
    db.execute(f"alter table {db.schema}.customers add column note text")
    db.execute(f"update {db.schema}.customers set note = 'tier :gold' where id = 1")
    query = (
        "select id, email, note from {table} where note = 'tier :gold' "
        "and email like '%@example.com'"
    )
    on_postgres = {**db.source(place), "query": query.format(table=f"{db.schema}.customers")}
    duck = tmp_path / "shop.duckdb"
    with duckdb.connect(str(duck)) as connection:
        connection.execute(
            "create table customers as select 1 as id, 'alice@example.com' as email, "
            "'tier :gold' as note"
        )
    on_duckdb = {
        "url": f"duckdb:///{duck}",
        "query": query.format(table="customers"),
        "primary_key": "id",
    }
    if place == "in_database":
        on_duckdb["state_schema"] = "tiktok_sync"

    for name, source in (("pg", on_postgres), ("duck", on_duckdb)):
        mapping = write_mapping(tmp_path, audience, source, name=f"{name}.json")
        run = sync(mapping, state=tmp_path / f"state-{name}", backend=fake)
        assert (run["added"], run["delivered"]) == (1, 1), name
    assert members(fake, audience) == {"EMAIL_SHA256": {sha("alice@example.com")}}


def test_a_second_sync_of_one_audience_against_the_database_state_is_refused(
    tmp_path: Path, db: Database
) -> None:
    """With the snapshot in PostgreSQL no state directory is locked: an advisory lock
    of the audience keeps two runs from interleaving their records."""
    fake, audience = fake_with_audience()
    db.write([ALICE])
    mapping = write_mapping(tmp_path, audience, db.source("in_database"))
    target = f"tiktok-audiences:tiktok:{ADVERTISER}:{audience}"
    with psycopg.connect(db.url, autocommit=True) as other:
        [(taken,)] = other.execute("select pg_try_advisory_lock(hashtext(%s))", [target])
        assert taken  # another run, in the middle
        with pytest.raises(ConfigurationError, match="another sync of this audience"):
            sync(mapping, state=None, backend=fake)
        assert fake.requests == []
    assert sync(mapping, state=None, backend=fake)["delivered"] == 1  # released with it
