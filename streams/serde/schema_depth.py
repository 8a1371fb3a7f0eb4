"""How deep the data of an Avro writer schema can nest, checked before fastavro sees it.

fastavro parses schemas and decodes data by recursion in compiled code, which has no
recursion limit: a schema nested thousands deep, or a recursive record (a linked list)
with data nested thousands deep, overflows the C stack (a segfault, not an exception).
Event schemas nest a few levels and never refer to themselves, so a container whose
writer schema does either is refused before fastavro parses it.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_SCHEMA_DEPTH", "UnsafeSchema", "check_schema_depth"]

# JSON nesting of the schema text, and nesting of the types it describes (references by
# name included). The event union nests 6 levels of JSON and 3 of types.
MAX_SCHEMA_DEPTH = 100

_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_NAMED = frozenset({"record", "error", "enum", "fixed"})
# A JSON string (skipped whole, brackets and all) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class UnsafeSchema(ValueError):
    """A writer schema whose data could nest deeper than `MAX_SCHEMA_DEPTH`."""


def check_schema_depth(schema_text: str) -> Any:
    """The parsed JSON of `schema_text`; raises UnsafeSchema when it nests too deep or a
    named type contains itself, ValueError when it is not JSON."""
    if _json_depth(schema_text) > MAX_SCHEMA_DEPTH:
        raise UnsafeSchema(f"its JSON is nested deeper than {MAX_SCHEMA_DEPTH} levels")
    schema = json.loads(schema_text)
    _TypeDepth().of(schema, "")
    return schema


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, without recursion; stops
    counting past the limit."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in {"[", "{"}:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_SCHEMA_DEPTH:
                    break
        elif token in {"]", "}"}:
            depth -= 1
    return deepest


class _TypeDepth:
    """The nesting of the types of a schema, named types expanded (each once, by name).

    Recursion follows the JSON, which is at most MAX_SCHEMA_DEPTH deep; a reference by
    name takes the depth already worked out for that name (Avro defines a name before
    any use of it), so a chain of references costs no recursion.
    """

    def __init__(self) -> None:
        self.done: dict[str, int] = {}
        self.open: set[str] = set()

    def of(self, schema: Any, namespace: str) -> int:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            return self._deeper(max((self.of(branch, namespace) for branch in schema), default=0))
        if not isinstance(schema, dict):
            return 0
        kind = schema.get("type")
        if kind in _NAMED:
            return self._named(schema, kind, namespace)
        if kind == "array":
            return self._deeper(self.of(schema.get("items"), namespace))
        if kind == "map":
            return self._deeper(self.of(schema.get("values"), namespace))
        return self.of(kind, namespace)

    def _named(self, schema: dict[str, Any], kind: str, namespace: str) -> int:
        name = str(schema.get("name", ""))
        if "." in name:
            namespace = name.rsplit(".", 1)[0]
        else:
            namespace = str(schema.get("namespace", namespace) or "")
            name = f"{namespace}.{name}" if namespace else name
        if kind in ("enum", "fixed"):
            self.done[name] = 0
            return 0
        self.open.add(name)
        fields = schema.get("fields")
        depth = self._deeper(max(
            (self.of(field.get("type"), namespace) for field in fields
             if isinstance(field, dict)),
            default=0,
        ) if isinstance(fields, list) else 0)
        self.open.discard(name)
        self.done[name] = depth
        return depth

    def _reference(self, name: str, namespace: str) -> int:
        if name in _PRIMITIVES:
            return 0
        candidates = (name,) if "." in name or not namespace else (f"{namespace}.{name}", name)
        for candidate in candidates:
            if candidate in self.open:
                raise UnsafeSchema(f"record {candidate!r} contains itself, so its data "
                                   "can nest without bound")
            if candidate in self.done:
                return self.done[candidate]
        return 0  # not defined before: fastavro refuses the schema

    @staticmethod
    def _deeper(depth: int) -> int:
        if depth + 1 > MAX_SCHEMA_DEPTH:
            raise UnsafeSchema(f"its types nest deeper than {MAX_SCHEMA_DEPTH} levels")
        return depth + 1
