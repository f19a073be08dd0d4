"""The ``@liquid`` directive: Liquid templates, sandboxed as Segment sandboxes them.

Segment renders ``@liquid`` with liquidjs; this module uses python-liquid (2.x), the
maintained Python engine for the same language, with Segment's restrictions: the tags
that loop or load other templates and the array filters Segment disables are not there,
a template has at most ``MAX_TEMPLATE_LENGTH`` characters, and what one render may build
(its output, its assigned and captured values) is capped at Segment's 100 MB. Without
loops a render's time is bounded by its template and that cap (python-liquid has no
clock-based limit).

Templates are parsed once, when the mapping is compiled: a syntax error, a disabled tag
or an unknown or disabled filter is an error then, not on every event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from liquid import Environment
from liquid.exceptions import LiquidError

__all__ = ["MAX_TEMPLATE_LENGTH", "LiquidTemplateError", "compile_liquid"]

MAX_TEMPLATE_LENGTH: Final = 1000
"""Segment's limit on an ``@liquid`` template, in characters."""

_RENDER_LIMIT: Final = 100_000_000  # liquidjs' memoryLimit in Segment (1e8)

DISABLED_TAGS: Final = frozenset({"case", "for", "include", "layout", "render", "tablerow"})
DISABLED_FILTERS: Final = frozenset(
    {
        "array_to_sentence_string",
        "concat",
        "find",
        "find_exp",
        "find_index",
        "find_index_exp",
        "group_by",
        "group_by_exp",
        "has",
        "has_exp",
        "map",
        "newline_to_br",
        "reject",
        "reject_exp",
        "reverse",
        "sort",
        "sort_natural",
        "uniq",
        "where_exp",
        "type",
    }
)


class LiquidTemplateError(ValueError):
    """A template that does not parse or uses what the sandbox leaves out."""


class _Sandbox(Environment):
    """Liquid without the tags and filters Segment disables, with its size limits."""

    output_stream_limit = _RENDER_LIMIT
    local_namespace_limit = _RENDER_LIMIT

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        for tag in DISABLED_TAGS:
            self.tags.pop(tag, None)
        for name in DISABLED_FILTERS:
            self.filters.pop(name, None)


_ENVIRONMENT: Final = _Sandbox()


def compile_liquid(source: str) -> Callable[[Any], str | None]:
    """A renderer for ``source`` (the root must be an object: others render as ``{}``),
    or ``LiquidTemplateError``. The renderer returns None when a render fails (a limit
    reached), so that applying a mapping never raises."""
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise LiquidTemplateError(
            f"a Liquid template of at most {MAX_TEMPLATE_LENGTH} characters, "
            f"got {len(source)} characters"
        )
    try:
        template = _ENVIRONMENT.from_string(source)
        filters = template.filter_names()
    except LiquidError as error:
        raise LiquidTemplateError(f"a valid Liquid template: {_first_line(error)}") from None
    for name in filters:
        if name in DISABLED_FILTERS:
            raise LiquidTemplateError(f"a Liquid template without the disabled filter {name!r}")
        if name not in _ENVIRONMENT.filters:
            raise LiquidTemplateError(f"a Liquid template with known filters, got {name!r}")

    def render(root: Any) -> str | None:
        try:
            return template.render(root if isinstance(root, Mapping) else {})
        except (LiquidError, ArithmeticError, ValueError, TypeError, RecursionError):
            return None

    return render


def _first_line(error: LiquidError) -> str:
    """The message without python-liquid's source excerpt (it may be long)."""
    return str(error).splitlines()[0]
