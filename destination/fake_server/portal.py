"""The fake TikTok's consent page: HTML only, no state (``FakeTikTok`` decides).

TikTok's real page (``/portal/auth``) asks a signed-in user whether to let an app manage
their advertisers. The fake shows the app, the advertisers and the scopes, and two forms
that post the decision back to ``/portal/auth``: **Approve** and **Deny**. Everything a
request supplied is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PortalReply", "consent_html", "error_html"]

SCOPE_NAMES = {
    30: "Read custom audiences",
    31: "Create and update custom audiences",
    32: "Share custom audiences",
}


@dataclass(frozen=True)
class PortalReply:
    """An HTTP answer of the portal: a page (``html``) or a redirect (``location``)."""

    status: int
    html: str = ""
    location: str | None = None


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title></head><body>{body}</body></html>"
    )


def consent_html(
    *,
    app_id: str,
    app_name: str,
    redirect_uri: str,
    state: str,
    advertisers: Sequence[tuple[str, str]],
    scopes: Sequence[int],
) -> str:
    """The consent page: what is asked, and the Approve / Deny forms."""
    hidden = "".join(
        f"<input type='hidden' name='{name}' value='{escape(value, quote=True)}'>"
        for name, value in (("app_id", app_id), ("redirect_uri", redirect_uri), ("state", state))
    )
    accounts = "".join(
        f"<li>{escape(name)} ({escape(advertiser_id)})</li>" for advertiser_id, name in advertisers
    )
    permissions = "".join(
        f"<li>{scope}: {escape(SCOPE_NAMES.get(scope, 'other'))}</li>" for scope in scopes
    )
    forms = "".join(
        f"<form method='post' action='/portal/auth' style='display:inline'>{hidden}"
        f"<button type='submit' name='decision' value='{value}' id='{value}'>{label}</button>"
        "</form>"
        for value, label in (("approve", "Approve"), ("deny", "Deny"))
    )
    return _page(
        "Authorize app - fake TikTok For Business",
        f"<h1>{escape(app_name)} wants to manage your TikTok advertisers</h1>"
        f"<p>App id {escape(app_id)}. It will be able to:</p><ul>{permissions}</ul>"
        f"<p>For these advertiser accounts:</p><ul>{accounts}</ul>"
        f"<p>You will be sent back to {escape(redirect_uri)}</p>{forms}",
    )


def error_html(message: str) -> str:
    return _page(
        "Authorization error - fake TikTok", f"<h1>Cannot authorize</h1><p>{escape(message)}</p>"
    )
