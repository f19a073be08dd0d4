"""``destination.files.replace_file``: a kept file is the old one or the new one, whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from destination.files import replace_file


def test_replace_file_writes_the_new_text_over_the_old(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old\n", "utf-8")
    replace_file(path, '{"new": "é"}\n')
    assert path.read_text("utf-8") == '{"new": "é"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # a folder where the file should go: the rename fails
    (path / "inside").write_text("kept", "utf-8")
    with pytest.raises(OSError):
        replace_file(path, "new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert (path / "inside").read_text("utf-8") == "kept"


def test_text_that_cannot_be_encoded_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with pytest.raises(UnicodeEncodeError):
        replace_file(path, "\udc80")  # a lone surrogate: not UTF-8
    assert list(tmp_path.iterdir()) == []
