"""An engine without tested templates, through its SQLAlchemy dialect alone: SQLite (in
Python's standard library) stands for Trino, Snowflake and the rest. Only ``select *``
runs there; keys, fingerprints and JSON are made in Python and diffed in DuckDB."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from destination.errors import MappingError
from tests.warehouse_support import fake_with_audience, members, sha, sync, write_mapping


def write_sqlite(path: Path, rows: Iterable[tuple[Any, ...]]) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("drop table if exists people")
        connection.execute(
            "create table people (region text, num integer, email text, score numeric)"
        )
        connection.executemany("insert into people values (?, ?, ?, ?)", list(rows))


def source(db: Path, **extra: object) -> dict[str, object]:
    return {
        "url": f"sqlite:///{db}",
        "query": "select region, num, email, score from people",
        "primary_key": ["region", "num"],
        **extra,
    }


def test_a_sqlalchemy_engine_mirrors_with_a_composite_key(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "people.sqlite"
    write_sqlite(db, [("eu", 1, "a@example.com", 1.5), ("us", 1, "b@example.com", 2)])
    mapping = write_mapping(tmp_path, audience, source(db))
    state = tmp_path / "state"

    first = sync(mapping, state=state, backend=fake)
    assert first["added"] == 2 and first["delivered"] == 2
    assert first["source"]["samples"] == {"added": ["eu\x1f1", "us\x1f1"]}

    write_sqlite(db, [("eu", 1, "a@example.com", 9), ("us", 2, "c@example.com", 2)])
    second = sync(mapping, state=state, backend=fake)
    # a changed score is a changed row: its identifiers are sent again (removed, added)
    assert (second["added"], second["removed"], second["changed"]) == (1, 1, 1)
    assert members(fake, audience) == {"EMAIL_SHA256": {sha("a@example.com"), sha("c@example.com")}}
    assert sync(mapping, state=state, backend=fake)["received"] == 0


def test_null_and_duplicate_keys_stop_before_any_call(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "people.sqlite"
    write_sqlite(db, [("eu", None, "a@example.com", 1)])
    mapping = write_mapping(tmp_path, audience, source(db))
    with pytest.raises(MappingError, match="1 rows have none"):
        sync(mapping, state=tmp_path / "state", backend=fake)

    write_sqlite(db, [("eu", 1, "a@example.com", 1), ("eu", 1, "b@example.com", 2)])
    with pytest.raises(MappingError, match=r"duplicated: region=eu, num=1 \(2 rows\)") as caught:
        sync(mapping, state=tmp_path / "state", backend=fake)
    assert caught.value.pointer == "/source/primary_key"
    assert fake.requests == []


def test_state_in_the_database_is_refused_where_the_templates_are_untested(
    tmp_path: Path,
) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "people.sqlite"
    write_sqlite(db, [])
    mapping = write_mapping(tmp_path, audience, source(db, state_schema="sync"))
    with pytest.raises(MappingError, match="no state_schema on sqlite") as caught:
        sync(mapping, state=None, backend=fake)
    assert caught.value.pointer == "/source/state_schema"


def test_composite_keys_holding_the_separator_are_two_rows_not_a_duplicate(
    tmp_path: Path,
) -> None:
    """('x<US>y', 'z') and ('x', 'y<US>z') are different people: their keys are escaped,
    in DuckDB's SQL and in Python alike (SQLite's rows are keyed in Python)."""
    fake, audience = fake_with_audience()
    rows = [("x\x1fy", "z", "a@example.com"), ("x", "y\x1fz", "b@example.com")]
    for engine in ("duckdb", "sqlite"):
        db = tmp_path / f"people.{engine}"
        if engine == "duckdb":
            with duckdb.connect(str(db)) as connection:
                connection.execute("create table people (a varchar, b varchar, email varchar)")
                connection.executemany("insert into people values (?, ?, ?)", rows)
        else:
            with sqlite3.connect(db) as connection:
                connection.execute("create table people (a text, b text, email text)")
                connection.executemany("insert into people values (?, ?, ?)", rows)
        mapping = write_mapping(
            tmp_path,
            audience,
            {"url": f"{engine}:///{db}", "table": "people", "primary_key": ["a", "b"]},
            name=f"{engine}.json",
        )
        run = sync(mapping, state=tmp_path / f"state-{engine}", backend=fake)
        assert run["added"] == 2 and run["delivered"] == 2, engine
        assert sync(mapping, state=tmp_path / f"state-{engine}", backend=fake)["unchanged"] == 2
