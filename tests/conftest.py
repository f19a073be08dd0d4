"""Shared fixtures: every test runs in a clean environment.

The developer's ``TIKTOK_*`` variables (a real access token, a sandbox base URL, ...)
must never change what a test sees, and nothing a test does may write into the real
``~/.local/state``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Remove every ``TIKTOK_*`` variable and point ``XDG_STATE_HOME`` at a temporary folder.

    Returns that folder (not created: code under test creates what it needs).
    """
    for name in list(os.environ):
        if name.startswith("TIKTOK_"):
            monkeypatch.delenv(name)
    state_home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    return state_home
