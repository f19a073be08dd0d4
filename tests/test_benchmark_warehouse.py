"""The warehouse benchmark (``benchmarks/warehouse.py``) runs at a tiny size, and the
snapshot it builds in SQL is the one a real first sync records (no timings asserted)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks import warehouse
from destination.warehouse.snapshot import TABLE
from destination.warehouse.source import STATE_FILE
from tests.postgres_server import skip_or_fail, unavailable_reason
from tests.warehouse_support import sync


def snapshot_rows(state: Path) -> list[tuple[str, str, str, str]]:
    with duckdb.connect(str(state / STATE_FILE), read_only=True) as connection:
        return connection.execute(f"select * from {TABLE} order by pk").fetchall()


def test_the_sql_snapshot_is_what_a_real_first_sync_records(tmp_path: Path) -> None:
    source = tmp_path / "customers.duckdb"
    warehouse.duckdb_customers(source, 40)
    mapping = warehouse.write_mapping(tmp_path, f"duckdb:///{source}", "m.json", in_database=False)
    fake, audience = warehouse._accepting_backend()
    assert audience == warehouse.audience_id()
    real = sync(mapping, state=tmp_path / "real", backend=fake, environ=warehouse.ENVIRON)
    assert (real["added"], real["delivered"], real["rejected"]) == (40, 40, 0)

    assert warehouse.sql_snapshot(mapping, tmp_path / "sql", source) == 40
    built = snapshot_rows(tmp_path / "sql")
    assert len(built) == 40
    assert built == snapshot_rows(tmp_path / "real")


def test_the_churn_changes_removes_and_adds_what_it_says(tmp_path: Path) -> None:
    source = tmp_path / "customers.duckdb"
    warehouse.duckdb_customers(source, 400)
    done = warehouse.duckdb_churn(source, 400, 0.05)
    assert done == warehouse.Churn(changed=10, removed=5, added=5)  # 5% of 400 rows
    with duckdb.connect(str(source), read_only=True) as connection:
        assert connection.execute("select count(*) from customers").fetchone() == (400,)
        moved = connection.execute(
            "select count(*) from customers where email like 'moved%'"
        ).fetchone()
        assert moved == (10,)


@pytest.mark.parametrize("first_sync", ["sql", "real"])
def test_the_benchmark_runs_at_a_tiny_size_and_its_counts_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first_sync: str
) -> None:
    code = warehouse.main(
        [
            "--duckdb-rows",
            "800",
            "--postgres-rows",
            "0",
            "--duckdb-first-sync",
            first_sync,
            "--work",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PROBLEM" not in out
    table = [line for line in out.splitlines() if line.startswith("| duckdb |")]
    runs = [line.split(" | ")[3] for line in table]
    expected = ["first, dry", "rerun, dry", "rerun"]
    if first_sync == "real":
        expected.insert(1, "first")
    assert runs == expected
    # the 1% churn of 800 rows: 4 changed, 2 removed, 2 added, checked by the run itself
    assert table[-1].endswith("| 2 | 2 | 4 |")
    assert not (tmp_path / "customers.duckdb").exists()  # the large files are removed


def test_the_postgres_part_runs_at_a_tiny_size_with_both_state_places(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    code = warehouse.main(["--duckdb-rows", "0", "--postgres-rows", "400", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    table = [line for line in out.splitlines() if line.startswith("| postgresql |")]
    places = [tuple(line.split(" | ")[2:4]) for line in table]
    assert places == [
        ("local", "first, dry"),
        ("local", "first"),
        ("in database", "first, dry"),
        ("in database", "first"),
        ("local", "rerun, dry"),
        ("local", "rerun"),
        ("in database", "rerun, dry"),
        ("in database", "rerun"),
    ]
    # 1% of 400 rows: 2 changed, 1 removed, 1 added, in each place
    assert all(line.endswith("| 1 | 1 | 2 |") for line in table[4:])
