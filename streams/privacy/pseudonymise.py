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

This runs where findings leave the process (`replay`, the worker), which seal each
finding (`sealed.py`) before serde writes it; never in the engine, which keeps the
events themselves and stays pure, deterministic and key-free.
Values are hashed as they are, without normalising case or spaces.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from streams.errors import ConfigError
from streams.model.contract import PSEUDONYMISED_FIELDS
from streams.model.events import EVENT_TYPES
from streams.model.findings import Amendment, EvidenceItem, Finding
from streams.model.json_form import JsonForm, json_form
from streams.privacy.sealed import SealedAmendment, SealedFinding

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
    "pseudonymised_fields",
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


def pseudonymised_fields(cls: type[Any], names_in_clear: bool) -> frozenset[str]:
    """The fields of event class `cls` that evidence carries as their pseudonym (when not
    null); with `names_in_clear` (the rules of NAMES_IN_CLEAR_FOR), the names are kept."""
    kept = _NAMES if names_in_clear else frozenset()
    return frozenset(HASHED_FIELDS[cls.TYPE]) - kept


def _forms(names_in_clear: bool) -> dict[type[Any], JsonForm]:
    """Per event class, its pseudonymised JSON form."""
    return {cls: json_form(cls, pseudonymised_fields(cls, names_in_clear))
            for cls in EVENT_TYPES.values()}


_FORMS: Final = (_forms(False), _forms(True))  # indexed by names_in_clear
_log = logging.getLogger("consentwatch.evidence")


class Pseudonymiser:
    """Turns the evidence of findings and amendments into its pseudonymised JSON form.

    Not thread-safe (a small cache of pseudonyms); one per process or per task.
    The key never appears in `repr` or in any message.
    """

    __slots__ = ("_cache", "_keyed", "development")

    def __init__(self, key: bytes, *, development: bool = False) -> None:
        if not key:
            raise ConfigError("the pseudonymisation key is empty")
        # The HMAC keyed once, copied for each value: `hmac.digest(key, ...)` looks the
        # digest up in OpenSSL and keys it again on every call (1.6x the time).
        self._keyed = hmac.new(bytes(key), digestmod=hashlib.sha256)
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
            mac = self._keyed.copy()
            mac.update(value.encode("utf-8", "surrogatepass"))
            found = cache[value] = PREFIX + mac.hexdigest()
        return found

    def event(self, item: EvidenceItem, names_in_clear: bool = False) -> dict[str, Any]:
        """The pseudonymised JSON form of one evidence event (the engine's: an Event)."""
        return _FORMS[names_in_clear][type(item)](item, self.pseudonym)

    def finding(self, finding: Finding) -> SealedFinding:
        """`finding`, sealed: its evidence pseudonymised."""
        clear = finding.rule in NAMES_IN_CLEAR_FOR
        event = self.event
        return SealedFinding(finding, tuple([event(item, clear) for item in finding.evidence]))

    def amendment(self, amendment: Amendment) -> SealedAmendment:
        """`amendment`, sealed: its evidence and late event pseudonymised."""
        late = amendment.late_event
        clear = amendment.rule in NAMES_IN_CLEAR_FOR
        event = self.event
        return SealedAmendment(amendment,
                               tuple([event(item, clear) for item in amendment.evidence]),
                               None if late is None else event(late, clear))


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
    """For a path given no pseudonymiser (a test, the worker before it is given a
    key): the development key, logged once.

    Commands resolve a real key with `load_pseudonymiser` and pass it.
    """
    _log.warning("%s", development_key_warning())
    return Pseudonymiser(DEV_KEY, development=True)
