"""A small JSON Schema subset: one schema both validates request bodies and documents them.

The REST API declares each body as a JSON Schema (OpenAPI 3.1 uses JSON Schema 2020-12), and
:func:`validate` checks a parsed body against it, returning the first violation as
``(field path, rule)`` so the 422 answer can name both. Supported keywords: ``type`` (object,
number, integer, boolean, string, array, null, or a list), ``properties``, ``required``,
``additionalProperties: false``, ``minimum``/``maximum``, ``enum``, ``pattern``, ``items``,
``minItems``/``maxItems``, ``oneOf``/``anyOf``. Numbers must be finite (JSON has no NaN; Python's
parser accepts it, this does not).
"""

from __future__ import annotations

import math
import re
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and math.isfinite(v) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


class SchemaError(ValueError):
    def __init__(self, field: str, rule: str):
        super().__init__(f"{field or 'body'}: {rule}")
        self.field = field or "body"
        self.rule = rule


def validate(value: Any, schema: dict, path: str = "") -> None:
    """Raise :class:`SchemaError` naming the first field that breaks ``schema``."""
    for key in ("oneOf", "anyOf"):
        if key in schema:
            errors = []
            ok = 0
            for sub in schema[key]:
                try:
                    validate(value, sub, path)
                    ok += 1
                except SchemaError as e:
                    errors.append(e)
            if ok == 0 or (key == "oneOf" and ok > 1):
                # one branch of the value's own type: its error is the useful one
                typed = [e for sub, e in zip(schema[key], errors)
                         if "type" in sub and _TYPES[sub["type"]](value)] if ok == 0 else []
                if len(typed) > 1 and isinstance(value, dict):
                    # objects told apart by their required fields: the branch whose fields are here
                    typed = [e for sub, e in zip(schema[key], errors)
                             if sub.get("type") == "object" and set(sub.get("required", ())) <= set(value)]
                if len(typed) == 1:
                    raise typed[0]
                what = " or ".join(_describe(s) for s in schema[key])
                raise SchemaError(path, f"must be {what}")
            return
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_TYPES[x](value) for x in types):
            raise SchemaError(path, f"must be {' or '.join(_article(x) for x in types)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(path, "must be a finite number")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(path, f"must be one of {', '.join(map(repr, schema['enum']))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"must be >= {schema['minimum']:g}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"must be <= {schema['maximum']:g}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):   # JSON Schema: a search
            raise SchemaError(path, f"must match {schema['pattern']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"must be at most {schema['maxLength']} characters")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(path, f"needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"takes at most {schema['maxItems']} items")
        if "items" in schema:
            for j, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{j}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(_join(path, name), "is required")
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in props:
                    raise SchemaError(_join(path, name),
                                      f"is not a known field (known: {', '.join(props) or 'none'})")
        for name, sub in props.items():
            if name in value:
                validate(value[name], sub, _join(path, name))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _article(t: str) -> str:
    return {"object": "an object", "array": "an array", "integer": "an integer",
            "null": "null"}.get(t, f"a {t}")


def _describe(s: dict) -> str:
    t = s.get("type", "a value")
    if t == "object" and s.get("required"):
        return "an object with " + " and ".join(repr(r) for r in s["required"])
    if isinstance(t, list):
        return " or ".join(_article(x) for x in t)
    if t == "string" and "pattern" in s:
        return f"a string like {s.get('examples', [s['pattern']])[0]!r}"
    return _article(t)
