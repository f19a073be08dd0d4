"""TikTok's half of the compiled route: the actions' digests in DuckDB SQL.

``membership_digest`` writes, for the payload fields the kit compiled (``kit.sql``), the
JSON text of exactly the ``MembershipDigest`` that ``Membership.digest`` makes: the
identifier rules of ``normalize`` (email trim, lowercase and options; advertising ids and
the all-zero id; pre-hashed values) and SHA-256, in SQL. The kit has made sure every
present value is ASCII text of the declared type, so trimming and lowercasing are
ASCII's. A phone that is not pre-hashed is left in the digest under ``"phone"``:
``finish`` normalizes it with the Python normalizer (phone validity needs
libphonenumber's metadata: as SQL it made a plan that took DuckDB 0.5 s to bind, for
each query, ``benchmarks/RESULTS.md``) and puts its hash, or why it was dropped, where
``digest`` would have. ``create_audience_digest`` is ``CreateAudience.digest``'s two
fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from destination.errors import PayloadError
from destination.kit.sql import CompiledDigest, PayloadField, PayloadSql, Scope, sql_string, strip
from destination.tiktok.fields import PLACE_FIELDS
from destination.tiktok.normalize import hash_phone
from destination.tiktok.settings import Settings

__all__ = ["create_audience_digest", "membership_digest"]

_SHA256_HEX = "'[0-9a-fA-F]{64}'"
_ADVERTISING_ID = "'[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'"
# one "@", a local part and a domain of two or more labels, no space (``normalize._email``)
_EMAIL = (
    "'[^@\\x09-\\x0d\\x1c-\\x20]+@[^@.\\x09-\\x0d\\x1c-\\x20]+(\\.[^@.\\x09-\\x0d\\x1c-\\x20]+)+'"
)
_ABSENT = PayloadField("FALSE", "NULL")


def _json(value: str) -> str:
    """A JSON text made at compile time, as an SQL literal."""
    return sql_string(orjson.dumps(value).decode())


def _sent(payload: Mapping[str, PayloadField], name: str, switch: str, scope: Scope) -> str:
    """Whether identifier ``name`` is present and its ``send_*`` switch is not false."""
    value = payload.get(name, _ABSENT)
    flag = payload.get(switch)
    if flag is None:
        return value.present
    return scope.let(f"({value.present} AND (NOT {flag.present} OR {flag.text} = 'true'))")


def _prehashed(text: str) -> str:
    """Whether ``text`` (trimmed) is a SHA-256 already: 64 hex characters."""
    return f"(length({text}) = 64 AND regexp_full_match({text}, {_SHA256_HEX}))"


def _entry(id_type: str, hashed: str) -> str:
    return f"concat('\"{id_type}\":\"', {hashed}, '\"')"


def membership_digest(payload: PayloadSql, settings: Settings, scope: Scope) -> CompiledDigest:
    """``Membership.digest`` in SQL for ``settings``."""
    fields = payload.fields
    let = scope.let

    # email: trimmed, lowercased, the options; a 64-hex value is only lowercased
    email = let(strip(fields.get("email", _ABSENT).text))
    lowered = let(f"lower({email})")
    local = f"split_part({lowered}, '@', 1)"
    if settings.email_remove_plus_suffix:
        local = f"split_part({local}, '+', 1)"
    if settings.email_remove_dots:
        local = f"replace({local}, '.', '')"
    local = let(local)
    send_email = _sent(fields, "email", "send_email", scope)
    address = let(f"regexp_full_match({lowered}, {_EMAIL})")
    email_hash = let(
        f"CASE WHEN NOT {send_email} THEN NULL "
        f"WHEN {_prehashed(email)} THEN {lowered} "
        f"WHEN {address} AND {local} <> '' "
        f"THEN sha256({local} || '@' || split_part({lowered}, '@', 2)) END"
    )
    email_dropped = let(
        f"CASE WHEN {send_email} AND {email_hash} IS NULL THEN "
        f"CASE WHEN {address} THEN {_json('email has an empty local part once normalized')} "
        f"ELSE {_json('email is not a valid address')} END END"
    )

    # phone: a pre-hashed one is only lowercased; any other is left for ``finish``
    phone = let(strip(fields.get("phone", _ABSENT).text))
    send_phone = _sent(fields, "phone", "send_phone", scope)
    prehashed = let(f"({send_phone} AND {_prehashed(phone)})")
    phone_hash = f"CASE WHEN {prehashed} THEN lower({phone}) END"

    # advertising id: its kind from the device type, lowercased, not all zeros
    advertising_id = let(f"lower({strip(fields.get('advertising_id', _ABSENT).text)})")
    device = fields.get("device_type", _ABSENT)
    device_type = let(f"CASE WHEN {device.present} THEN lower({strip(device.text)}) END")
    id_type = let(
        f"CASE WHEN {device_type} IN ('ios', 'ipados', 'tvos', 'watchos') THEN 'IDFA_SHA256' "
        f"WHEN {device_type} = 'android' THEN 'AAID_SHA256' END"
    )
    send_id = _sent(fields, "advertising_id", "send_advertising_id", scope)
    valid_id = let(f"regexp_full_match({advertising_id}, {_ADVERTISING_ID})")
    id_hash = let(
        f"CASE WHEN NOT {send_id} OR {id_type} IS NULL THEN NULL "
        f"WHEN {_prehashed(advertising_id)} THEN {advertising_id} "
        f"WHEN {valid_id} AND NOT regexp_full_match({advertising_id}, '[0-]+') "
        f"THEN sha256({advertising_id}) END"
    )
    no_device = "advertising id has no known device type (expected ios or android)"
    id_dropped = (
        f"CASE WHEN NOT {send_id} OR {id_hash} IS NOT NULL THEN NULL "
        f"WHEN {id_type} IS NULL THEN {_json(no_device)} "
        f"WHEN {valid_id} THEN {_json('advertising id is all zeros (tracking refused)')} "
        f"ELSE {_json('advertising id is not 32 hex digits')} END"
    )

    ids = [
        f"CASE WHEN {email_hash} IS NOT NULL THEN {_entry('EMAIL_SHA256', email_hash)} END",
        f"CASE WHEN {prehashed} THEN {_entry('PHONE_SHA256', phone_hash)} END",
        f"CASE WHEN {id_hash} IS NOT NULL "
        f"THEN concat('\"', {id_type}, '\":\"', {id_hash}, '\"') END",
    ]
    dropped = [email_dropped, id_dropped]
    where = [
        f"CASE WHEN {f.present} THEN to_json({f.text})::VARCHAR ELSE 'null' END"
        if (f := fields.get(name)) is not None
        else "'null'"
        for name in PLACE_FIELDS
    ]
    phone_left = (
        f"CASE WHEN {send_phone} AND NOT {prehashed} THEN concat(',\"phone\":', "
        f"to_json({phone})::VARCHAR, ',\"before\":', "
        f"CASE WHEN {email_dropped} IS NULL THEN '0' ELSE '1' END) ELSE '' END"
    )
    where_list = ", ',', ".join(where)
    json = (
        f"concat('{{\"ids\":{{', concat_ws(',', {', '.join(ids)}), '}},\"dropped\":[', "
        f"concat_ws(',', {', '.join(dropped)}), '],\"where\":[', "
        f"{where_list}, ']', {phone_left}, '}}')"
    )
    return CompiledDigest(json, finish=_phone_finisher(settings))


_PHONES_REMEMBERED = 65_536  # a user's events come close together: their phone repeats


def _phone_finisher(settings: Settings) -> Callable[[Any], Any]:
    """What completes a digest whose phone was left to Python (all but pre-hashed ones):
    ``hash_phone`` of it, the hash put after the email's (the order ``user_identifiers``
    adds them in), or why it was dropped put after the email's reason (``before``: 1 if
    there is one). Answers are remembered for the run (the function is pure), up to
    ``_PHONES_REMEMBERED``."""
    region, phone_format = settings.default_phone_region, settings.phone_format
    answers: dict[str, tuple[str, bool]] = {}  # phone -> (hash or why not, hashed)

    def answer(phone: str) -> tuple[str, bool]:
        found = answers.get(phone)
        if found is None:
            try:
                found = hash_phone(phone, default_region=region, phone_format=phone_format), True
            except PayloadError as exc:
                found = str(exc), False
            if len(answers) >= _PHONES_REMEMBERED:
                answers.clear()
            answers[phone] = found
        return found

    def finish(digest: dict[str, Any]) -> dict[str, Any]:
        phone = digest.pop("phone", None)
        if phone is None:
            return digest
        before = digest.pop("before")
        hashed, ok = answer(phone)
        if not ok:
            digest["dropped"].insert(before, hashed)
            return digest
        ids = digest["ids"]  # the email's hash first, then the phone's, then the rest
        email = ids.pop("EMAIL_SHA256", None)
        first = {} if email is None else {"EMAIL_SHA256": email}
        digest["ids"] = {**first, "PHONE_SHA256": hashed, **ids}
        return digest

    return finish


def create_audience_digest(payload: PayloadSql, scope: Scope) -> CompiledDigest:
    """``CreateAudience.digest`` in SQL: the payload's advertiser and name, if present."""
    parts = [
        f"CASE WHEN {f.present} THEN concat({_json(name)}, ':', to_json({f.text})::VARCHAR) END"
        for name in ("advertiser_id", "audience_name")
        if (f := payload.fields.get(name)) is not None
    ]
    json = "concat('{', concat_ws(',', " + ", ".join(parts) + "), '}')" if parts else "'{}'"
    return CompiledDigest(scope.let(json))
