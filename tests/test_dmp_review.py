"""Review of issue 17's DMP client, customer files and definitions: what was found.

- A customer file definition's fingerprint changed with its ``action`` or its ``path``
  alone, though neither is held by TikTok: the plan then sent the unchanged file again
  with the action (an ``append`` turned ``remove`` removed every person of the file).
- A file that changed size while it was uploaded was taken for a transport failure and
  sent again (with the signature of the file as it was), until the retries ran out, the
  reason hidden behind "failed in transport".
- A CSV header naming a column twice had the first one read, silently.
- Ad group, video or location ids written in another order changed the fingerprint: the
  audience was made again (and the filled one deleted) though nothing had changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from destination.backends import HttpBackend
from destination.errors import MappingError, PermanentError
from destination.resources import data_dir
from destination.settings import Secret
from destination.tiktok.api import RetryPolicy, TikTokApi
from destination.tiktok.dmp.customer_file import prepare_customer_file
from destination.tiktok.dmp.definitions import Definition, load_definitions
from destination.tiktok.settings import Settings
from tests.upload_server import upload_server

FIXTURES = data_dir("fixtures") / "audiences"
ADVERTISER = "7000000000000000001"


def _customers_fingerprint(tmp_path: Path, **changes: Any) -> str:
    folder = tmp_path / f"defs-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    document = json.loads((FIXTURES / "customers.json").read_text("utf-8"))
    document["customer_file"].update(changes)
    (folder / "customers.json").write_text(json.dumps(document), encoding="utf-8")
    shutil.copy(FIXTURES / "customers.csv", folder / "customers.csv")
    shutil.copy(FIXTURES / "customers.csv", folder / "renamed.csv")
    (definition,) = load_definitions(folder)
    return definition.fingerprint()


def test_a_customer_files_fingerprint_ignores_how_a_change_is_sent_and_where_the_file_is(
    tmp_path: Path,
) -> None:
    """The file's content is compared by its MD5; the action says how a changed file is
    sent. Changing either alone changes nothing TikTok holds."""
    original = _customers_fingerprint(tmp_path)

    assert _customers_fingerprint(tmp_path, action="remove") == original
    assert _customers_fingerprint(tmp_path, action="replace") == original
    assert _customers_fingerprint(tmp_path, path="renamed.csv") == original
    # what the upload is made of does change it
    assert _customers_fingerprint(tmp_path, columns={"email": "email"}) != original


class _Growing(type(Path())):  # type: ignore[misc]
    """A path whose file grows by a line each time its size is read (a file still being
    written by something else)."""

    def stat(self, *args: Any, **kwargs: Any) -> Any:
        size = super().stat(*args, **kwargs)
        with open(self, "ab") as handle:
            handle.write(b"f" * 64 + b"\n")
        return size


def test_a_file_that_changes_size_while_uploaded_is_refused_not_sent_again(
    tmp_path: Path,
) -> None:
    upload = _Growing(tmp_path / "people.csv")
    upload.write_bytes(b"EMAIL_SHA256\n" + b"a" * 64 + b"\n")
    with upload_server(tmp_path) as (url, _received):
        api = TikTokApi(
            HttpBackend(url, root="open_api/v1.3"),
            Secret("review-token-0123456789"),
            retry=RetryPolicy(max_attempts=4, initial_wait=0),
        )
        with pytest.raises(PermanentError, match=r"people\.csv changed size"):
            api.upload_audience_file(ADVERTISER, upload, "0" * 32)

    assert api.requests_sent == 1


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("email,name,email\na@example.com,A,b@example.com\n", encoding="utf-8")
    definition = Definition(
        key="buyers",
        name="Buyers",
        type="customer_file",
        share_with=(),
        spec={"path": "people.csv", "columns": {"email": "email"}, "action": "append"},
        path=tmp_path / "buyers.json",
    )
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(MappingError) as raised:
        prepare_customer_file(definition, source, Settings(), work=work)

    assert "/customer_file/columns/email" in str(raised.value)
    assert "2 columns named 'email'" in str(raised.value)
    assert "example.com" not in str(raised.value)


def _fingerprint_of(tmp_path: Path, name: str, change: Any) -> str:
    folder = tmp_path / f"defs-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for file in FIXTURES.iterdir():
        shutil.copy(file, folder / file.name)
    document = json.loads((folder / f"{name}.json").read_text("utf-8"))
    change(document)
    (folder / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")
    return {d.key: d for d in load_definitions(folder)}[document["key"]].fingerprint()


def _two_locations(document: dict[str, Any]) -> None:
    document["lookalike"]["locations"] = ["6252001", "2635167"]


def _two_locations_reversed(document: dict[str, Any]) -> None:
    document["lookalike"]["locations"] = ["2635167", "6252001"]


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("video-ad-completers", lambda d: None, lambda d: d["engagement"]["assets"].reverse()),
        ("public-video-engagers", lambda d: None, lambda d: d["engagement"]["assets"].reverse()),
        ("customers-lookalike", _two_locations, _two_locations_reversed),
    ],
    ids=["ad-groups", "videos", "locations"],
)
def test_a_fingerprint_ignores_the_order_of_ids_that_are_a_set(
    name: str, first: Any, second: Any, tmp_path: Path
) -> None:
    """Ad group, video and location ids are sets (the schema asks them unique): written in
    another order they are the same audience, which must not be made again."""
    assert _fingerprint_of(tmp_path, name, first) == _fingerprint_of(tmp_path, name, second)
