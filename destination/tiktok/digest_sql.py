"""TikTok's half of the compiled route: the actions' digests in DuckDB SQL.

``membership_digest`` writes, for the payload fields the kit compiled (``kit.sql``), the
JSON text of exactly the ``MembershipDigest`` that ``Membership.digest`` makes: the
identifier rules of ``normalize`` (email trim, lowercase and options; advertising ids and
the all-zero id; pre-hashed values; phones through ``phone_sql``) and SHA-256, in SQL.
The kit has made sure every present value is printable ASCII of the declared type, so
trimming is trimming spaces and lowercasing is ASCII's. A phone SQL cannot decide (a
national form, say) is left in the digest under ``"phone"``: ``finish`` normalizes it
with the Python normalizer and puts its hash, or why it was dropped, where ``digest``
would have. ``create_audience_digest`` is ``CreateAudience.digest``'s two fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from destination.errors import PayloadError
from destination.kit.sql import CompiledDigest, PayloadField, PayloadSql, Scope, sql_string, strip
from destination.tiktok.normalize import hash_phone
from destination.tiktok.phone_sql import phone_sql
from destination.tiktok.settings import Settings

__all__ = ["create_audience_digest", "membership_digest"]

_SHA256_HEX = "'[0-9a-fA-F]{64}'"
_ADVERTISING_ID = "'[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'"
# one "@", a local part and a domain of two or more labels, no space (``normalize._email``)
_EMAIL = (
    "'[^@\\x09-\\x0d\\x1c-\\x20]+@[^@.\\x09-\\x0d\\x1c-\\x20]+(\\.[^@.\\x09-\\x0d\\x1c-\\x20]+)+'"
)
_WHERE = ("advertiser_id", "audience_id", "external_audience_id", "audience_key")
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


def _entry(id_type: str, hashed: str) -> str:
    return f"concat('\"{id_type}\":\"', {hashed}, '\"')"


def membership_digest(payload: PayloadSql, settings: Settings, scope: Scope) -> CompiledDigest:
    """``Membership.digest`` in SQL for ``settings`` (``ConfigurationError`` for a bad
    phone setting, as the Python route raises on its first phone)."""
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
        f"WHEN length({email}) = 64 AND regexp_full_match({email}, {_SHA256_HEX}) "
        f"THEN {lowered} "
        f"WHEN {address} AND {local} <> '' "
        f"THEN sha256({local} || '@' || split_part({lowered}, '@', 2)) END"
    )
    email_dropped = let(
        f"CASE WHEN {send_email} AND {email_hash} IS NULL THEN "
        f"CASE WHEN {address} THEN {_json('email has an empty local part once normalized')} "
        f"ELSE {_json('email is not a valid address')} END END"
    )

    # phone: pre-hashed, or what phone_sql decides; else left for ``finish``
    phone = let(strip(fields.get("phone", _ABSENT).text))
    send_phone = _sent(fields, "phone", "send_phone", scope)
    rule = phone_sql(
        phone, default_region=settings.default_phone_region, phone_format=settings.phone_format
    )
    prehashed = let(f"(length({phone}) = 64 AND regexp_full_match({phone}, {_SHA256_HEX}))")
    # phone_sql takes printable ASCII: whitespace inside is left to Python
    decided = let(
        f"({send_phone} AND ({prehashed} OR "
        f"(NOT regexp_matches({phone}, '[^ -~]') AND ({rule.decided}))))"
    )
    phone_hash = let(
        f"CASE WHEN NOT {decided} THEN NULL WHEN {prehashed} THEN lower({phone}) "
        f"ELSE sha256({let(rule.normalized)}) END"
    )

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
        f"WHEN length({advertising_id}) = 64 AND regexp_full_match({advertising_id}, "
        f"{_SHA256_HEX}) THEN {advertising_id} "
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
        f"CASE WHEN {phone_hash} IS NOT NULL THEN {_entry('PHONE_SHA256', phone_hash)} END",
        f"CASE WHEN {id_hash} IS NOT NULL "
        f"THEN concat('\"', {id_type}, '\":\"', {id_hash}, '\"') END",
    ]
    dropped = [
        email_dropped,
        f"CASE WHEN {decided} AND {phone_hash} IS NULL "
        f"THEN {_json('phone is not a valid number')} END",
        id_dropped,
    ]
    where = [
        f"CASE WHEN {f.present} THEN to_json({f.text})::VARCHAR ELSE 'null' END"
        if (f := fields.get(name)) is not None
        else "'null'"
        for name in _WHERE
    ]
    undecided = (
        f"CASE WHEN {send_phone} AND NOT {decided} THEN concat(',\"phone\":', "
        f"to_json({phone})::VARCHAR, ',\"before\":', "
        f"CASE WHEN {email_dropped} IS NULL THEN '0' ELSE '1' END) ELSE '' END"
    )
    where_list = ", ',', ".join(where)
    json = (
        f"concat('{{\"ids\":{{', concat_ws(',', {', '.join(ids)}), '}},\"dropped\":[', "
        f"concat_ws(',', {', '.join(dropped)}), '],\"where\":[', "
        f"{where_list}, ']', {undecided}, '}}')"
    )
    return CompiledDigest(json, finish=_phone_finisher(settings))


def _phone_finisher(settings: Settings) -> Callable[[Any], Any]:
    """What completes a digest whose phone SQL left undecided: ``hash_phone`` of it, the
    hash put after the email's (the order ``user_identifiers`` adds them in), or why it
    was dropped put after the email's reason (``before``: 1 if there is one)."""
    region, phone_format = settings.default_phone_region, settings.phone_format

    def finish(digest: dict[str, Any]) -> dict[str, Any]:
        phone = digest.pop("phone", None)
        if phone is None:
            return digest
        before = digest.pop("before")
        try:
            hashed = hash_phone(phone, default_region=region, phone_format=phone_format)
        except PayloadError as exc:
            digest["dropped"].insert(before, str(exc))
            return digest
        ids = digest["ids"]
        email = ids.pop("EMAIL_SHA256", None)
        rest = dict(ids)
        ids.clear()
        if email is not None:
            ids["EMAIL_SHA256"] = email
        ids["PHONE_SHA256"] = hashed
        ids.update(rest)
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
