"""The webhook destination: mapped payloads POSTed in batches to a URL on this machine.

Built from the kit alone, registered like TikTok (entry point ``webhook``), and run by
the same ``sync`` command with its own mapping file (``mappings/webhook.json``): useful
for trying a mapping file's subscriptions and mappings against a local receiver, with
the runner's batching, per-event results, rejected and retry files and checkpoints.

It sends payloads as they are mapped, so it sends only to loopback (127.0.0.0/8, ::1,
localhost): unhashed personal data never leaves the machine through it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from urllib3.util import parse_url

from destination.backends import Backend, check_url
from destination.errors import ConfigurationError
from destination.kit.action import Subscription
from destination.kit.destination import ActionSpec, MappingFile
from destination.kit.fields import default_mapping
from destination.kit.mapping_file import bind
from destination.kit.settings import Secret, Setting, schema_of
from destination.webhook.post import POST, Post, WebhookClient

__all__ = ["NAME", "WEBHOOK", "Webhook", "WebhookSession"]

NAME = "webhook"
TOKEN_VARIABLE = "WEBHOOK_TOKEN"  # noqa: S105 (a variable name)


def _loopback_url(value: Any) -> str:
    """The URL rebuilt by the project's URL check, to a loopback host only."""
    url = check_url(str(value), name="url", path=True)
    host = parse_url(url).host or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"url {url!r} is not on this machine: the webhook sends payloads as they are "
            "mapped, so only to 127.0.0.0/8, ::1 or localhost"
        )
    return url


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "url",
        "string",
        "Where batches are POSTed: a URL on this machine (http or https to loopback).",
        env="WEBHOOK_URL",
        check=_loopback_url,
    ),
    Setting(
        "timeout_seconds",
        "number",
        "HTTP timeout per request.",
        default=10.0,
        above=0,
        maximum=600,
    ),
    Setting(
        "max_attempts",
        "integer",
        "Tries per batch when the webhook answers 429 or 5xx or cannot be reached.",
        default=3,
        minimum=1,
        maximum=20,
    ),
    Setting(
        "retry_initial_wait",
        "number",
        "First backoff in seconds, doubling, with jitter.",
        default=0.5,
        minimum=0,
        maximum=60,
    ),
)


@dataclass(frozen=True)
class Knobs:
    batch_size: int
    concurrency: int
    workers: int | str
    route: str
    max_event_bytes: int


@dataclass(frozen=True)
class WebhookRecipe:
    """What a worker rebuilds the subscriptions from: the mapping file (no URL, no token)."""

    mapping: MappingFile

    def subscriptions(self) -> Sequence[Subscription]:
        return bind(self.mapping, lambda _key: Post(None))


class WebhookSession:
    def __init__(self, mapping: MappingFile, knobs: Knobs, client: WebhookClient | None) -> None:
        self._mapping = mapping
        self._client = client
        self._subscriptions = bind(mapping, lambda _key: Post(client))
        self.knobs = knobs

    @property
    def subscriptions(self) -> Sequence[Subscription]:
        return self._subscriptions

    def files_written(self) -> Mapping[str, Path]:
        return {}

    def worker_recipe(self) -> WebhookRecipe:
        return WebhookRecipe(self._mapping)

    def summary(self) -> dict[str, Any]:
        return {"requests": 0 if self._client is None else self._client.requests_sent}

    def stop(self) -> tuple[str, str] | None:
        return None


class Webhook:
    """The destination: one action, four settings of its own."""

    name = NAME
    settings = SETTINGS

    def document_schema(self, settings: Sequence[Setting]) -> Mapping[str, Any]:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "A webhook mapping file",
            "type": "object",
            "required": ["destination", "subscriptions"],
            "additionalProperties": False,
            "properties": {
                "$schema": {"type": "string"},
                "destination": {"const": NAME},
                "settings": schema_of(settings),
                "subscriptions": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "action", "subscribe"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "action": {"enum": [POST.key]},
                            "subscribe": {"type": "string", "minLength": 1},
                            "enabled": {"type": "boolean"},
                            "mapping": {"type": "object"},
                        },
                    },
                },
            },
        }

    def catalogue(self) -> Mapping[str, ActionSpec]:
        return {POST.key: POST}

    def template(self, variant: str | None) -> dict[str, Any]:
        if variant is not None:
            raise ValueError("the webhook has no modes: leave out --mode")
        return {
            "destination": NAME,
            "settings": {"url": "http://127.0.0.1:9000/events"},
            "subscriptions": [
                {
                    "name": "Everything",
                    "action": POST.key,
                    "subscribe": POST.default_subscribe,
                    "enabled": True,
                    "mapping": default_mapping(POST.fields),
                }
            ],
        }

    def open(
        self,
        mapping: MappingFile,
        values: Mapping[str, Any],
        *,
        environ: Mapping[str, str],
        dry_run: bool,
        backend: Backend | None,
    ) -> WebhookSession:
        del backend  # the webhook speaks plain HTTP to its own URL
        if values["url"] is None:
            raise ConfigurationError(
                "invalid settings: no url: set the mapping file's settings.url or WEBHOOK_URL"
            )
        token = environ.get(TOKEN_VARIABLE, "").strip()
        client = (
            None
            if dry_run
            else WebhookClient(
                values["url"],
                token=Secret(token) if token else None,
                timeout=values["timeout_seconds"],
                max_attempts=values["max_attempts"],
                initial_wait=values["retry_initial_wait"],
                sleep=time.sleep,
            )
        )
        knobs = Knobs(
            batch_size=values["batch_size"],
            concurrency=values["concurrency"],
            workers=values["workers"],
            route=values["route"],
            max_event_bytes=values["max_event_bytes"],
        )
        return WebhookSession(mapping, knobs, client)


WEBHOOK = Webhook()
