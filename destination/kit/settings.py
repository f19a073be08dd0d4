"""Settings declared once: each declaration gives what everything else is derived from.

A ``Setting`` names its JSON Schema (type and range), default, environment variable and
command-line flag, and says what it is for. From a list of declarations come the
settings part of a mapping file's JSON Schema, the resolver (flags over environment over
file, every problem reported together, each naming where the value came from), the
README's settings table and the error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Setting"]


@dataclass(frozen=True)
class Setting:
    """One setting. ``schema`` is the JSON Schema of its value; ``default`` is used when
    no source gives one (None: no value); ``env`` and ``flag`` name the environment
    variable and the ``sync`` flag that override the mapping file."""

    name: str
    schema: Mapping[str, Any]
    description: str
    default: Any = None
    env: str | None = None
    flag: str | None = None
    secret: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
