"""Whether a tuple is the field values of an event of the contract, by exact type.

An event travels as its values where the process trusts its own writing: the relay
between the worker's stages (`streams.serde.relay`) and the engine's state in its
changelog (`streams.state.state_codec`). Both rebuild events by position without the
validator, so both check the values' types first: a damaged or forged record becomes
an error there, never an event the engine or a later state decode would trip over.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import fields

from streams.model.events import EVENT_TYPES, Event

__all__ = ["VALUES_CHECKS", "only", "values_check"]

_NONE = type(None)
_TEXT: frozenset[type] = frozenset({str})
# An event field's annotation -> the types its value may have (a tuple's items are str).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "str | None": (str, _NONE), "int": (int,), "int | None": (int, _NONE),
    "bool": (bool,), "tuple[str, ...]": (tuple,),
}


def only(items: Iterable[object], types: frozenset[type]) -> bool:
    """Every item is exactly of one of `types` (one C loop, no call per item)."""
    return set(map(type, items)) <= types


def values_check(cls: type[Event]) -> Callable[[object], bool]:
    """Whether a value is the field values of a `cls` event (what EVENT_VALUES gives)."""
    # A field of a type not listed above fails at import: the check knows every field.
    choices = [_FIELD_TYPES[str(field.type)] for field in fields(cls)]
    signatures = frozenset(itertools.product(*choices))  # every optional field: 2 choices
    texts = tuple(index for index, types in enumerate(choices) if types == (tuple,))

    def check(values: object) -> bool:
        return (type(values) is tuple and tuple(map(type, values)) in signatures
                and all(only(values[index], _TEXT) for index in texts))

    return check


# By event type name.
VALUES_CHECKS: dict[str, Callable[[object], bool]] = {
    name: values_check(cls) for name, cls in EVENT_TYPES.items()}
