"""The warehouse sync from the command line: flags, exit codes, the summary line, the
plan of a dry run, progress, the template, and the demo's warehouse part."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from destination.cli import main
from destination.demo import run_demo
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.runner.meter import LogLines
from destination.runner.sync import SyncOptions, run_sync
from tests.warehouse_support import (
    ENVIRON,
    TOKEN,
    fake_with_audience,
    members,
    sha,
    write_customers,
    write_mapping,
)

ROOT = Path(__file__).resolve().parent.parent
ROWS = [(i, f"user{i}@example.com", None, None, None) for i in range(1, 8)]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTikTok, str]]:
    fake, audience = fake_with_audience()
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        yield fake, audience


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, dict[str, object], str]:
    out = io.StringIO()
    code = main([str(a) for a in argv], stdout=out)
    err = capsys.readouterr().err
    lines = out.getvalue().splitlines()
    assert TOKEN not in out.getvalue() and TOKEN not in err
    return code, (json.loads(lines[-1]) if lines else {}), err


def mapping_on(tmp_path: Path, audience: str, **source: object) -> Path:
    db = tmp_path / "shop.duckdb"
    if not db.exists():
        write_customers(db, ROWS)
    return write_mapping(
        tmp_path,
        audience,
        {
            "url": f"duckdb:///{db}",
            "query": "select id, email, phone, advertising_id, device_type from customers",
            "primary_key": "id",
            **source,
        },
    )


def test_sync_runs_a_source_without_events_and_sums_up_in_the_last_line(
    served: tuple[FakeTikTok, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, audience = served
    mapping = mapping_on(tmp_path, audience)
    code, summary, err = cli(capsys, "sync", "--mapping", mapping, "--state", tmp_path / "s")

    assert code == 0
    assert (summary["added"], summary["removed"], summary["changed"]) == (7, 0, 0)
    assert summary["source"]["engine"] == "duckdb"  # type: ignore[index]
    assert "rows: 7 added, 0 removed, 0 changed, 0 unchanged" in err
    assert len(members(fake, audience)["EMAIL_SHA256"]) == 7


def test_a_dry_run_prints_the_plan_with_a_few_keys_and_sends_nothing(
    served: tuple[FakeTikTok, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, audience = served
    mapping = mapping_on(tmp_path, audience)
    code, summary, err = cli(
        capsys, "sync", "--mapping", mapping, "--state", tmp_path / "s", "--dry-run"
    )
    assert code == 0 and summary["dry_run"] is True and summary["added"] == 7
    assert "added: 1, 2, 3, 4, 5 ..." in err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--events", "x.ndjson"], "leave --events out"),
        (["--retry-file", "retry.ndjson"], "--retry-file"),
        ([], "give --state"),
    ],
)
def test_flags_a_source_does_not_take_exit_2(
    served: tuple[FakeTikTok, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    fake, audience = served
    mapping = mapping_on(tmp_path, audience)
    state = [] if message == "give --state" else ["--state", str(tmp_path / "s")]
    code, _, err = cli(capsys, "sync", "--mapping", mapping, *state, *argv)
    assert code == 2 and message in err
    assert fake.requests == []


def test_an_events_mapping_file_still_needs_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "sync", "--mapping", ROOT / "mappings" / "segment-legacy.json")
    assert code == 2 and "--events is required" in err


def test_a_bad_query_exits_3_naming_the_pointer_and_an_unreachable_database_exits_6(
    served: tuple[FakeTikTok, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, audience = served
    mapping = mapping_on(tmp_path, audience, query="select id, emial from customers")
    code, _, err = cli(capsys, "sync", "--mapping", mapping, "--state", tmp_path / "s")
    assert code == 3 and "/source/query" in err and "emial" in err

    missing = write_mapping(
        tmp_path,
        audience,
        {"url": f"duckdb:///{tmp_path / 'nowhere.duckdb'}", "table": "t", "primary_key": "id"},
        name="missing.json",
    )
    code, _, err = cli(capsys, "sync", "--mapping", missing, "--state", tmp_path / "s")
    assert code == 6 and "does not exist" in err
    assert fake.requests == []


def test_a_mass_removal_exits_2_naming_the_flag_then_goes_with_it(
    served: tuple[FakeTikTok, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, audience = served
    mapping = mapping_on(tmp_path, audience)
    state = tmp_path / "s"
    assert cli(capsys, "sync", "--mapping", mapping, "--state", state)[0] == 0
    write_customers(tmp_path / "shop.duckdb", ROWS[:2])  # 5 of 7 rows leave
    before = len(fake.requests)

    code, _, err = cli(capsys, "sync", "--mapping", mapping, "--state", state)
    assert code == 2 and "--allow-mass-removal" in err and "5 of the 7" in err
    assert len(fake.requests) == before

    code, summary, _ = cli(
        capsys, "sync", "--mapping", mapping, "--state", state, "--allow-mass-removal"
    )
    assert code == 0 and summary["removed"] == 5
    assert members(fake, audience)["EMAIL_SHA256"] == {sha(f"user{i}@example.com") for i in (1, 2)}


def test_progress_counts_the_changes_of_the_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, audience = fake_with_audience()
    mapping = mapping_on(tmp_path, audience)
    caplog.set_level(logging.INFO, logger="destination.runner.meter")
    run_sync(
        SyncOptions(
            mapping=mapping,
            events=None,
            state=tmp_path / "s",
            progress=LogLines(),
            progress_interval=60,
        ),
        environ=ENVIRON,
        backend=fake,
    )
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    assert line.startswith("progress: 100% read, 7 events finished")


def test_mapping_template_prints_a_warehouse_file_that_reads_the_field_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    assert main(["mapping-template", "--mode", "warehouse"], stdout=out) == 0
    document = json.loads(out.getvalue())
    assert document["mode"] == "legacy" and document["source"]["sync_mode"] == "mirror"
    actions = [s["action"] for s in document["subscriptions"]]
    assert actions == ["addUser", "removeUser"]
    assert document["subscriptions"][0]["mapping"]["email"] == {"@path": "$.email"}


def test_own_subscriptions_map_other_columns(tmp_path: Path) -> None:
    fake, audience = fake_with_audience()
    db = tmp_path / "crm.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute("create table people (pid varchar, mail varchar)")
        connection.execute("insert into people values ('a', 'Ann@Example.com')")
    mapping = write_mapping(
        tmp_path,
        audience,
        {"url": f"duckdb:///{db}", "table": "people", "primary_key": "pid"},
        subscriptions=[
            {
                "name": "add",
                "action": "addUser",
                "subscribe": 'event = "Row Added"',
                "mapping": {"email": {"@path": "$.mail"}},
            }
        ],
    )
    summary = run_sync(
        SyncOptions(mapping=mapping, events=None, state=tmp_path / "s"),
        environ=ENVIRON,
        backend=fake,
    )
    assert summary["delivered"] == 1
    assert members(fake, audience) == {"EMAIL_SHA256": {sha("ann@example.com")}}


def test_the_shipped_warehouse_mapping_file_runs_on_the_demo_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, audience = fake_with_audience()  # the fake's first audience, as the file names
    shutil.copytree(ROOT / "fixtures" / "demo", tmp_path / "fixtures" / "demo")
    monkeypatch.chdir(tmp_path)  # its URL is relative to the working directory
    summary = run_sync(
        SyncOptions(
            mapping=ROOT / "mappings" / "warehouse-duckdb.json", events=None, state=tmp_path / "s"
        ),
        environ=ENVIRON,
        backend=fake,
    )
    assert audience == "1800000000000000001"
    assert summary["added"] == 5 and summary["delivered"] == 5


def test_the_demo_mirrors_the_warehouse_twice_sending_only_the_change() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    first, second = text.split("== warehouse, ")[1:3]
    assert '"added": 5' in first and '"requests": 1' in first
    second = second.split("== what")[0]
    assert '"added": 1' in second and '"removed": 1' in second and '"changed": 1' in second
    assert '"received": 4' in second and '"requests": 2' in second
