"""JSON Schema validation: validators built once, every error reported, sorted by path.

Two uses:

- ``DocumentValidator`` checks a whole document (a mapping file) and raises one
  ``MappingError`` naming the file, the JSON pointer of the first bad node, what was
  expected there, and how many other problems were found.
- ``PayloadValidator`` checks one mapped payload and returns short reasons that name
  the field and the rule but never quote the value (a payload holds personal data);
  ``PayloadValidators`` builds one per distinct schema, for subscriptions bound together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from destination.errors import MappingError

__all__ = ["DocumentValidator", "PayloadValidator", "PayloadValidators", "json_pointer"]


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path such as ``("subscriptions", 0, "mapping")``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _sorted_errors(validator: Draft202012Validator, instance: Any) -> list[ValidationError]:
    return sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])


class DocumentValidator:
    """Validates documents against one schema; raises ``MappingError`` on the first error."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)

    def check(self, document: Any, *, source: str) -> None:
        errors = _sorted_errors(self._validator, document)
        if not errors:
            return
        # Deepest, most specific error first: an "anyOf" failure says less than its causes.
        first = best_match(errors)
        while first.context:
            first = best_match(first.context)
        others = [e for e in errors if e is not first]
        expected = _document_expectation(first)
        if others:
            rest = "; ".join(
                f"{json_pointer(e.absolute_path) or '/'}: {_document_expectation(e)}"
                for e in others[:5]
            )
            expected += f" (and {len(others)} more: {rest})"
        raise MappingError(source, json_pointer(first.absolute_path), expected)


def _document_expectation(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return f"{error.message}; allowed: {', '.join(allowed)}"
    if error.validator == "enum":
        options = list(schema.get("enum", []))
        return f"one of {', '.join(repr(o) for o in options)}, got {error.instance!r}"
    if error.validator == "const":
        return f"{schema.get('const')!r}, got {error.instance!r}"
    return error.message


class PayloadValidator:
    """Validates mapped payloads of one action.

    The schema is compiled twice: by ``fastjsonschema`` into plain Python (about a
    microsecond a payload, the hot path) and by ``jsonschema``, which only runs for a
    payload the first found invalid, to list every problem without quoting values.
    Payload schemas use keywords that mean the same in drafts 7 and 2020-12.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)
        self._fast = fastjsonschema.compile({k: v for k, v in schema.items() if k != "$schema"})

    def problems(self, payload: Mapping[str, Any]) -> list[str]:
        """Reasons the payload is invalid (empty when valid); values are never quoted."""
        try:
            self._fast(payload)
        except fastjsonschema.JsonSchemaException:
            return [_payload_reason(e) for e in _sorted_errors(self._validator, payload)]
        return []


class PayloadValidators:
    """``PayloadValidator``s built once per distinct schema and shared.

    Building one is costly (jsonschema checks the schema, fastjsonschema generates and
    compiles code, and both keep what they made), while every subscription of an action
    has the same schema: a mapping file with thousands of subscriptions needs a few.
    Validators hold no per-payload state, so sharing one is safe.
    """

    def __init__(self) -> None:
        self._built: dict[str, PayloadValidator] = {}

    def get(self, schema: Mapping[str, Any]) -> PayloadValidator:
        """The validator of ``schema``: built on first use, then the same object."""
        key = json.dumps(schema, sort_keys=True)  # equal schemas, equal keys
        validator = self._built.get(key)
        if validator is None:
            validator = self._built[key] = PayloadValidator(schema)
        return validator


def _payload_reason(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "payload"
    rule = error.validator
    if rule == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "a field"
        return f"missing required field {missing}"
    if rule == "additionalProperties":
        return f"{where} has fields the action does not declare"
    if rule == "type":
        return f"{where} must be of type {error.validator_value}"
    if rule == "enum" and isinstance(error.validator_value, list):
        return f"{where} must be one of {', '.join(map(str, error.validator_value))}"
    if rule in ("minLength", "maxLength"):
        return f"{where} violates {rule} {error.validator_value}"
    return f"{where} fails the {rule} rule"
