"""When DuckDB itself fails on the compiled route: a clear error that quotes no input.

DuckDB's own messages may quote the line it was reading ("Malformed JSON ... Input: ..."),
which holds personal data; the route reports only the kind of failure and the way
around it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from destination.cli import main
from destination.errors import DestinationError
from tests.compiled_support import mapping_file, sync, write_events

SECRET = "very.private.person@example.com"


def _starved_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DuckDB the route opens gets 1 MB of memory: its query fails."""
    real = duckdb.connect

    def connect(*args: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return real(*args, config={**(config or {}), "memory_limit": "1MB"}, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)


def _events(path: Path) -> Path:
    personas = {
        "external_audience_id": "1800000000000000001",
        "audience_settings": {"advertiserId": "7000000000000000001"},
    }
    line = {
        "type": "track",
        "event": "Audience Entered",
        "context": {"traits": {"email": SECRET}, "personas": personas},
        "properties": {"pad": "p" * 50_000},
    }
    return write_events(path, [json.dumps(line).encode()] * 40)


def test_a_duckdb_failure_is_a_destination_error_without_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _starved_duckdb(monkeypatch)
    events = _events(tmp_path / "events.ndjson")
    with pytest.raises(DestinationError) as raised:
        sync(tmp_path / "run", mapping=mapping_file(tmp_path), events=events, route="compiled")
    message = str(raised.value)
    assert "the compiled route's query failed in DuckDB (OutOfMemoryException)" in message
    assert 'route "python"' in message
    assert SECRET not in message
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_the_cli_prints_it_without_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _starved_duckdb(monkeypatch)
    events = _events(tmp_path / "events.ndjson")
    argv = ["sync", "--mapping", str(mapping_file(tmp_path)), "--events", str(events)]
    argv += ["--dry-run", "--route", "compiled", "--audience-state", str(tmp_path / "a.json")]
    code = main(argv)
    output = capsys.readouterr()
    assert code != 0
    assert "the compiled route's query failed in DuckDB" in output.err
    assert SECRET not in output.err + output.out
