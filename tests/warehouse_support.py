"""What the warehouse tests share: a DuckDB customers table, a mapping file with a
``source``, and a sync against the in-process fake TikTok whose counts must add up."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from destination.backends import Backend
from destination.fake_server import FakeTikTok
from destination.runner.sync import SyncOptions, run_sync

ADVERTISER = "7000000000000000001"
TOKEN = "warehouse-test-token"
ENVIRON = {"TIKTOK_ACCESS_TOKEN": TOKEN}
FAST = {"qps": 0, "retry_initial_wait": 0, "max_attempts": 2, "concurrency": 1}

Row = tuple[Any, ...]
COLUMNS = "id integer, email varchar, phone varchar, advertising_id varchar, device_type varchar"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fake_with_audience() -> tuple[FakeTikTok, str]:
    fake = FakeTikTok()
    fake.add_advertiser(ADVERTISER)
    fake.add_token(TOKEN, advertiser_ids=[ADVERTISER])
    return fake, fake.add_audience(ADVERTISER, "Warehouse customers")


def write_customers(path: Path, rows: Iterable[Row], *, table: str = "customers") -> None:
    """(Re)write ``table`` in the DuckDB file ``path`` with ``rows`` of ``COLUMNS``."""
    with duckdb.connect(str(path)) as connection:
        connection.execute(f"create or replace table {table} ({COLUMNS})")
        rows = list(rows)
        if rows:
            connection.executemany(f"insert into {table} values (?, ?, ?, ?, ?)", rows)


def write_mapping(
    directory: Path,
    audience_id: str,
    source: Mapping[str, Any],
    *,
    settings: Mapping[str, Any] | None = None,
    subscriptions: list[dict[str, Any]] | None = None,
    name: str = "warehouse.json",
) -> Path:
    document: dict[str, Any] = {
        "destination": "tiktok-audiences",
        "mode": "legacy",
        "settings": {
            "advertiser_id": ADVERTISER,
            "audience_id": audience_id,
            **FAST,
            **(settings or {}),
        },
        "source": dict(source),
    }
    if subscriptions is not None:
        document["subscriptions"] = subscriptions
    path = directory / name
    path.write_text(json.dumps(document), "utf-8")
    return path


def sync(
    mapping: Path,
    *,
    state: Path | None,
    backend: Backend | None,
    rejected: Path | None = None,
    dry_run: bool = False,
    allow_mass_removal: bool = False,
    environ: Mapping[str, str] = ENVIRON,
) -> dict[str, Any]:
    """One warehouse sync; its counts must add up, and the rejected file hold them."""
    summary = run_sync(
        SyncOptions(
            mapping=mapping,
            events=None,
            rejected=rejected,
            state=state,
            dry_run=dry_run,
            allow_mass_removal=allow_mass_removal,
        ),
        environ=environ,
        backend=backend,
    )
    assert summary["received"] == summary["delivered"] + summary["rejected"] + summary["deferred"]
    if rejected is not None and rejected.exists():
        lines = rejected.read_text("utf-8").splitlines()
        assert len(lines) == summary["rejected"]
    return summary


def members(fake: FakeTikTok, audience_id: str) -> dict[str, set[str]]:
    return {kind: hashes for kind, hashes in fake.members(audience_id).items() if hashes}
