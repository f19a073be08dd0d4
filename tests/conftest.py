"""Shared fixtures: every test runs in a clean environment and leaves logging as it was.

The developer's ``TIKTOK_*`` variables (a real access token, a sandbox base URL, ...)
must never change what a test sees, and nothing a test does may read or write the real
``~/.local/state`` or ``~/.config`` (where the token store lives).

Hypothesis runs under the ``tiktok-audiences`` profile: no per-example deadline and no
"too slow" health check, the two limits it measures in wall-clock time, which a loaded
machine (several suites at once) exceeds while the code under test is correct.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fixtures found by pytest here: the throw-away PostgreSQL server on loopback (one per
# session) and its URL, for the warehouse tests.
from tests.postgres_server import postgres_server, postgres_url  # noqa: F401

# Before any test module builds its own ``settings(...)``: those inherit what they do not
# set from the profile loaded when they are made. (A ``suppress_health_check`` given
# explicitly replaces this list, so such settings list ``too_slow`` themselves.)
settings.register_profile(
    "tiktok-audiences", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("tiktok-audiences")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Remove every ``TIKTOK_*`` variable; point ``XDG_STATE_HOME`` and ``XDG_CONFIG_HOME``
    at temporary folders.

    Returns the state folder (not created: code under test creates what it needs).
    """
    for name in list(os.environ):
        if name.startswith("TIKTOK_"):
            monkeypatch.delenv(name)
    state_home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    return state_home


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` reconfigures the root logger (``basicConfig(force=True)``, with handlers on
    the test's captured streams); undo it after every test that may have called it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
