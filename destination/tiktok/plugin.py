"""The TikTok Audiences destination as the runner sees it: a ``Destination`` and the
``Session`` of one run, registered under ``tiktok-audiences`` (entry point ``TIKTOK``).

Opening a session does what a run needs before its first event: the settings resolved
(the token: ``TIKTOK_ACCESS_TOKEN``, else the token store), the token's scopes checked,
the API client built (HTTP, the given backend, or a dry run's), the audience registry,
and every subscription bound to the run's actions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from destination.backends import Backend, DryRunBackend
from destination.errors import ConfigurationError
from destination.kit.action import Subscription
from destination.kit.destination import ActionSpec, MappingFile
from destination.kit.mapping_file import bind
from destination.kit.settings import Secret, Setting
from destination.resources import load_schema
from destination.tiktok.actions import Context, build_action
from destination.tiktok.api import RetryPolicy, TikTokApi, tiktok_backend
from destination.tiktok.audiences import DRY_RUN_PREFIX, AudienceRegistry
from destination.tiktok.auth.provider import check_scopes, stored_entry, token_for_run
from destination.tiktok.auth.store import TokenStore, default_token_store
from destination.tiktok.destination import SCHEMA_FILE, template, warehouse_template
from destination.tiktok.fields import CATALOGUE, MODES, Mode
from destination.tiktok.settings import TIKTOK_SETTINGS, TOKEN_VARIABLE, Settings, access_token

__all__ = ["TIKTOK", "TikTokAudiences", "TikTokRecipe", "TikTokSession"]

NAME = "tiktok-audiences"
_ADDING = frozenset({"addUser", "addToAudience"})
# id type -> the payload field whose value (the hash, taken as pre-hashed) reaches it again
_REPLAY = {
    "EMAIL_SHA256": "email",
    "PHONE_SHA256": "phone",
    "IDFA_SHA256": "advertising_id",
    "AAID_SHA256": "advertising_id",
}


@dataclass(frozen=True)
class TikTokRecipe:
    """What a worker process rebuilds a run's subscriptions from: the mapping file and
    the settings, never the token (a worker only maps, validates and hashes)."""

    mapping: MappingFile
    settings: Settings

    def subscriptions(self) -> Sequence[Subscription]:
        if self.settings.access_token is not None:
            raise ValueError("worker processes must not get the access token")
        context = Context(
            settings=self.settings,
            # never called: a worker neither sends nor creates audiences
            api=TikTokApi(DryRunBackend(), Secret("")),
            registry=AudienceRegistry(
                self.settings.audience_state, namespace=self.settings.base_url, create=None
            ),
        )
        return bind(self.mapping, lambda key: build_action(key, context))


class TikTokSession:
    """One run: the bound subscriptions and what the summary gains from TikTok's side."""

    def __init__(
        self,
        mapping: MappingFile,
        settings: Settings,
        *,
        api: TikTokApi,
        registry: AudienceRegistry,
        dry_run: bool,
    ) -> None:
        self._mapping = mapping
        self._settings = settings
        self._api = api
        self._registry = registry
        self._dry_run = dry_run
        self._context = Context(settings=settings, api=api, registry=registry)
        self._subscriptions = bind(mapping, lambda key: build_action(key, self._context))
        # subscription name -> whether it adds users (what a mirror snapshot records)
        self._adds = {s.name: s.action.key in _ADDING for s in self._subscriptions}

    @property
    def subscriptions(self) -> Sequence[Subscription]:
        return self._subscriptions

    def files_written(self) -> Mapping[str, Path]:
        # a dry run looks at the audience state file but never writes it
        return {} if self._dry_run else {"the audience state file": self._settings.audience_state}

    def worker_recipe(self) -> TikTokRecipe:
        return TikTokRecipe(self._mapping, replace(self._settings, access_token=None))

    def summary(self) -> dict[str, Any]:
        resolved = self._registry.resolved
        # a dry run creates no audience, but a real run would make one call for each
        would_create = sum(a.audience_id.startswith(DRY_RUN_PREFIX) for a in resolved)
        return {
            "requests": self._api.requests_sent + (would_create if self._dry_run else 0),
            "mode": self._mapping.options["mode"],
            "dropped_identifiers": dict(sorted(self._context.dropped.items())),
            "audiences": [
                {
                    "advertiser_id": a.advertiser_id,
                    "key": a.key,
                    "name": a.name,
                    "audience_id": a.audience_id,
                    "created": a.created,
                }
                for a in resolved
            ],
        }

    def stop(self) -> tuple[str, str] | None:
        why = self._api.refusals.verdict()
        return None if why is None else ("configuration", why)

    # -- mirroring a warehouse query (kit.destination.MirroredSession) -----------------

    def mirror_target(self) -> str:
        settings = self._settings
        if self._mapping.options.get("mode") != "legacy":
            raise ConfigurationError(
                f'{self._mapping.source}: a warehouse sync is a legacy-mode file ("mode": '
                '"legacy"): its rows go to the one audience the settings name'
            )
        if not settings.advertiser_id or not settings.audience_id:
            raise ConfigurationError(
                f"{self._mapping.source}: a warehouse sync needs the advertiser_id and "
                "audience_id settings: what the audience holds is recorded per audience"
            )
        return f"tiktok:{settings.advertiser_id}:{settings.audience_id}"

    def identity_tag(self) -> str:
        settings = self._settings
        options = [
            settings.default_phone_region,
            settings.phone_format,
            settings.email_remove_plus_suffix,
            settings.email_remove_dots,
        ]
        return hashlib.sha256(json.dumps(options).encode()).hexdigest()[:16]

    def replay_fields(self, subscription: str, item: Any) -> dict[str, Any] | None:
        if self._adds.get(subscription) is not True or not isinstance(item, dict):
            return None
        fields: dict[str, Any] = {}
        for id_type, field_name in _REPLAY.items():
            if id_type in item:
                fields[field_name] = item[id_type]
        if "IDFA_SHA256" in item:
            fields["device_type"] = "ios"
        elif "AAID_SHA256" in item:
            fields["device_type"] = "android"
        return fields


class TikTokAudiences:
    """The destination: TikTok's mapping files, settings and actions."""

    name = NAME

    @property
    def settings(self) -> Sequence[Setting]:
        return TIKTOK_SETTINGS

    def document_schema(self, settings: Sequence[Setting]) -> Mapping[str, Any]:
        # a file users point "$schema" at; a test keeps its settings part the declared one
        del settings
        return load_schema(SCHEMA_FILE)

    def catalogue(self) -> Mapping[str, ActionSpec]:
        return CATALOGUE

    def template(self, variant: str | None) -> dict[str, Any]:
        if variant == "warehouse":
            return warehouse_template({})
        if variant not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, or warehouse")
        mode: Mode = "legacy" if variant == "legacy" else "native"
        return template(mode, {})

    def open(
        self,
        mapping: MappingFile,
        values: Mapping[str, Any],
        *,
        environ: Mapping[str, str],
        dry_run: bool,
        backend: Backend | None,
    ) -> TikTokSession:
        store = TokenStore(default_token_store(environ))
        # The environment's token wins; the store is not even read when it is set.
        use_store = not dry_run and not environ.get(TOKEN_VARIABLE, "").strip()
        entry = stored_entry(store, environ) if use_store else None
        token, problems = access_token(
            environ, needed=not dry_run and backend is None and entry is None
        )
        if problems:
            raise ConfigurationError("invalid settings: " + "; ".join(problems))
        settings = Settings.from_values(values, token=token)
        if dry_run:
            backend = DryRunBackend()
        elif backend is None:
            backend = tiktok_backend(settings.base_url, timeout=settings.timeout_seconds)
        tokens = token_for_run(
            env_token=settings.access_token,
            entry=entry,
            store=store,
            backend=backend,
            base_url=settings.base_url,
            environ=environ,
        )
        if tokens is not None and not dry_run:
            check_scopes(tokens)
        api = TikTokApi(
            backend,
            tokens or Secret("dry-run"),
            retry=RetryPolicy(
                max_attempts=settings.max_attempts,
                max_seconds=settings.retry_max_seconds,
                initial_wait=settings.retry_initial_wait,
            ),
            # a dry run sends nothing, so nothing needs pacing
            qps=0 if dry_run else settings.qps,
            advertiser_qps=0
            if dry_run
            else settings.qps
            if settings.advertiser_qps is None
            else settings.advertiser_qps,
        )
        registry = AudienceRegistry(
            settings.audience_state,
            namespace=settings.base_url,
            create=None if dry_run else api.create_segment_audience,
        )
        return TikTokSession(mapping, settings, api=api, registry=registry, dry_run=dry_run)


TIKTOK = TikTokAudiences()
