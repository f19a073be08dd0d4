"""The import directions that keep the framework a framework (issue 15).

Nothing under ``destination/kit`` or ``destination/runner`` imports a destination
(``destination.tiktok``, ``destination.webhook``), not even through another module of
the package; destinations import the kit, never the runner; the webhook is built from
the kit alone, without TikTok. Read from the source with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "destination"
DESTINATIONS = ("destination.tiktok", "destination.webhook")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


@cache
def imports_of(module: str) -> frozenset[str]:
    """The package's modules ``module`` imports directly (``from a import b`` counts ``a.b``
    when that is a module, else ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name in MODULES)


def reachable(module: str) -> Iterator[tuple[str, list[str]]]:
    """Every module ``module`` imports, directly or not, with the chain that gets there."""
    seen = {module}
    todo = [(module, [module])]
    while todo:
        current, chain = todo.pop()
        for imported in sorted(imports_of(current)):
            if imported not in seen:
                seen.add(imported)
                todo.append((imported, [*chain, imported]))
                yield imported, [*chain, imported]


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_walk_sees_the_package() -> None:
    assert "destination.runner.sync" in MODULES
    assert "destination.kit.registry" in imports_of("destination.runner.sync")
    assert "destination.tiktok.api" in dict(reachable("destination.tiktok.plugin"))


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if under(m, "destination.kit", "destination.runner"))
)
def test_the_kit_and_the_runner_never_reach_a_destination(module: str) -> None:
    bad = [" -> ".join(chain) for name, chain in reachable(module) if under(name, *DESTINATIONS)]
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, *DESTINATIONS)))
def test_destinations_never_reach_the_runner(module: str) -> None:
    bad = [
        " -> ".join(chain)
        for name, chain in reachable(module)
        if under(name, "destination.runner", "destination.cli", "destination.settings")
    ]
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "destination.webhook")))
def test_the_webhook_is_built_from_the_kit_without_tiktok(module: str) -> None:
    bad = [
        " -> ".join(chain)
        for name, chain in reachable(module)
        if under(name, "destination.tiktok", "destination.fake_server")
    ]
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "destination.warehouse")))
def test_the_warehouse_source_never_reaches_a_destination_or_the_cli(module: str) -> None:
    """A warehouse query is a source: it talks to a destination through the kit's
    ``MirroredSession`` only, whichever destination the mapping file names."""
    bad = [
        " -> ".join(chain)
        for name, chain in reachable(module)
        if under(name, *DESTINATIONS, "destination.cli", "destination.runner.sync")
    ]
    assert not bad, bad


def test_destinations_never_reach_the_warehouse() -> None:
    bad = [
        " -> ".join(chain)
        for module in MODULES
        if under(module, *DESTINATIONS)
        for name, chain in reachable(module)
        if under(name, "destination.warehouse")
    ]
    assert not bad, bad
