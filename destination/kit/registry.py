"""Where the runner finds destinations: Python entry points, keyed by name.

A package makes a destination known by declaring an entry point in the group
``tiktok_audiences.destinations`` whose object is a ``Destination`` (in
``pyproject.toml``: ``[project.entry-points."tiktok_audiences.destinations"]``,
``mine = "my_package.destination:DESTINATION"``). The runner, the kit and the CLI name no
destination: a mapping file's ``"destination"`` picks one from here, so a new destination
is a new package and one line of packaging, nothing else.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from destination.errors import ConfigurationError, MappingError
from destination.kit.destination import Destination

__all__ = ["GROUP", "destination_named", "registered"]

GROUP = "tiktok_audiences.destinations"


@cache
def registered() -> dict[str, Destination]:
    """Every installed destination by its name (loaded once)."""
    found: dict[str, Destination] = {}
    for point in entry_points(group=GROUP):
        loaded: Any = point.load()
        name = getattr(loaded, "name", None)
        if not isinstance(name, str):
            raise ConfigurationError(
                f"the entry point {point.name} = {point.value} in {GROUP} is not a destination"
            )
        if name in found:
            raise ConfigurationError(f"two installed destinations are named {name!r}")
        found[name] = loaded
    return found


def destination_named(name: str, *, source: str) -> Destination:
    """The destination a mapping file (``source``) names; a ``MappingError`` if none is."""
    known = registered()
    if name not in known:
        listed = ", ".join(sorted(known)) or (
            "none is installed (from a checkout: pip install -e . registers them)"
        )
        raise MappingError(source, "/destination", f"the name of a destination: {listed}")
    return known[name]
