"""Pseudonymised evidence: the events a finding cites, in a form fit for a regulator.

A finding proves itself with the events it cites (`Finding.evidence`). Those
events hold personal data a regulator does not need to check the finding: each
such value becomes `hmac-sha256:<hex>`, the HMAC-SHA256 of its UTF-8 bytes under
the pseudonymisation key. The same value under the same key always gives the
same pseudonym, whatever field it is in, so a regulator can see that two findings
involve the same person (or that the viewer of one profile is the requester of
another) without seeing who; without the key, a pseudonym cannot be computed
from a guessed email or name.

Hashed: the fields the event schemas mark `"pseudonymised": true`
(`streams.model.contract`): `email`, `requested_by`, `viewer_id`, `actor_id`, and
the names `display_name` and `profile_name`, except in the evidence of a
`pseudonym-deanonymized` finding (or amendment), whose point is that the real
name in `profile_name` overrode the pseudonym in `display_name`: that cannot be
shown without both names.

In clear: event ids, types and times; subject, account and meeting ids (the
platform's own pseudonymous keys, which the regulator needs to tie a finding to a
data subject request or to a tenant); `consent_record_id` (the key of the record
in the platform's consent store); provider, data uses and data categories,
statuses, triggers, `matched`, `is_guest`, notice kinds, channels and versions,
jurisdictions, expiry times and `enabled`: what the rules decide on, and nobody's
identity.

This runs where findings leave the process (replay's writer, the worker's
producer), never in the engine, which keeps the events themselves and stays pure,
deterministic and key-free. Values are hashed as they are, without normalising
case or spaces.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from streams.errors import ConfigError
from streams.model.contract import PSEUDONYMISED_FIELDS
from streams.model.events import EVENT_TYPES, fast_constructor
from streams.model.findings import Amendment, EvidenceItem, Finding
from streams.serde.jsonl import JsonForm, json_form

__all__ = [
    "DEV_KEY",
    "ENV_VAR",
    "HASHED_FIELDS",
    "MIN_KEY_BYTES",
    "NAMES_IN_CLEAR_FOR",
    "PREFIX",
    "Pseudonymiser",
    "default_pseudonymiser",
    "development_key_warning",
    "load_pseudonymiser",
    "seal_output",
]

PREFIX: Final = "hmac-sha256:"
ENV_VAR: Final = "CONSENTWATCH_PSEUDONYM_KEY"
MIN_KEY_BYTES: Final = 32
# Used when no key is configured. It is public (it is in the source), so pseudonyms
# made with it only hide values nobody can guess: for development and tests only.
DEV_KEY: Final = b"consentwatch development pseudonymisation key; public, not a secret"

# Per event type: the fields replaced by their pseudonym (when not null): those its
# schema marks `"pseudonymised": true` (streams.model.contract).
HASHED_FIELDS: Final[dict[str, tuple[str, ...]]] = PSEUDONYMISED_FIELDS
_NAMES: Final = frozenset({"display_name", "profile_name"})
# The rules whose evidence keeps both names in clear (the override is the finding).
NAMES_IN_CLEAR_FOR: Final = frozenset({"pseudonym-deanonymized"})
# Distinct values whose pseudonym is remembered (a value repeats across findings).
_CACHE_SIZE: Final = 1 << 16


def _forms(names_in_clear: bool) -> dict[type[Any], JsonForm]:
    """Per event class, its pseudonymised JSON form."""
    kept = _NAMES if names_in_clear else frozenset()
    return {cls: json_form(cls, frozenset(HASHED_FIELDS[cls.TYPE]) - kept)
            for cls in EVENT_TYPES.values()}


_FORMS: Final = (_forms(False), _forms(True))  # indexed by names_in_clear
_make_finding: Final = fast_constructor(Finding)
_make_amendment: Final = fast_constructor(Amendment)
# Every field before the evidence, in order: a sealed copy is built from these.
_finding_head: Final = attrgetter(*(f.name for f in fields(Finding) if f.name != "evidence"))
_amendment_head: Final = attrgetter(*(f.name for f in fields(Amendment)
                               if f.name not in ("evidence", "late_event")))
_log = logging.getLogger("consentwatch.evidence")
_T = TypeVar("_T")


class Pseudonymiser:
    """Turns the evidence of findings and amendments into its pseudonymised JSON form.

    Not thread-safe (a small cache of pseudonyms); one per process or per task.
    The key never appears in `repr` or in any message.
    """

    __slots__ = ("_cache", "_key", "development")

    def __init__(self, key: bytes, *, development: bool = False) -> None:
        if not key:
            raise ConfigError("the pseudonymisation key is empty")
        self._key = bytes(key)
        self._cache: dict[str, str] = {}
        self.development = development

    def __repr__(self) -> str:
        return f"Pseudonymiser(key=<hidden>, development={self.development})"

    def pseudonym(self, value: str) -> str:
        """`hmac-sha256:` + the lower-case hex HMAC-SHA256 of `value` (UTF-8)."""
        cache = self._cache
        found = cache.get(value)
        if found is None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            digest = hmac.digest(self._key, value.encode("utf-8", "surrogatepass"), "sha256")
            found = cache[value] = PREFIX + digest.hex()
        return found

    def event(self, item: EvidenceItem, names_in_clear: bool = False) -> dict[str, Any]:
        """The pseudonymised JSON form of one evidence event (a dict passes unchanged:
        it was pseudonymised where it was made)."""
        if type(item) is dict:
            return item
        return _FORMS[names_in_clear][type(item)](item, self.pseudonym)

    def finding(self, finding: Finding) -> Finding:
        """`finding` with its evidence pseudonymised (the same object if it already is)."""
        if _is_sealed(finding):
            return finding
        clear = finding.rule in NAMES_IN_CLEAR_FOR
        event = self.event
        return _make_finding(*_finding_head(finding),
                             tuple([event(item, clear) for item in finding.evidence]))

    def finding_json(self, finding: Finding) -> dict[str, Any]:
        """What orjson writes of `self.finding(finding)`, built directly: `replay`
        writes every finding this way (a sealed copy first cost as much again)."""
        clear = finding.rule in NAMES_IN_CLEAR_FOR
        event = self.event
        return {  # the fields of Finding, in order (tests/test_evidence_in_findings.py checks)
            "finding_id": finding.finding_id,
            "rule": finding.rule,
            "severity": finding.severity,
            "subject_id": finding.subject_id,
            "account_id": finding.account_id,
            "meeting_id": finding.meeting_id,
            "provider": finding.provider,
            "trigger_event_id": finding.trigger_event_id,
            "evidence_event_ids": finding.evidence_event_ids,
            "occurred_at": finding.occurred_at,
            "detected_at": finding.detected_at,
            "explanation": finding.explanation,
            "evidence": [event(item, clear) for item in finding.evidence],
        }

    def amendment(self, amendment: Amendment) -> Amendment:
        """`amendment` with its evidence and late event pseudonymised."""
        if _is_sealed(amendment):
            return amendment
        late = amendment.late_event
        clear = amendment.rule in NAMES_IN_CLEAR_FOR
        return _make_amendment(*_amendment_head(amendment),
                               tuple([self.event(item, clear) for item in amendment.evidence]),
                               None if late is None else self.event(late, clear))

    def seal(self, item: _T) -> _T:
        """A finding or amendment pseudonymised; anything else (a dead letter) unchanged."""
        kind = type(item)
        if kind is Finding:
            return cast(_T, self.finding(cast(Finding, item)))
        if kind is Amendment:
            return cast(_T, self.amendment(cast(Amendment, item)))
        return item


def _is_sealed(item: Finding | Amendment) -> bool:
    """Whether every evidence event of `item` is in its pseudonymised form already."""
    for event in item.evidence:  # a loop: cheaper than all() of a generator
        if type(event) is not dict:
            return False
    late = item.late_event if type(item) is Amendment else None
    return late is None or type(late) is dict


def load_pseudonymiser(path: Path | str | None = None,
                       warn: Callable[[str], None] | None = None) -> Pseudonymiser:
    """The pseudonymiser of the key file `path`, else of $CONSENTWATCH_PSEUDONYM_KEY (a
    file path), else the development key, after `warn`ing about it.

    A key file holds at least 32 bytes (leading and trailing white space is not part
    of the key), e.g. `head -c 32 /dev/urandom > pseudonym.key` or
    `openssl rand -hex 32 > pseudonym.key`. Raises ConfigError (one line) when the file
    cannot be used.
    """
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        if warn is not None:
            warn(development_key_warning())
        return Pseudonymiser(DEV_KEY, development=True)
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the pseudonymisation key file {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the pseudonymisation key file {path} holds fewer than "
                          f"{MIN_KEY_BYTES} bytes")
    return Pseudonymiser(key)


def development_key_warning() -> str:
    """What to tell the user when no key is configured (one line)."""
    return (f"no pseudonymisation key (--pseudonym-key FILE or {ENV_VAR}): evidence is "
            "pseudonymised with the public development key, which does not protect it")


@functools.cache
def default_pseudonymiser() -> Pseudonymiser:
    """For serialisers given no pseudonymiser: the development key, logged once.

    Commands resolve a real key with `load_pseudonymiser` and pass it; this only keeps
    raw personal data from leaving by a path that was not given one.
    """
    _log.warning("%s", development_key_warning())
    return Pseudonymiser(DEV_KEY, development=True)


def seal_output(item: _T, pseudonymiser: Pseudonymiser | None = None) -> _T:
    """For serialisers: a finding or amendment with its evidence pseudonymised by
    `pseudonymiser`, or by `default_pseudonymiser()` when none was given and some
    evidence is still raw; anything else unchanged."""
    if pseudonymiser is None:
        if not isinstance(item, Finding | Amendment) or _is_sealed(item):
            return item
        pseudonymiser = default_pseudonymiser()
    return pseudonymiser.seal(item)
