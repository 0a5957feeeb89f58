"""A value that a JSON Schema takes, made up: what the mock provider answers with for tool call
arguments and for ``response_format`` JSON (``json_schema``, strict or not).

It follows what OpenAI's structured outputs and pydantic schemas use: types (or a list of them),
``required`` properties, ``enum`` / ``const``, arrays (``minItems`` / ``maxItems``), nested
objects, ``$ref`` into ``$defs`` / ``definitions``, ``anyOf`` / ``oneOf`` / ``allOf``, string
formats and lengths, number bounds. ``variant`` makes the n choices of one answer differ where
the schema leaves room. What a client's schema holds that is not a schema counts as absent, and
a schema whose value would be too big (or would never end) is the caller's 400.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.providers.shapes import untranslatable

MAX_VALUE_NODES = 10_000
MAX_DEPTH = 32
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def example_arguments(schema: dict, *, variant: int = 0) -> dict:
    """Plausible arguments for a parameters schema: every required property, simply filled."""
    if not isinstance(schema, dict):
        schema = {}
    return example_value({**schema, "type": "object"}, variant=variant)


def example_value(schema, *, variant: int = 0, root: dict | None = None) -> Any:
    """A value ``schema`` takes; ``root``: the schema its ``$ref``s point into (itself if None)."""
    root = root if isinstance(root, dict) else schema if isinstance(schema, dict) else {}
    return _Maker(root, variant).value(schema, 0)


class _Maker:
    def __init__(self, root: dict, variant: int) -> None:
        definitions = root.get("$defs") or root.get("definitions")
        self.definitions = definitions if isinstance(definitions, dict) else {}
        self.variant = variant
        self.nodes = 0

    def value(self, schema, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_VALUE_NODES or depth > MAX_DEPTH:
            raise untranslatable(f"the JSON schema's smallest value nests deeper than {MAX_DEPTH} levels or holds "
                                 f"more than {MAX_VALUE_NODES} values", param="response_format")
        if not isinstance(schema, dict):
            return "example"
        if isinstance(schema.get("$ref"), str):
            definition = self.definitions.get(schema["$ref"].rsplit("/", 1)[-1])
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            return self.value({**(definition if isinstance(definition, dict) else {}), **siblings}, depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[self.variant % len(enum)]
        for keyword in ("anyOf", "oneOf", "allOf"):
            variants = schema.get(keyword)
            if isinstance(variants, list) and variants:
                # The first variant that is not null: what a model fills an Optional field with.
                chosen = next((v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")),
                              variants[0])
                rest = {key: value for key, value in schema.items() if key != keyword}
                if isinstance(chosen, dict):
                    return self.value({**rest, **chosen}, depth + 1)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return int(_bounded(schema, 1 + self.variant, whole=True))
        if kind == "number":
            return _bounded(schema, 1.5 + self.variant, whole=False)
        if kind == "boolean":
            return self.variant % 2 == 0
        if kind == "null":
            return None
        return self._string(schema)

    def _object(self, schema: dict, depth: int) -> dict:
        properties, required = schema.get("properties"), schema.get("required")
        if not isinstance(properties, dict) or not isinstance(required, list):
            return {}
        return {name: self.value(properties[name], depth + 1) for name in required
                if isinstance(name, str) and name in properties}

    def _array(self, schema: dict, depth: int) -> list:
        low, high = _int_or(schema.get("minItems"), 0), _int_or(schema.get("maxItems"), None)
        # One item, as a model would write, where the schema allows it.
        count = max(low, 1) if high is None else min(max(low, 1), high)
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = schema.get("items")
        return [self.value(prefix[position] if position < len(prefix) else items, depth + 1)
                for position in range(count)]

    def _string(self, schema: dict) -> str:
        text = _FORMATS.get(schema.get("format"), "example" if not self.variant else f"example {self.variant + 1}")
        low, high = _int_or(schema.get("minLength"), 0), _int_or(schema.get("maxLength"), None)
        if len(text) < low:
            text += "x" * (low - len(text))
        return text if high is None else text[:high]


def _kind(schema: dict) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((name for name in kind if isinstance(name, str) and name.lower() != "null"),
                    "null" if kind else None)
    if not isinstance(kind, str):
        return "object" if isinstance(schema.get("properties"), dict) else "string"
    # Type names are case-insensitive: OpenAPI-style schemas spell them in upper case.
    return kind.lower()


def _int_or(value, default):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _bounded(schema: dict, value: float, *, whole: bool) -> float:
    numbers = {key: schema[key] for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
               if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool)}
    step = 1 if whole else 0.5
    if "minimum" in numbers:
        value = max(value, numbers["minimum"])
    if "exclusiveMinimum" in numbers and value <= numbers["exclusiveMinimum"]:
        value = numbers["exclusiveMinimum"] + step
    if "maximum" in numbers:
        value = min(value, numbers["maximum"])
    if "exclusiveMaximum" in numbers and value >= numbers["exclusiveMaximum"]:
        value = numbers["exclusiveMaximum"] - step
    if whole:
        value = math.ceil(value) if "minimum" in numbers or "exclusiveMinimum" in numbers else math.floor(value)
    return value
