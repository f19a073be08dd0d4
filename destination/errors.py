"""The one exception tree of the project, grouped by what the caller does next.

::

    DestinationError                   base of everything raised on purpose
    ├── ConfigurationError             bad settings or environment: fix and rerun (exit 2)
    ├── InputError                     the events file cannot be read at all (exit 6)
    ├── OutputError                    an output (rejected or retry file, checkpoint) cannot
    │                                  be written: disk full, read-only (exit 7)
    ├── MappingError                   bad mapping file: names file, JSON pointer, expectation
    │                                  (exit 3); raised before any call is made
    ├── PayloadError                   one event's data is unusable: that event is rejected
    │                                  alone, the run goes on
    └── ApiError                       TikTok (or the backend) answered something other than OK
        ├── AuthenticationError        token missing, expired, revoked: stop, re-authorize
        │                              (exit 4)
        ├── RetryableError             rate limit, TikTok-side fault, timeout, 429/5xx:
        │   │                          retried with backoff, bounded
        │   ├── RateLimitError         TikTok's app or advertiser QPS limit: also slow down
        │   └── ApiUnavailableError    retries ran out: stop the run (exit 5), the events
        │                              not delivered go to the retry file
        ├── PermanentError             TikTok refused the request itself (bad parameters,
        │                              no permission, no such object): the batch's events
        │                              are rejected with TikTok's message
        └── MisconfiguredError         TikTok refused a run's first requests all the same way
                                       and accepted none (wrong base URL, advertiser,
                                       audience or mapping): stop the run (exit 2)

Library exceptions (``requests``, ``authlib``, ``jsonschema``) are translated into these
at the boundary with ``raise ... from exc``. Messages never carry tokens, secrets or
unhashed personal data.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "ApiUnavailableError",
    "AuthenticationError",
    "ConfigurationError",
    "DestinationError",
    "InputError",
    "MappingError",
    "MisconfiguredError",
    "OutputError",
    "PayloadError",
    "PermanentError",
    "RateLimitError",
    "RetryableError",
]


class DestinationError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(DestinationError):
    """Settings or environment are wrong; every problem found is in the message."""


class InputError(DestinationError):
    """The events input cannot be opened or read."""


class OutputError(DestinationError):
    """An output file or the state directory cannot be written (full, read-only, gone)."""


class MappingError(DestinationError):
    """A mapping file (or mapping) is invalid.

    ``source`` is the file (or ``<mapping>``), ``pointer`` the RFC 6901 JSON pointer of
    the offending node ("" for the whole document), ``expected`` what should be there.
    """

    def __init__(self, source: str, pointer: str, expected: str) -> None:
        self.source = source
        self.pointer = pointer
        self.expected = expected
        super().__init__(f"{source}: at {pointer or '/'}: {expected}")


class PayloadError(DestinationError):
    """One event cannot be delivered because of its own data.

    ``reason`` is a short code for the rejected file and the summary (``invalid``,
    ``no_identifier``, ``no_audience``, ...); the message says more, without quoting
    personal data.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        self.reason = reason
        super().__init__(message)


class ApiError(DestinationError):
    """TikTok answered with an error (``code`` is the envelope code, 0 if none)."""

    def __init__(
        self, message: str, *, code: int = 0, http_status: int = 0, request_id: str = ""
    ) -> None:
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code {self.code}")
        if self.http_status and self.http_status != 200:
            parts.append(f"HTTP {self.http_status}")
        if self.request_id:
            parts.append(f"request_id {self.request_id}")
        return " | ".join(parts)


class AuthenticationError(ApiError):
    """The token or app credentials are not accepted: the user must re-authorize."""


class RetryableError(ApiError):
    """A transient failure worth retrying later."""


class RateLimitError(RetryableError):
    """TikTok's rate limit: ``per_advertiser`` for the advertiser's QPS, else the app's."""

    def __init__(self, message: str, *, per_advertiser: bool, **kwargs: Any) -> None:
        self.per_advertiser = per_advertiser
        super().__init__(message, **kwargs)


class ApiUnavailableError(RetryableError):
    """A transient failure that outlasted every retry."""


class PermanentError(ApiError):
    """TikTok refused the request; retrying the same request cannot help."""


class MisconfiguredError(ApiError):
    """Every request so far was refused the same way: the settings are wrong, not the data.

    Not a ``PermanentError``: actions reject a batch for those and go on, where this one
    must stop the run."""
