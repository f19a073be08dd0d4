"""Shared fixtures: every test runs in a clean environment.

The developer's ``TIKTOK_*`` variables (a real access token, a sandbox base URL, ...)
must never change what a test sees, and nothing a test does may read or write the real
``~/.local/state`` or ``~/.config`` (where the token store lives).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
