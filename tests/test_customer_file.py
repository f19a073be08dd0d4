"""Customer files (issue 17): a definition's CSV or TXT file made ready for upload.

A person in a file is hashed exactly as the sync hashes the same person (compared with
``user_identifiers`` under the same settings); the upload file has the documented format
and its MD5; rows without a usable identifier are counted with reasons and no values;
a header without a named column is an error naming the definition, the pointer and the
file; 100,000 rows are prepared and uploaded in bounded memory.
"""

from __future__ import annotations

import csv
import hashlib
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from destination.backends import HttpBackend
from destination.errors import InputError, MappingError
from destination.settings import Secret
from destination.tiktok.actions import user_identifiers
from destination.tiktok.api import RetryPolicy, TikTokApi
from destination.tiktok.dmp.customer_file import CustomerFile, prepare_customer_file
from destination.tiktok.dmp.definitions import Definition
from destination.tiktok.settings import Settings
from tests.upload_server import upload_server

SETTINGS = Settings(
    default_phone_region="GB",
    phone_format="e164_no_plus",
    email_remove_plus_suffix=True,
    email_remove_dots=True,
)


def definition(folder: Path, file: str, columns: dict[str, str], **more: Any) -> Definition:
    return Definition(
        key="buyers",
        name="Buyers",
        type="customer_file",
        share_with=(),
        spec={"path": file, "columns": columns, "action": "append", **more},
        path=folder / "buyers.json",
    )


def prepare(
    folder: Path, file: str, text: str, columns: dict[str, str], **more: Any
) -> CustomerFile:
    source = folder / file
    source.write_text(text, encoding="utf-8")
    work = folder / "work"
    work.mkdir(exist_ok=True)
    return prepare_customer_file(
        definition(folder, file, columns, **more), source, SETTINGS, work=work
    )


def rows(made: CustomerFile) -> list[list[str]]:
    with made.path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


COLUMNS = {"email": "Email", "phone": "Phone", "advertising_id": "Maid", "device_type": "OS"}


def test_a_person_is_hashed_as_the_sync_hashes_them(tmp_path: Path) -> None:
    people = [
        {"email": " First.Last+news@Example.COM ", "phone": "020 7946 0018"},
        {"phone": "+44 20 7946 0019", "advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        {"advertising_id": "cdda802e-fb9c-47ad-9866-0794d394c912", "device_type": "android"},
    ]
    people[1]["device_type"] = "iOS"
    text = "Email,Phone,Maid,OS\n" + "".join(
        f"{p.get('email', '')},{p.get('phone', '')},{p.get('advertising_id', '')},"
        f"{p.get('device_type', '')}\n"
        for p in people
    )

    made = prepare(tmp_path, "people.csv", text, COLUMNS)

    header, *lines = rows(made)
    assert header == ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"]
    for person, line in zip(people, lines, strict=True):
        ids, dropped = user_identifiers(person, SETTINGS)
        assert dropped == []
        assert line == [ids.get(t, "") for t in header]
    # the settings count: not the defaults' hash
    assert lines[0][0] != user_identifiers(people[0], Settings())[0]["EMAIL_SHA256"]


def test_the_upload_file_lists_only_the_id_types_present(tmp_path: Path) -> None:
    text = "id,Email,Phone\n1,a@example.com,\n2,,+14155550100\n3,B@example.com,+14155550101\n"

    made = prepare(tmp_path, "people.csv", text, {"email": "Email", "phone": "Phone"})

    content = made.path.read_bytes()
    lines = content.decode("ascii").splitlines()
    assert lines[0] == "EMAIL_SHA256,PHONE_SHA256"
    assert made.id_types == ("EMAIL_SHA256", "PHONE_SHA256")
    email_only, phone_only, both = (line.split(",") for line in lines[1:])
    assert email_only[1] == "" and phone_only[0] == ""
    for cell in (email_only[0], phone_only[1], *both):
        assert len(cell) == 64 and cell == cell.lower() and int(cell, 16) >= 0
    assert made.md5 == hashlib.md5(content).hexdigest()
    assert made.path.suffix == ".csv" and made.path.parent == tmp_path / "work"
    assert [p.name for p in (tmp_path / "work").iterdir()] == [made.path.name]  # no scratch


def test_rows_without_a_usable_identifier_are_counted_with_reasons_not_values(
    tmp_path: Path,
) -> None:
    text = (
        "Email,Phone\n"
        "good@example.com,\n"
        "secret-not-an-email,\n"  # no usable identifier
        ",\n"  # nothing at all
        "fine@example.com,12\n"  # written, its phone dropped
        "\n"  # a blank line is no row
    )

    made = prepare(tmp_path, "people.csv", text, {"email": "Email", "phone": "Phone"})

    assert (made.read, made.written, made.skipped) == (4, 2, 2)
    assert made.skipped_reasons == {
        "email is not a valid address": 1,
        "no email, phone or advertising id": 1,
    }
    assert made.dropped == {"phone is not a valid number": 1}
    assert "secret" not in repr(made)
    assert len(rows(made)) == 3  # the header and two people
    assert made.id_types == ("EMAIL_SHA256",)


def test_a_txt_file_holds_one_value_per_line(tmp_path: Path) -> None:
    made = prepare(tmp_path, "phones.txt", "+44 20 7946 0018\n\n020 7946 0019\n", {"phone": ""})

    assert rows(made) == [
        ["PHONE_SHA256"],
        [user_identifiers({"phone": "+44 20 7946 0018"}, SETTINGS)[0]["PHONE_SHA256"]],
        [user_identifiers({"phone": "020 7946 0019"}, SETTINGS)[0]["PHONE_SHA256"]],
    ]
    assert (made.read, made.written) == (2, 2)


def test_the_delimiter_and_a_byte_order_mark_are_understood(tmp_path: Path) -> None:
    made = prepare(
        tmp_path,
        "people.csv",
        "\ufeffEmail;Name\na@example.com;A\n",
        {"email": "Email"},
        delimiter=";",
    )
    assert rows(made)[1] == [hashlib.sha256(b"a@example.com").hexdigest()]


def test_a_missing_column_names_the_definition_the_pointer_and_the_file(tmp_path: Path) -> None:
    # a file without a header: its first person must not show up in the message
    with pytest.raises(MappingError) as raised:
        prepare(tmp_path, "people.csv", "jane@example.com,+14155550100\n", {"email": "Email"})

    error = raised.value
    assert error.source == str(tmp_path / "buyers.json")
    assert error.pointer == "/customer_file/columns/email"
    assert "people.csv" in str(error) and "'Email'" in str(error)
    assert "jane" not in str(error)


def test_an_empty_csv_has_no_header(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"header line; .*people\.csv is empty"):
        prepare(tmp_path, "people.csv", "", {"email": "Email"})


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_bytes(b"Email\n\xff\xfe@example.com\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(InputError, match=r"people\.csv: is not UTF-8"):
        prepare_customer_file(
            definition(tmp_path, "people.csv", {"email": "Email"}),
            source,
            SETTINGS,
            work=tmp_path / "work",
        )
    assert list((tmp_path / "work").iterdir()) == []


def test_a_file_with_no_usable_row_is_refused_with_the_reasons(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no row has a usable identifier.*2 rows read"):
        prepare(tmp_path, "people.csv", "Email\nnot-an-email\n\n,\n", {"email": "Email"})


def test_100k_rows_are_prepared_and_uploaded_in_bounded_memory(tmp_path: Path) -> None:
    """The source (about 5 MB) and the upload file (about 13 MB) are read and written row
    by row: memory grows by far less than either."""
    source = tmp_path / "people.csv"
    with source.open("w", encoding="utf-8") as out:
        out.write("Email,Phone\n")
        for i in range(100_000):
            out.write(f"user.{i}+x@example.com,+1 415 555 {i % 10_000:04d}\n")
    spec = definition(tmp_path, "people.csv", {"email": "Email", "phone": "Phone"})
    work = tmp_path / "work"
    work.mkdir()
    warm = tmp_path / "warm.csv"
    warm.write_text("Email,Phone\na@example.com,+14155550100\n")
    prepare_customer_file(spec, warm, SETTINGS, work=work)  # caches, imports

    with upload_server(tmp_path) as (url, received):
        api = TikTokApi(
            HttpBackend(url, root="open_api/v1.3"), Secret("t"), retry=RetryPolicy(initial_wait=0)
        )
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            made = prepare_customer_file(spec, source, SETTINGS, work=work)
            api.upload_audience_file("7000000000000000001", made.path, made.md5)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    assert (made.read, made.written) == (100_000, 100_000)
    size = made.path.stat().st_size
    assert size > 12_000_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for {size} bytes written"
    sent = received[-1].parts()["file"][1]
    assert hashlib.md5(sent).hexdigest() == made.md5
