"""The webhook's one action, ``post``: batches of mapped payloads POSTed as JSON.

Each event's item is its mapped ``data`` object; the values mapped under ``hashed``
join it as the SHA-256 (lowercase hex) of their trimmed, lowercased text, so contact data
(emails, phones) leaves the process only hashed. ``data`` is for the rest: the default
maps no personal data. A batch goes out as ``{"batch": [item, ...]}``.

A 2xx reply delivers every item, or, when its JSON body holds ``"results"`` (one
``{"ok": bool, "message": str}`` per item, in order), answers each item alone. 429, 5xx
and transport failures are retried with backoff (tenacity); past the last attempt the
run stops as "unavailable" (the events go to the retry file). Any other reply,
redirects included, rejects the batch's items with the status. The secret token, if
any, travels in the ``Authorization`` header only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import requests
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from destination.errors import ApiUnavailableError, RetryableError
from destination.kit.action import Outcome, Prepared
from destination.kit.fields import Field
from destination.kit.settings import Secret

__all__ = ["FIELDS", "POST", "Post", "WebhookClient"]

GROUP = "post"  # every item of a run can share a batch
FIELDS = (
    Field(
        "data",
        "object",
        "What is sent for the event, as it is mapped: no contact data here (see hashed).",
        required=True,
        default={
            "type": {"@path": "$.type"},
            "event": {"@path": "$.event"},
            "messageId": {"@path": "$.messageId"},
        },
    ),
    Field(
        "hashed",
        "object",
        "Values sent as the SHA-256 of their trimmed, lowercased text (emails, phones), "
        "under their keys beside data's.",
        personal_data=True,
    ),
)


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    description: str
    fields: tuple[Field, ...]
    default_subscribe: str


POST = Spec("post", "Post", "POST each batch of mapped payloads to the URL.", FIELDS, "all")


class WebhookClient:
    """POSTs batches to one URL; counts requests; retries what may succeed later."""

    def __init__(
        self,
        url: str,
        *,
        token: Secret | None,
        timeout: float,
        max_attempts: int,
        initial_wait: float,
        sleep: Callable[[float], None],
    ) -> None:
        self._url = url
        self._token = token
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._initial_wait = initial_wait
        self._sleep = sleep
        self._session = requests.Session()
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"WebhookClient({self._url!r})"

    def post(self, items: Sequence[Any]) -> list[Outcome]:
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_attempt(self._max_attempts),
            wait=lambda state: (
                self._initial_wait * 2 ** (state.attempt_number - 1)
                + random.uniform(0, self._initial_wait)
            ),
            sleep=self._sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._post_once(items)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise ApiUnavailableError(
                f"the webhook stayed unavailable ({last}; gave up after "
                f"{exc.last_attempt.attempt_number} attempts)"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _post_once(self, items: Sequence[Any]) -> list[Outcome]:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        self.requests_sent += 1
        try:
            reply = self._session.post(
                self._url,
                data=orjson.dumps({"batch": list(items)}),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # a redirect could lead off loopback
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableError(f"POST failed in transport: {type(exc).__name__}") from None
        if reply.status_code == 429 or reply.status_code >= 500:
            raise RetryableError(f"the webhook answered HTTP {reply.status_code}")
        if not 200 <= reply.status_code < 300:
            why = f"the webhook answered HTTP {reply.status_code}"
            return [Outcome.rejected("webhook_rejected", why)] * len(items)
        return _per_item(reply, len(items))


def _per_item(reply: requests.Response, count: int) -> list[Outcome]:
    """Each item's outcome from a 2xx reply's ``results``, or all delivered."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != count:
        return [Outcome.delivered()] * count
    outcomes = []
    for result in results:
        ok = isinstance(result, dict) and result.get("ok") is True
        message = str(result.get("message", "")) if isinstance(result, dict) else ""
        outcomes.append(
            Outcome.delivered()
            if ok
            else Outcome.rejected("webhook_rejected", message or "refused by the webhook")
        )
    return outcomes


class Post:
    """The ``post`` action: its payload's ``data`` is the item; ``client`` None sends
    nothing (a dry run, or a worker process that only routes)."""

    def __init__(self, client: WebhookClient | None) -> None:
        self._client = client
        self.key = POST.key
        self.title = POST.title
        self.fields = POST.fields

    def digest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The item, ``hashed`` values hashed: pure, so worker processes do it."""
        item = dict(payload["data"])
        for key, value in payload.get("hashed", {}).items():
            if value is not None:
                text = str(value).strip().lower().encode("utf-8", "surrogatepass")
                item[key] = hashlib.sha256(text).hexdigest()
        return item

    def place(self, digest: dict[str, Any]) -> Prepared:
        return Prepared(group=GROUP, item=digest)

    def prepare(self, payload: Mapping[str, Any]) -> Prepared:
        return self.place(self.digest(payload))

    def perform_batch(self, group: Hashable, items: Sequence[Any]) -> list[Outcome]:
        if self._client is None:
            return [Outcome.delivered()] * len(items)
        return self._client.post(items)
