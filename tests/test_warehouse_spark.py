"""The Spark SQL engine (``destination.warehouse.spark``) on a real Spark in local mode.

One Spark runs for the whole file (started by the first engine, seconds). Every test's
tables live in the session's warehouse folder under a schema of its own: Spark's
catalog is shared by the engines of one process, and a schema already known keeps its
folder. Skipped with the reason without pyspark or Java, failed then when
``REQUIRE_SPARK=1`` (``.ci/run``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from destination.errors import InputError, MappingError
from destination.warehouse import snapshot
from destination.warehouse.engines import QueryRefused, Recorded, key_text, split_key
from destination.warehouse.spec import read_spec
from tests.spark_support import (
    spark_engine,  # noqa: F401 (the fixture engine)
    spark_warehouse,  # noqa: F401 (the fixture warehouse)
    spec_for,
    write_table,
)
from tests.warehouse_support import fake_with_audience, members, sha, sync, write_mapping

SNAPSHOT = f"state.{snapshot.TABLE}"


def test_templates_give_known_digests_keys_and_json(engine: Any) -> None:
    dialect = engine.dialect
    rows = engine.rows(
        f"select {dialect.md5.format('q.email')}, {dialect.key(['id', 'email'])}, "
        f"{dialect.key(['id'])}, {dialect.row_json} "
        "from (select 7 as id, 'a@example.com' as email, cast(null as string) as phone) as q"
    )
    digest, composite, single, row = rows[0]
    assert digest == hashlib.md5(b"a@example.com").hexdigest()  # lowercase hex
    assert composite == "7\x1fa@example.com"
    assert single == "7"
    assert json.loads(row) == {"id": 7, "email": "a@example.com", "phone": None}

    current = dialect.current("select 7 as id, 'a@example.com' as email", ["id"], "tag1")
    pk, fp, row = engine.rows(current)[0]
    assert pk == "7"
    assert fp == hashlib.md5(("tag1" + row).encode()).hexdigest()


def test_parameters_are_bound_not_spliced(engine: Any) -> None:
    assert engine.rows("select :text, :n + 1", {"text": "it's \\ 'quoted'", "n": 41}) == [
        ("it's \\ 'quoted'", 42)
    ]


def test_columns_and_refused_queries(engine: Any, warehouse: Path) -> None:
    assert engine.columns("select 1 as id, 'x' as email") == ["id", "email"]
    with pytest.raises(QueryRefused) as missing:
        engine.columns("select nope from nowhere")
    assert str(missing.value).startswith("[TABLE_OR_VIEW_NOT_FOUND]")
    assert "\n" not in str(missing.value)
    with pytest.raises(QueryRefused) as syntax:
        engine.rows("selec 1")
    assert str(syntax.value).startswith("[PARSE_SYNTAX_ERROR]")
    with pytest.raises(QueryRefused, match="CAST_INVALID_INPUT"):
        engine.rows("select cast(email as int) from (select 'abc' as email)")


def test_urls_name_local_mode_and_the_warehouse(tmp_path: Path) -> None:
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415 (before Spark starts)

    with pytest.raises(MappingError, match="warehouse=DIR"):
        SparkEngine(
            read_spec({"url": "spark://local[2]", "table": "t", "primary_key": "id"}, mapping="m")
        )
    with pytest.raises(MappingError, match="local mode"):
        SparkEngine(spec_for(tmp_path, url=f"spark://10.0.0.1:7077?warehouse={tmp_path}"))
    with pytest.raises(InputError, match="does not exist"):
        SparkEngine(spec_for(tmp_path / "missing"))


def test_no_java_is_an_input_error(tmp_path: Path) -> None:
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    script = (
        "from destination.warehouse.spark import SparkEngine\n"
        "from destination.warehouse.spec import read_spec\n"
        "from destination.errors import InputError\n"
        f"spec = read_spec({{'url': 'spark://local?warehouse={tmp_path}', 'table': 't', "
        "'primary_key': 'id'}, mapping='m')\n"
        "try:\n    SparkEngine(spec)\nexcept InputError as e:\n    print('InputError:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "JAVA_HOME": str(tmp_path / "no-java")},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert done.stdout.startswith("InputError: cannot start Spark for spark://local"), done.stderr
    assert "Java 17" in done.stdout


def test_snapshot_log_latest_entry_wins_and_dropped_keys_are_gone(engine: Any) -> None:
    table = "snap_round_trip.tiktok_audiences_snapshot"
    engine.create_snapshot(table)
    engine.create_snapshot(table)  # again: nothing changes
    select = engine.snapshot_select(table)
    assert engine.rows(select, {"target": "t1"}) == []

    engine.record(table, "t1", [], [Recorded("a", "fa1", '{"x":1}'), Recorded("b", "fb1", "{}")])
    engine.record(table, "t2", [], [Recorded("a", "other", "{}")])  # another audience
    engine.record(
        table,
        "t1",
        ["b", "a"],  # b leaves; a leaves and comes back changed in the same call
        [Recorded("a", "fa2", '{"x":2}'), Recorded("c", "fc1", "{}")],
    )
    held = {pk: (fp, replay) for pk, fp, replay in engine.rows(select, {"target": "t1"})}
    assert held == {"a": ("fa2", '{"x":2}'), "c": ("fc1", "{}")}
    assert engine.rows(select, {"target": "t2"}) == [("a", "other", "{}")]

    engine.record(table, "t1", ["c"], [Recorded("b", "fb2", "{}")])  # b back, c gone
    assert sorted(engine.rows(select, {"target": "t1"})) == [
        ("a", "fa2", '{"x":2}'),
        ("b", "fb2", "{}"),
    ]


def test_snapshot_persists_as_parquet_files_for_the_next_process(
    engine: Any, warehouse: Path
) -> None:
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    table = "snap_persisted.tiktok_audiences_snapshot"
    engine.create_snapshot(table)
    engine.record(table, "t1", [], [Recorded("a", "fa", "{}"), Recorded("b", "fb", "{}")])
    engine.record(table, "t1", ["a"], [])
    engine.execute(f"drop table {table}")  # the catalog forgets it, as a new process has it
    engine.close()

    assert any((warehouse / "snap_persisted" / snapshot.TABLE).glob("*.parquet"))
    reopened = SparkEngine(spec_for(warehouse))  # registers the folder's tables again
    try:
        assert reopened.rows(reopened.snapshot_select(table), {"target": "t1"}) == [
            ("b", "fb", "{}")
        ]
        reopened.record(table, "t1", [], [Recorded("a", "fa2", "{}")])  # numbered after
        assert sorted(reopened.rows(reopened.snapshot_select(table), {"target": "t1"})) == [
            ("a", "fa2", "{}"),
            ("b", "fb", "{}"),
        ]
    finally:
        reopened.close()


def diff_run(
    warehouse: Path, schema: str, tag: str = "tag"
) -> tuple[snapshot.Plan, dict[str, str]]:
    """One diff of ``schema.customers`` against ``schema``'s snapshot, in a new engine,
    recording every change as accepted; the plan and each changed key's kind."""
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    engine = SparkEngine(spec_for(warehouse))
    try:
        table = f"{schema}.{snapshot.TABLE}"
        engine.create_snapshot(table)
        current = engine.dialect.current(f"select * from {schema}.customers", ["id"], tag)
        plan = snapshot.diff(
            engine,
            current=current,
            snapshot=engine.snapshot_select(table),
            removals=True,
            params={"target": "t1"},
        )
        kinds = ["removed", "changed", "added"]
        changes = list(snapshot.read_changes(engine, kinds, snapshot=None, params={}, size=2))
        drop = [c.pk for c in changes if c.kind == "removed"]
        put = [Recorded(c.pk, c.fp, "{}") for c in changes if c.kind != "removed"]
        engine.record(table, "t1", drop, put)
        # the run's changes stay as computed while the snapshot changes under them
        again = snapshot.read_changes(engine, kinds, snapshot=None, params={}, size=2)
        assert list(again) == changes
        return plan, {c.pk: c.kind for c in changes}
    finally:
        engine.close()


def test_diff_in_spark_finds_exactly_the_added_removed_and_changed_rows(warehouse: Path) -> None:
    customers = warehouse / "diff_shop" / "customers"
    write_table(
        customers, [(1, "a@example.com", None), (2, "b@example.com", None), (3, None, "+1")]
    )

    first, kinds = diff_run(warehouse, "diff_shop")
    assert (first.added, first.removed, first.changed, first.unchanged) == (3, 0, 0, 0)
    assert kinds == {"1": "added", "2": "added", "3": "added"}

    write_table(
        customers, [(1, "a@new.example.com", None), (3, None, "+1"), (4, "d@example.com", None)]
    )
    second, kinds = diff_run(warehouse, "diff_shop")
    assert (second.added, second.removed, second.changed, second.unchanged, second.held) == (
        1,
        1,
        1,
        1,
        3,
    )
    assert kinds == {"1": "changed", "2": "removed", "4": "added"}
    assert second.samples == {"added": ["4"], "removed": ["2"], "changed": ["1"]}

    third, kinds = diff_run(warehouse, "diff_shop")
    assert (third.added, third.removed, third.changed, third.unchanged) == (0, 0, 0, 3)
    assert kinds == {}
    third, kinds = diff_run(warehouse, "diff_shop", tag="new settings")  # every row again
    assert third.changed == 3


def test_stream_reads_a_query_row_by_row(engine: Any) -> None:
    rows = list(engine.stream("select id from range(5) order by id desc", size=2))
    assert [tuple(r) for r in rows] == [(4,), (3,), (2,), (1,), (0,)]


CUSTOMERS = [
    (1, "alice@example.com", "+14155550101"),
    (2, "bob@example.com", None),
    (3, None, "+14155550103"),
]


@pytest.mark.parametrize("place", ["in_spark", "local"])
def test_sync_from_spark_twice_sends_only_the_change(
    warehouse: Path, tmp_path: Path, place: str
) -> None:
    schema = f"sync_{place}"
    customers = warehouse / schema / "customers"
    write_table(customers, CUSTOMERS)
    fake, audience = fake_with_audience()
    source: dict[str, Any] = {
        "url": f"spark://local[2]?warehouse={warehouse}",
        "query": f"select id, email, phone from {schema}.customers",
        "primary_key": "id",
    }
    if place == "in_spark":
        source["state_schema"] = f"{schema}_state"
    mapping = write_mapping(tmp_path, audience, source)
    state = None if place == "in_spark" else tmp_path / "state"

    first = sync(mapping, state=state, backend=fake)
    assert (first["added"], first["removed"], first["changed"]) == (3, 0, 0)
    assert first["source"]["engine"] == "spark"
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@example.com"), sha("bob@example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
    }

    write_table(customers, [(1, "alice@new.example.com", "+14155550101"), CUSTOMERS[2]])
    second = sync(mapping, state=state, backend=fake)
    assert (second["added"], second["removed"], second["changed"], second["unchanged"]) == (
        0,
        1,
        1,
        1,
    )
    assert members(fake, audience) == {
        "EMAIL_SHA256": {sha("alice@new.example.com")},
        "PHONE_SHA256": {sha("+14155550101"), sha("+14155550103")},
    }
    if place == "in_spark":
        assert any((warehouse / f"{schema}_state" / snapshot.TABLE).glob("*.parquet"))


def test_composite_keys_are_escaped_as_python_escapes_them(engine: Any) -> None:
    awkward = [("x\x1fy", "z"), ("x", "y\x1fz"), ("a\\", "b"), ("\\\x1f", "")]
    char = engine.dialect.char
    for values in awkward:
        texts = [
            " || ".join(char.format(ord(ch)) for ch in value) if value else "''" for value in values
        ]
        row = f"select {texts[0]} as a, {texts[1]} as b"
        [(pk,)] = engine.rows(f"select {engine.dialect.key(['a', 'b'])} from ({row}) as q")
        assert pk == key_text(values) and split_key(pk, 2) == list(values)
