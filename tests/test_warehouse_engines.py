"""Each engine's SQL templates against known digests, computed here with hashlib: MD5 as
lowercase hex text, keys joined by the unit separator, the fingerprint of a row's JSON
under the settings tag (a new tag changes it). DuckDB always; PostgreSQL on the test
server (skipped locally without one, failing in CI)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from destination.errors import ConfigurationError
from destination.warehouse.engines import (
    DuckDBEngine,
    Engine,
    PostgresEngine,
    QueryRefused,
    key_text,
    split_key,
)
from destination.warehouse.spec import read_spec

ROW = "select 7 as id, 'a@example.com' as email, 'x' as part"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def duckdb_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = DuckDBEngine(memory_limit="64MB", temp_directory=tmp_path)
    yield engine
    engine.close()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    spec = read_spec(
        {"url": postgres_url, "query": "select 1", "primary_key": "id"}, mapping="m.json"
    )
    engine = PostgresEngine(spec)
    yield engine
    engine.close()


@pytest.fixture(params=["duckdb", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    fixture = "duckdb_engine" if request.param == "duckdb" else "postgres_engine"
    found: Engine = request.getfixturevalue(fixture)
    return found


def test_md5_is_lowercase_hex_of_the_text(engine: Engine) -> None:
    sql = "select " + engine.dialect.md5.format("'a@example.com'")
    assert engine.rows(sql) == [(md5("a@example.com"),)]


def test_a_composite_key_joins_its_columns_as_text_with_the_unit_separator(engine: Engine) -> None:
    key = engine.dialect.key(["id", "part"])
    assert engine.rows(f"select {key} from ({ROW}) as q") == [("7\x1fx",)]
    assert engine.rows(f"select {engine.dialect.key(['id'])} from ({ROW}) as q") == [("7",)]


def test_the_fingerprint_is_md5_of_the_tag_and_the_rows_json(engine: Engine) -> None:
    [(pk, fp, row)] = engine.rows(engine.dialect.current(ROW, ["id"], "tag1"))
    assert pk == "7"
    assert json.loads(row) == {"id": 7, "email": "a@example.com", "part": "x"}
    assert fp == md5("tag1" + row)
    [(_, other, _)] = engine.rows(engine.dialect.current(ROW, ["id"], "tag2"))
    assert other != fp  # a setting that changes hashes changes every fingerprint


def test_a_refused_query_says_why_in_one_line(engine: Engine) -> None:
    with pytest.raises(QueryRefused) as caught:
        engine.columns("select nope from nowhere_at_all")
    assert "nowhere_at_all" in str(caught.value) and "\n" not in str(caught.value)


def test_duckdb_running_out_of_memory_is_a_limit_not_a_bad_query(tmp_path: Path) -> None:
    engine = DuckDBEngine(memory_limit="8MB", temp_directory=tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="DuckDB ran out of memory") as caught:
            engine.rows("select list(range) from range(5000000)")
        assert str(tmp_path) in str(caught.value)
    finally:
        engine.close()


AWKWARD = [("x\x1fy", "z"), ("x", "y\x1fz"), ("a\\", "b"), ("a", "\\b"), ("\\\x1f", "")]


@pytest.mark.parametrize("values", AWKWARD)
def test_a_composite_key_is_escaped_so_no_two_keys_read_alike(
    engine: Engine, values: tuple[str, str]
) -> None:
    row = "select " + ", ".join(
        f"{_string(engine, v)} as {name}" for v, name in zip(values, ("a", "b"), strict=True)
    )
    [(pk,)] = engine.rows(f"select {engine.dialect.key(['a', 'b'])} from ({row}) as q")
    assert pk == key_text(values)  # the engine's template and Python's agree
    assert split_key(pk, 2) == list(values)


def test_python_keys_of_different_rows_differ() -> None:
    assert len({key_text(v) for v in AWKWARD}) == len(AWKWARD)
    assert key_text([7]) == "7" and split_key("x\x1fy", 1) == ["x\x1fy"]


def _string(engine: Engine, text: str) -> str:
    """A SQL text of ``text`` built from character codes (no literal escapes to get
    wrong): the engine's own char function."""
    if not text:
        return "''"
    return " || ".join(engine.dialect.char.format(ord(ch)) for ch in text)
