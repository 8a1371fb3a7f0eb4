"""The correlate topic's record format: an event the route stage has already validated.

The route stage decodes and validates every input record (Avro); what it forwards to
the correlate stage is the event's values, so the correlate stage rebuilds the event
without a second Avro decode and validation (about 6 µs a record, a tenth of the
worker's time per event).

A relayed record is `RELAY_MAGIC` then `marshal.dumps((type, field values in order))`.
The topic is internal: only the route stage writes it and only the correlate stage
reads it, both from this module, so a compact Python-only encoding is fine there.
marshal builds only plain values (never runs code), and `decode_relayed` checks the
shape and the types of what it built: a damaged record becomes an `InvalidEvent`, not a crash.
Records in the Avro single-object encoding (what route stages before this format
forwarded) are still read by the correlate stage, through the usual framing.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from streams.errors import InvalidEvent
from streams.model.event_values import VALUES_CHECKS
from streams.model.events import EVENT_MAKERS, EVENT_TYPES, Event

__all__ = ["RELAY_MAGIC", "decode_relayed", "encode_relayed", "is_relayed"]

# Neither the Avro single-object marker (C3 01) nor the watermark marker (00 'c').
RELAY_MAGIC = b"\x00E1"
_MAGIC_LENGTH = len(RELAY_MAGIC)
# marshal's format version: 4 since Python 3.4, read by every later version
_MARSHAL_VERSION = 4

# The type name and the field values in one C call (what `EVENT_VALUES` gives, led by
# the name); and, by type name, how many items a record of that type has.
_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    cls: attrgetter("TYPE", *(f.name for f in fields(cls))) for cls in EVENT_TYPES.values()
}
_LENGTHS: dict[str, int] = {name: len(fields(cls)) + 1 for name, cls in EVENT_TYPES.items()}


def is_relayed(value: bytes | None) -> bool:
    return value is not None and value[:_MAGIC_LENGTH] == RELAY_MAGIC


def encode_relayed(event: Event) -> bytes:
    return RELAY_MAGIC + marshal.dumps(_VALUES[type(event)](event), _MARSHAL_VERSION)


def decode_relayed(value: bytes) -> Event:
    """The event of a relayed record; InvalidEvent when the record is damaged."""
    try:
        items = marshal.loads(memoryview(value)[_MAGIC_LENGTH:])
    except (EOFError, ValueError, TypeError):
        raise InvalidEvent("bad_relay", "the relayed record cannot be read") from None
    if type(items) is not tuple or not items:
        raise InvalidEvent("bad_relay", "the relayed record is not an event")
    name = items[0]
    if type(name) is not str or _LENGTHS.get(name) != len(items):
        raise InvalidEvent("bad_relay", "the relayed record is not an event of the contract")
    values = items[1:]
    if not VALUES_CHECKS[name](values):
        # Rebuilt without the validator: a value of another type would reach the state,
        # and its changelog could then not be read back (`state_codec`).
        raise InvalidEvent("bad_relay", "the relayed record's values are not of the "
                           "contract's types")
    return EVENT_MAKERS[name](*values)
