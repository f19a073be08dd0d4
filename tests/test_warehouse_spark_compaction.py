"""Compaction of the Spark engine's snapshot log (``SparkEngine.compact_snapshot``).

The snapshot with ``state_schema`` is an append-only Parquet log; a real run rewrites it
as each key's latest live entry before its diff when it has grown. What must hold: the
snapshot reads the same before, after, and at every step a killed run can stop at.

One Spark runs for the whole file, as in ``test_warehouse_spark.py`` (skipped with the
reason without pyspark or Java, failed then when ``REQUIRE_SPARK=1``); each test keeps
its tables under a schema of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from destination.errors import OutputError
from destination.warehouse import snapshot
from destination.warehouse.engines import Recorded
from tests.spark_support import (
    spark_engine,  # noqa: F401 (the fixture engine)
    spark_warehouse,  # noqa: F401 (the fixture warehouse)
    spec_for,
    write_table,
)
from tests.warehouse_support import fake_with_audience, sync, write_mapping

Entry = tuple[str, str, str, str | None, int, bool]  # target, pk, fp, replay, version, gone


def churned(engine: Any, schema: str) -> str:
    """A snapshot log of two targets after many records: keys put, changed, dropped, put
    again, and keys whose latest entry is a drop (older puts of theirs in older files)."""
    table = f"{schema}.{snapshot.TABLE}"
    engine.create_snapshot(table)
    engine.record(table, "t1", [], [Recorded(k, "f1", f'{{"k":"{k}"}}') for k in "abcdef"])
    engine.record(table, "t2", [], [Recorded(k, "g1", None) for k in "abc"])
    engine.record(table, "t1", ["a", "b"], [Recorded("a", "f2", '{"k":"a2"}')])  # b gone
    engine.record(table, "t1", ["c"], [])  # c gone
    engine.record(table, "t2", ["a"], [Recorded("d", "g1", None)])
    engine.record(table, "t1", ["d"], [Recorded("d", "f3", "{}"), Recorded("b", "f3", "{}")])
    engine.record(table, "t1", ["e"], [Recorded("g", "f1", "{}")])  # e gone, g new
    engine.record(table, "t2", ["b"], [Recorded("b", "g2", None)])
    engine.record(table, "t1", ["f"], [])  # f gone, last
    return table


def entries(engine: Any, table: str) -> list[Entry]:
    rows = engine.rows(f"select target, pk, fp, replay, version, gone from {table}")
    return sorted((t, p, f, r, int(v), bool(g)) for t, p, f, r, v, g in rows)


def latest_live(log: Sequence[Entry]) -> list[Entry]:
    """What compaction must leave: each (target, key)'s latest entry, unless a drop."""
    latest: dict[tuple[str, str], Entry] = {}
    for entry in sorted(log, key=lambda e: e[4]):
        latest[entry[0], entry[1]] = entry
    return sorted(e for e in latest.values() if not e[5])


def held(engine: Any, table: str) -> dict[str, list[tuple[str, str, str | None]]]:
    select = engine.snapshot_select(table)
    return {t: sorted(engine.rows(select, {"target": t})) for t in ("t1", "t2")}


def parquet_files(warehouse: Path, table: str) -> list[str]:
    return sorted(p.name for p in warehouse.joinpath(*table.split(".")).glob("*.parquet"))


def test_compaction_keeps_each_keys_latest_live_entry_and_later_records_win(
    engine: Any, warehouse: Path
) -> None:
    table = churned(engine, "compact_kept")
    log, before, files = (
        entries(engine, table),
        held(engine, table),
        parquet_files(warehouse, table),
    )
    assert [pk for pk, _, _ in before["t1"]] == ["a", "b", "d", "g"]

    assert engine.compact_snapshot(table) is True
    assert entries(engine, table) == latest_live(log)  # every target's, versions kept
    assert held(engine, table) == before
    assert len(parquet_files(warehouse, table)) < len(files)
    assert not warehouse.joinpath(*table.split("."), "_compacted").exists()  # nor staged
    assert engine.compact_snapshot(table) is False  # one entry a key, few files: as it is

    # the next run numbers its records after the compacted entries (the last entry, f's
    # drop, is gone: versions start again from the last live one)
    engine.execute(f"drop table {table}")  # the catalog forgets it, as a new process has it
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    reopened = SparkEngine(spec_for(warehouse))
    try:
        put = [Recorded("a", "f9", "{}"), Recorded("f", "f9", "{}")]
        reopened.record(table, "t1", ["a", "g"], put)
        after = held(reopened, table)
    finally:
        reopened.close()
    assert after["t1"] == [
        ("a", "f9", "{}"),  # put again after its compacted entry
        ("b", "f3", "{}"),
        ("d", "f3", "{}"),
        ("f", "f9", "{}"),  # dropped before the compaction, put after
    ]
    assert after["t2"] == before["t2"]


def test_compaction_waits_for_the_log_to_grow(
    engine: Any, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from destination.warehouse import spark  # noqa: PLC0415

    table = f"compact_rule.{snapshot.TABLE}"
    engine.create_snapshot(table)
    assert engine.compact_snapshot(table) is False  # empty
    engine.record(table, "t1", [], [Recorded(k, "f", "{}") for k in "abc"])
    engine.record(table, "t1", ["a"], [Recorded("a", "f2", "{}")])  # 5 entries, 3 live
    files = parquet_files(warehouse, table)
    assert engine.compact_snapshot(table) is False
    assert parquet_files(warehouse, table) == files

    engine.record(table, "t1", ["b"], [])  # 6 entries, 2 live: more than twice
    assert engine.compact_snapshot(table) is True
    assert len(entries(engine, table)) == 2

    monkeypatch.setattr(spark, "COMPACT_FILES", 2)
    engine.record(table, "t1", [], [Recorded("x", "f", "{}")])  # 3 entries, 3 live...
    engine.record(table, "t1", [], [Recorded("y", "f", "{}")])
    assert len(parquet_files(warehouse, table)) > 2  # ...in more files than the limit
    assert engine.compact_snapshot(table) is True
    assert len(parquet_files(warehouse, table)) <= 2


def test_a_failed_switch_leaves_the_old_snapshot_and_a_later_run_compacts(
    engine: Any, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from destination.warehouse import spark  # noqa: PLC0415

    table = churned(engine, "compact_failed")
    log, before, files = (
        entries(engine, table),
        held(engine, table),
        parquet_files(warehouse, table),
    )

    def full(staging: Path, folder: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spark, "_move_in", full)
    with pytest.raises(OutputError, match="No space left on device"):
        engine.compact_snapshot(table)
    folder = warehouse.joinpath(*table.split("."))
    assert any((folder / "_compacted").glob("*.parquet"))  # written, never switched to
    engine.execute(f"refresh table {table}")
    assert entries(engine, table) == log  # the written folder is not read
    assert held(engine, table) == before
    assert parquet_files(warehouse, table) == files

    monkeypatch.undo()
    assert engine.compact_snapshot(table) is True  # the next run
    assert entries(engine, table) == latest_live(log)
    assert held(engine, table) == before
    assert not (folder / "_compacted").exists()


def test_every_step_of_removing_the_old_files_reads_the_same_snapshot(
    engine: Any, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed while the old files go (oldest first) leaves a log that reads the same:
    a key dropped last is never left with only its older puts."""
    from destination.warehouse import spark  # noqa: PLC0415

    table = churned(engine, "compact_steps")
    log, before = entries(engine, table), held(engine, table)
    files = parquet_files(warehouse, table)
    remove = spark._remove
    seen: list[dict[str, list[tuple[str, str, str | None]]]] = []

    def one_by_one(folder: Path, names: Sequence[str]) -> None:
        for name in names:
            remove(folder, [name])
            engine.execute(f"refresh table {table}")
            seen.append(held(engine, table))

    monkeypatch.setattr(spark, "_remove", one_by_one)
    assert engine.compact_snapshot(table) is True
    assert len(seen) == len(files)  # each step seen
    assert all(step == before for step in seen)
    assert entries(engine, table) == latest_live(log)


def test_only_a_real_run_compacts(warehouse: Path, tmp_path: Path) -> None:
    schema = "compact_sync"
    write_table(warehouse / schema / "customers", [(1, "a@example.com", None)])
    fake, audience = fake_with_audience()
    source = {
        "url": f"spark://local[2]?warehouse={warehouse}",
        "query": f"select id, email, phone from {schema}.customers",
        "primary_key": "id",
        "state_schema": f"{schema}_state",
    }
    mapping = write_mapping(tmp_path, audience, source)
    assert sync(mapping, state=None, backend=fake)["added"] == 1

    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    table = f"{schema}_state.{snapshot.TABLE}"
    engine = SparkEngine(spec_for(warehouse))
    try:  # another audience's churn in the same log
        for n in range(3):
            engine.record(table, "other", [f"k{n}"], [Recorded(f"k{n + 1}", "f", "{}")])
        log = entries(engine, table)
    finally:
        engine.close()
    files = parquet_files(warehouse, table)

    dry = sync(mapping, state=None, backend=fake, dry_run=True)
    assert dry["unchanged"] == 1
    assert parquet_files(warehouse, table) == files

    real = sync(mapping, state=None, backend=fake)
    assert real["unchanged"] == 1
    assert len(parquet_files(warehouse, table)) < len(files)
    engine = SparkEngine(spec_for(warehouse))
    try:
        assert entries(engine, table) == latest_live(log)
    finally:
        engine.close()
