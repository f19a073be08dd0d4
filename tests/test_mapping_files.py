"""Mapping files are checked whole before anything runs; errors name file and pointer.

Cases are files: ``fixtures/mapping-files/valid/*.json`` must load and bind;
``invalid/*.json`` hold a ``document`` and the ``pointer`` and text the error must carry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from destination.backends import DryRunBackend
from destination.errors import MappingError
from destination.settings import Secret, Settings
from destination.tiktok.actions import Context
from destination.tiktok.api import TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.destination import bind, load_mapping_file, template

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "fixtures" / "mapping-files"
VALID = sorted((CASES / "valid").glob("*.json"))
INVALID = sorted((CASES / "invalid").glob("*.json"))
SHIPPED = sorted((ROOT / "mappings").glob("segment-*.json"))  # TikTok's


def _context(tmp_path: Path) -> Context:
    return Context(
        settings=Settings(),
        api=TikTokApi(DryRunBackend(), Secret("unused")),
        registry=AudienceRegistry(tmp_path / "a.json", namespace="test", create=None),
    )


def _load_and_bind(path: Path, tmp_path: Path) -> int:
    return len(bind(load_mapping_file(path), _context(tmp_path)))


@pytest.mark.parametrize("path", VALID + SHIPPED, ids=lambda p: p.name)
def test_valid_mapping_file_loads_and_binds(path: Path, tmp_path: Path) -> None:
    document = json.loads(path.read_text())
    enabled = [s for s in document["subscriptions"] if s.get("enabled", True)]
    assert _load_and_bind(path, tmp_path) == len(enabled)


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_mapping_file_names_file_pointer_and_expectation(
    case: Path, tmp_path: Path
) -> None:
    spec = json.loads(case.read_text())
    target = tmp_path / "case.json"
    target.write_text(json.dumps(spec["document"]))
    with pytest.raises(MappingError) as caught:
        _load_and_bind(target, tmp_path)
    error = caught.value
    assert error.source == str(target)
    assert error.pointer == spec["pointer"]
    assert spec["error_contains"] in error.expected
    assert str(target) in str(error) and (spec["pointer"] or "/") in str(error)


def test_there_are_enough_cases() -> None:
    assert len(VALID) >= 3 and len(INVALID) >= 12


def test_file_that_is_not_json_names_line_and_column(tmp_path: Path) -> None:
    target = tmp_path / "broken.json"
    target.write_text('{"destination": "tiktok-audiences",\n  "mode": }')
    with pytest.raises(MappingError) as caught:
        load_mapping_file(target)
    assert caught.value.pointer == ""
    assert "valid JSON" in caught.value.expected and "line 2" in caught.value.expected


def test_missing_mapping_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="no such file"):
        load_mapping_file(tmp_path / "nope.json")


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    target = tmp_path / "many.json"
    target.write_text(
        json.dumps(
            {
                "destination": "x",
                "mode": "native",
                "settings": {"batch_size": 0, "qps": -1},
                "subscriptions": [{"name": "a", "action": "addToAudience", "subscribe": "all"}],
            }
        )
    )
    with pytest.raises(MappingError) as caught:
        load_mapping_file(target)
    assert "2 more" in caught.value.expected
    assert "/settings/batch_size" in caught.value.expected
    assert "/settings/qps" in caught.value.expected


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mapping_file_is_the_template_derived_from_the_fields(path: Path) -> None:
    document = json.loads(path.read_text())
    derived = template(document["mode"], document["settings"])
    assert document["subscriptions"] == derived["subscriptions"]
    assert document["$schema"] == derived["$schema"]


def test_a_disabled_subscription_is_still_checked(tmp_path: Path) -> None:
    target = tmp_path / "off.json"
    target.write_text(
        json.dumps(
            {
                "destination": "tiktok-audiences",
                "mode": "native",
                "subscriptions": [
                    {"name": "on", "action": "addToAudience", "subscribe": "all"},
                    {
                        "name": "off",
                        "action": "removeFromAudience",
                        "subscribe": "all",
                        "enabled": False,
                        "mapping": {"email": {"@path": "$.no..where"}},
                    },
                ],
            }
        )
    )
    with pytest.raises(MappingError) as caught:
        _load_and_bind(target, tmp_path)
    assert caught.value.pointer == "/subscriptions/1/mapping/email/@path"
