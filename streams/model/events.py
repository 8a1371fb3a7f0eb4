"""The seven events of the contract (spec: "Events"), as immutable records.

Their schemas in `schemas/` are the contract: the validator follows them
(`streams.model.contract`), and `tests/test_contract.py` checks these classes
against them (fields and order, types, optional fields, enum symbols in the
comments, no defaults).

Timestamps are epoch milliseconds (UTC). Optional fields are `None` when absent.
Category lists are tuples so an event stays hashable and immutable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

__all__ = [
    "EVENT_MAKERS",
    "EVENT_TYPES",
    "EVENT_VALUES",
    "TRIGGER_TYPES",
    "ConsentChanged",
    "EnrichmentMatched",
    "EnrichmentRequested",
    "Event",
    "FeatureToggled",
    "NoticeDelivered",
    "ParticipantJoined",
    "ProfileViewed",
    "fast_constructor",
]

_T = TypeVar("_T")


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor equal to `cls(*fields)`, for a frozen slotted dataclass.

    The `__init__` of a frozen dataclass sets every field through
    `object.__setattr__` (about 0.07 us a field: 0.7 us an event, on every record
    of every input). This builds the instance as a mutable twin class with the very
    same slots (plain stores), then retypes it to `cls`: `__class__` assignment is
    allowed between classes of the same slot layout. The result is an ordinary `cls`
    instance (equal, hashable, frozen, picklable, serialised alike). Only for classes
    whose `__init__` does nothing but store its arguments: no defaults, no
    `__post_init__`, no `InitVar` (checked here).

    Generated with `exec`: straight-line stores are about 4x as fast as a closure
    looping over the slots' descriptors (`benchmarks/codegen.py`).
    """
    names = tuple(field.name for field in fields(cls))  # type: ignore[arg-type]
    if (getattr(cls, "__slots__", None) != names or hasattr(cls, "__post_init__")
            or any(not field.init for field in fields(cls))):  # type: ignore[arg-type]
        raise TypeError(f"{cls.__name__} is not a plain frozen slotted dataclass")
    twin = type(f"_Mutable{cls.__name__}", (), {"__slots__": names})
    args = ", ".join(names)
    body = "".join(f"    o.{name} = {name}\n" for name in names)
    source = f"def make({args}):\n    o = twin()\n{body}    o.__class__ = cls\n    return o\n"
    namespace: dict[str, Any] = {"twin": twin, "cls": cls}
    exec(source, namespace)
    make: Callable[..., _T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    TYPE: ClassVar[str] = "ParticipantJoined"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    display_name: str
    email: str | None
    is_guest: bool


@dataclass(frozen=True, slots=True)
class EnrichmentRequested:
    TYPE: ClassVar[str] = "EnrichmentRequested"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    provider: str
    data_use: str
    data_sent: tuple[str, ...]
    trigger: str  # "USER_ACTION" | "AUTOMATIC"
    requested_by: str | None


@dataclass(frozen=True, slots=True)
class EnrichmentMatched:
    TYPE: ClassVar[str] = "EnrichmentMatched"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    provider: str
    request_event_id: str
    matched: bool
    profile_name: str | None
    data_returned: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProfileViewed:
    TYPE: ClassVar[str] = "ProfileViewed"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str
    subject_id: str
    viewer_id: str
    provider: str
    data_disclosed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConsentChanged:
    TYPE: ClassVar[str] = "ConsentChanged"
    event_id: str
    occurred_at: int
    subject_id: str
    consent_record_id: str
    data_use: str
    provider: str | None
    status: str  # "GRANTED" | "WITHDRAWN"
    data_categories: tuple[str, ...]
    expires_at: int | None
    notice_version: str | None
    jurisdiction: str | None


@dataclass(frozen=True, slots=True)
class NoticeDelivered:
    TYPE: ClassVar[str] = "NoticeDelivered"
    event_id: str
    occurred_at: int
    account_id: str
    subject_id: str
    meeting_id: str | None
    notice_kind: str  # "ENRICHMENT" | "PROFILE_VIEW"
    provider: str | None
    channel: str
    notice_version: str


@dataclass(frozen=True, slots=True)
class FeatureToggled:
    TYPE: ClassVar[str] = "FeatureToggled"
    event_id: str
    occurred_at: int
    account_id: str
    meeting_id: str | None
    provider: str
    enabled: bool
    actor_id: str


Event = (
    ParticipantJoined
    | EnrichmentRequested
    | EnrichmentMatched
    | ProfileViewed
    | ConsentChanged
    | NoticeDelivered
    | FeatureToggled
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ParticipantJoined,
        EnrichmentRequested,
        EnrichmentMatched,
        ProfileViewed,
        ConsentChanged,
        NoticeDelivered,
        FeatureToggled,
    )
}

# The events on which a rule fires (spec: "Rules", column "trigger").
TRIGGER_TYPES: frozenset[str] = frozenset({EnrichmentRequested.TYPE, ProfileViewed.TYPE})


# An event as plain values and back, for every form that stores events compactly
# (pickling below, the correlate topic's relay, the worker's state codec): per class,
# its field values in field order (one C call); per type name, its fast constructor.
EVENT_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
EVENT_MAKERS: dict[str, Callable[..., Event]] = {}


# Pickling: a frozen slotted dataclass pickles through `dataclasses`' generic
# __getstate__, which walks `fields()` for every instance. An event reduces to its type
# name and its values instead, rebuilt by the fast constructor: several times quicker
# both ways.
def _rebuild(type_name: str, values: tuple[Any, ...]) -> Event:
    return EVENT_MAKERS[type_name](*values)


def _install_reduce(cls: type[Event]) -> None:
    from operator import attrgetter

    values = EVENT_VALUES[cls] = attrgetter(*(field.name for field in fields(cls)))
    type_name = cls.TYPE
    EVENT_MAKERS[type_name] = fast_constructor(cls)

    def reduce(self: Event) -> tuple[Callable[..., Event], tuple[str, tuple[Any, ...]]]:
        return _rebuild, (type_name, values(self))

    cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]


for _cls in EVENT_TYPES.values():
    _install_reduce(_cls)
