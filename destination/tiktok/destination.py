"""The TikTok Audiences destination: its mapping files, checked and bound to actions.

``load_mapping_file`` reads and checks a file (the kit's reading: nested at most
``MAX_DEPTH`` levels, then against ``schemas/mapping-file.schema.json``) before anything
else happens; ``bind`` turns its subscriptions into compiled ones whose actions share
one run ``Context``;
``template`` derives a complete mapping file for a mode from the field declarations (the
shipped ``mappings/segment-*.json`` are exactly that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from destination.kit import mapping_file as kit
from destination.kit.action import Subscription
from destination.kit.destination import MappingFile
from destination.kit.fields import default_mapping
from destination.resources import load_schema
from destination.tiktok.actions import Context, build_action
from destination.tiktok.fields import CATALOGUE, Mode

__all__ = [
    "SCHEMA_FILE",
    "MappingFile",
    "bind",
    "load_mapping_file",
    "template",
    "warehouse_template",
]

SCHEMA_FILE = "mapping-file.schema.json"
NAME = "tiktok-audiences"


def load_mapping_file(path: Path) -> MappingFile:
    """Read and check a TikTok mapping file; any problem is a ``MappingError`` naming it."""

    # whatever it names: the schema pins the name, and reports it with every other problem
    return kit.read_mapping_file(path, lambda _name, _source: load_schema(SCHEMA_FILE))


def bind(mapping_file: MappingFile, context: Context) -> list[Subscription]:
    """The enabled subscriptions of a TikTok mapping file, bound to ``context``'s actions."""
    return kit.bind(mapping_file, lambda key: build_action(key, context))


def template(mode: Mode, settings: dict[str, Any]) -> dict[str, Any]:
    """A complete mapping file for ``mode`` with every action's default subscription."""
    return {
        "$schema": f"../schemas/{SCHEMA_FILE}",
        "destination": NAME,
        "mode": mode,
        "settings": settings,
        "subscriptions": [
            {
                "name": info.title,
                "action": info.key,
                "subscribe": info.default_subscribe,
                "enabled": True,
                "mapping": default_mapping(info.fields),
            }
            for info in CATALOGUE.values()
            if info.mode == mode
        ],
    }


# A warehouse row's event: its columns at the top level, "event" saying which way it goes.
# "Row Removed" events of rows that left carry the hashes TikTok accepted under these
# field names (what ``TikTokSession.replay_fields`` gives), which the same mapping reads.
WAREHOUSE_FIELDS = ("email", "phone", "advertising_id", "device_type")


def warehouse_template(settings: dict[str, Any]) -> dict[str, Any]:
    """A legacy mapping file syncing a query's rows: ``addUser`` for rows to add,
    ``removeUser`` for rows to remove, each reading the columns named like the fields."""
    mapping = {name: {"@path": f"$.{name}"} for name in WAREHOUSE_FIELDS}
    return {
        "$schema": f"../schemas/{SCHEMA_FILE}",
        "destination": NAME,
        "mode": "legacy",
        "settings": settings,
        "source": {
            "url": "duckdb:///customers.duckdb",
            "query": "select id, email, phone, advertising_id, device_type from customers",
            "primary_key": "id",
            "sync_mode": "mirror",
        },
        "subscriptions": [
            {
                "name": "Add rows to the audience",
                "action": "addUser",
                "subscribe": 'event = "Row Added"',
                "enabled": True,
                "mapping": mapping,
            },
            {
                "name": "Remove rows from the audience",
                "action": "removeUser",
                "subscribe": 'event = "Row Removed"',
                "enabled": True,
                "mapping": mapping,
            },
        ],
    }
