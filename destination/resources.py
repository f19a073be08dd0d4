"""Where the shipped data lives: mapping files, JSON Schemas and demo fixtures.

In a source checkout (or an editable install) they sit at the top of the repository; a
wheel carries copies under ``destination/_data``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["data_dir", "load_schema"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``mappings``, ``schemas`` or ``fixtures``: the installed copy, else the checkout's."""
    installed = _PACKAGE / "_data" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def load_schema(file_name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((data_dir("schemas") / file_name).read_text("utf-8"))
    return schema
