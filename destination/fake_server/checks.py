"""What every endpoint of the fake TikTok shares: its errors, its replies, its checks.

A handler raises ``Rejected`` (an error envelope: TikTok's code, message and HTTP status)
or ``Partial`` (code 20001, carried out except for some rows); ``envelope`` builds the
reply ``{"code", "message", "request_id", "data"}`` that TikTok sends, in HTTP 200 for
API-level errors. The small checks of a request's body and query string live here so
that each endpoint says what it needs in one line, and each refusal reads the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from destination.backends import ApiRequest, ApiResponse

__all__ = [
    "Partial",
    "Rejected",
    "bad",
    "body_object",
    "clip",
    "envelope",
    "int_param",
    "nonempty_strings",
    "normalize_path",
    "required_param",
    "required_str",
    "short",
]


class Partial(Exception):
    """The request was carried out except for some rows: answer 20001 with ``data``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        super().__init__("partial success")


class Rejected(Exception):
    """Raised inside request handling; becomes an error envelope (nothing was changed)."""

    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


def bad(message: str) -> Rejected:
    """TikTok's answer to a malformed request: 40002 with what is wrong."""
    return Rejected(40002, message)


def envelope(
    request_id: str,
    code: int = 0,
    message: str = "OK",
    data: Mapping[str, Any] | None = None,
    http_status: int = 200,
) -> ApiResponse:
    """TikTok's reply: the envelope as the body, its start as the text (for logs)."""
    body = {
        "code": code,
        "message": message,
        "request_id": request_id,
        "data": dict(data) if data is not None else {},
    }
    return ApiResponse(status=http_status, body=body, text=json.dumps(body)[:500])


def normalize_path(path: str) -> str:
    """``/segment/mapping/`` and ``segment/mapping`` name the same endpoint."""
    return path.strip("/")


def clip(text: str) -> str:
    """A client-supplied id, shortened for an error message."""
    return text if len(text) <= 40 else text[:37] + "..."


def short(value: object) -> str:
    """Describe a client-supplied value for an error message, briefly."""
    return clip(repr(value))


def nonempty_strings(value: object) -> TypeGuard[list[str]]:
    """Whether ``value`` is a non-empty list of non-empty strings."""
    if not isinstance(value, list) or not value:
        return False
    for item in value:  # noqa: SIM110 (all() over a generator: twice the cost, per entry)
        if not isinstance(item, str) or not item:
            return False
    return True


def body_object(request: ApiRequest) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    body = request.json
    if not isinstance(body, dict):
        raise bad("Invalid JSON body: expected a JSON object")
    return body


def required_str(body: Mapping[str, Any], name: str) -> str:
    """A body field that must be a non-empty string."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise bad(f"{name} is required and must be a non-empty string")
    return value


def required_param(request: ApiRequest, name: str) -> str:
    """A query parameter that must be present and not empty."""
    value = request.params.get(name)
    if value is None or str(value) == "":
        raise bad(f"{name} is required")
    return str(value)


def int_param(request: ApiRequest, name: str, *, default: int, maximum: int | None) -> int:
    """An optional whole-number query parameter, at least 1 (and at most ``maximum``)."""
    raw = request.params.get(name)
    if raw is None:
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise bad(f"{name} must be an integer") from None
    if value < 1 or (maximum is not None and value > maximum):
        limit = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise bad(f"{name} must be {limit}, got {value}")
    return value
