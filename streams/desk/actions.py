"""What the desk writes: reviews and exceptions as ledger leaves, and exports.

Each is checked here first, with a message a person can act on (`ActionError`: the HTTP
status and one line, never a value they typed back unescaped, never a traceback), then
appended through the ledger itself (`open_ledger(...).append`), which checks again
under its writer lock: the ledger is the judge, the desk's checks only make its
answers readable. The reviewer, author or exporter is the signed-in user, the time the
server's clock.

An export is `streams.evidence.export.export_bundle`, the code `consentwatch export`
runs, with the key `desk serve --private-key` loaded: the same bundle, recorded in the
ledger (who = the signed-in user) just before it is published.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.catalogue import load_catalogue
from streams.desk import queries
from streams.desk.db import Database
from streams.desk.users import list_users
from streams.errors import ConsentwatchError
from streams.evidence.exception_scope import new_exception
from streams.evidence.review import (
    ALLOWED_FROM,
    FALSE_POSITIVE_KINDS,
    MAX_TEXT,
    REASONS,
    ReviewStatus,
    TrailError,
    fold,
    new_review,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.engine import EngineParams
    from streams.evidence.export import ExportResult
    from streams.evidence.ledger import LedgerEntry

__all__ = ["STALE", "ActionError", "Export", "allowed_actions", "export", "now_ms",
           "record_exception", "record_review"]

#: What the desk says when the finding's reviews changed since the page was loaded.
STALE = "someone reviewed this finding meanwhile; reload the page to see what changed"
AMENDED = ("a late event amended this finding since the page was loaded; reload the page to "
           "see the amendment")


class ActionError(ConsentwatchError):
    """An action the desk refuses: `status` (400 malformed, 404 unknown finding, 409 not
    allowed where the finding stands now) and one line for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def allowed_actions(status: ReviewStatus) -> list[str]:
    """The actions a finding's review state allows, in the order the page offers them."""
    return [action for action in ("acknowledge", "assign", "resolve", "reopen", "comment")
            if status.state in ALLOWED_FROM[action]]


def _text(form: Mapping[str, Any], name: str, *, required: bool = False,
          limit: int = MAX_TEXT, exact: bool = False) -> str | None:
    """A form field, stripped; `exact`: an id of the events (an account, a provider, a
    finding), taken as it is, since the events' strings may hold spaces."""
    value = form.get(name)
    text = (value if exact else value.strip()) if isinstance(value, str) else ""
    if exact and "\x00" in text:
        raise ActionError(400, f"{name.replace('_', ' ')}: no NUL character")
    if not text:
        if required:
            raise ActionError(400, f"{name.replace('_', ' ')}: required")
        return None
    if len(text) > limit:
        raise ActionError(400, f"{name.replace('_', ' ')}: at most {limit} characters")
    if not exact and any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        raise ActionError(400, f"{name.replace('_', ' ')}: no control characters")
    return text


def _latest_id(trail: list[LedgerEntry]) -> str:
    return trail[-1].entry_id if trail else ""


def record_review(db: Database, reviewer: str, form: Mapping[str, Any],
                  at_ms: int | None = None) -> str:
    """Append the review the form asks for; returns the finding id. The form names the
    finding (`finding_id`), the `action` and its fields, `seen`: the id of the
    latest review the page showed ("" for none), which becomes the review's
    prev_review_id: a review written against a stale page is refused (409, `STALE`),
    here or, when another review got in between, by the ledger under its lock; and
    `amended`: the id of the latest amendment the page showed ("" for none): a finding
    amended since is refused too (409, `AMENDED`)."""
    from streams.evidence.ledger import InvalidRecord, open_ledger

    finding_id = _text(form, "finding_id", required=True, limit=200, exact=True) or ""
    if queries.finding(db, finding_id) is None:
        raise ActionError(404, "the ledger holds no finding with this id")
    action = str(form.get("action") or "")
    if action not in ALLOWED_FROM:
        raise ActionError(400, f"action: one of {', '.join(ALLOWED_FROM)}")
    trail = queries.reviews_of(db, finding_id)
    if str(form.get("seen") or "") != _latest_id(trail):
        raise ActionError(409, STALE)
    if str(form.get("amended") or "") != _latest_id(queries.amendments_of(db, finding_id)):
        # A late event amended the finding (retracted it, changed its evidence) after the
        # page was loaded: the decision was taken on what the finding no longer is.
        raise ActionError(409, AMENDED)
    status = fold(entry.record for entry in trail)
    if action not in allowed_actions(status):
        raise ActionError(409, f"a finding that is {status.state} cannot take a {action} "
                               f"(allowed: {', '.join(allowed_actions(status))})")
    fields = _review_fields(db, action, form, finding_id)
    seen = _latest_id(trail) or None
    try:
        record = new_review(finding_id, reviewer, action, now_ms() if at_ms is None else at_ms,
                            prev_review_id=seen, **fields)
    except TrailError as exc:
        raise ActionError(400, str(exc)) from None
    try:
        with open_ledger(db.target) as ledger:
            ledger.append("review", [record])
    except InvalidRecord as exc:
        # The ledger checks again under its writer lock: a review stored since our read
        # (prev_review_id no longer the latest) is a stale view, anything else its line.
        if (_latest_id(queries.reviews_of(db, finding_id)) or None) != seen:
            raise ActionError(409, STALE) from None
        raise ActionError(409, f"the ledger refused the review: {exc}") from None
    return finding_id


def _review_fields(db: Database, action: str, form: Mapping[str, Any],
                   finding_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if action == "comment":
        fields["text"] = _text(form, "text", required=True)
        return fields
    fields["note"] = _text(form, "note")
    if action == "assign":
        assignee = _text(form, "assignee", required=True, limit=64)
        if assignee not in {name for name, _, _ in list_users(db)}:
            raise ActionError(400, "assignee: not a user of the desk")
        fields["assignee"] = assignee
    elif action == "resolve":
        reason = str(form.get("reason") or "")
        if reason not in REASONS:
            raise ActionError(400, f"reason: one of {', '.join(REASONS)}")
        fields["reason"] = reason
        if reason == "false_positive":
            kind = str(form.get("false_positive_kind") or "")
            if kind not in FALSE_POSITIVE_KINDS:
                raise ActionError(400, "false positive kind: one of "
                                       f"{', '.join(FALSE_POSITIVE_KINDS)}")
            fields["false_positive_kind"] = kind
        if reason == "duplicate":
            original = _text(form, "duplicate_of", required=True, limit=200, exact=True)
            if original == finding_id:
                raise ActionError(400, "duplicate of: another finding's id, not this one's")
            if original is None or queries.finding(db, original) is None:
                raise ActionError(400, "duplicate of: the ledger holds no finding with "
                                       "this id")
            fields["duplicate_of"] = original
    return fields


# -- exceptions ---------------------------------------------------------------------------


def _when(form: Mapping[str, Any], name: str, label: str, *, required: bool) -> int | None:
    text = _text(form, name, required=required, limit=40)
    if text is None:
        return None
    problems: list[str] = []
    value = queries.parse_time(label, text, problems)
    if problems or value is None:
        raise ActionError(400, problems[0] if problems else f"{label}: not a time")
    return value


def record_exception(db: Database, author: str, form: Mapping[str, Any],
                     at_ms: int | None = None) -> dict[str, Any]:
    """Append the exception the form describes (account; optional provider and rule;
    from, to: the findings it covers occurred in [from, to); until: its expiry, after
    now); returns the record."""
    from streams.evidence.ledger import InvalidRecord, open_ledger

    account = _text(form, "account", required=True, limit=200, exact=True)
    provider = _text(form, "provider", limit=200, exact=True)
    rule = _text(form, "rule", limit=200)
    if rule is not None and rule not in {r.id for r in load_catalogue().rules}:
        raise ActionError(400, "rule: not a rule of the catalogue (see the list)")
    from_ms = _when(form, "from", "from", required=True)
    to_ms = _when(form, "to", "to", required=True)
    until = _when(form, "until", "in force until", required=True)
    reason = _text(form, "reason", required=True)
    now = now_ms() if at_ms is None else at_ms
    assert from_ms is not None and to_ms is not None and until is not None  # required
    if from_ms >= to_ms:
        raise ActionError(400, "from must be before to")
    if until <= now:
        raise ActionError(400, "in force until: a time in the future")
    try:
        record = new_exception(account_id=account or "", provider=provider, rule=rule,
                               from_ms=from_ms, to_ms=to_ms, reason=reason or "",
                               expires_at_ms=until, author=author, at_ms=now)
        with open_ledger(db.target) as ledger:
            ledger.append("exception", [record])
    except (TrailError, InvalidRecord) as exc:
        raise ActionError(400, f"the ledger refused the exception: {exc}") from None
    return record


# -- exports ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    """A bundle written for one download: the zip, and the folder to remove after."""

    zip_path: Path
    folder: Path
    result: ExportResult

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def export(db: Database, key: Ed25519PrivateKey, params: EngineParams | None, actor: str,
           form: Mapping[str, Any], at_ms: int | None = None) -> Export:
    """The bundle `consentwatch export` writes, for the window and filters of the form,
    into a private temporary folder; recorded in the ledger (actor, purpose, query,
    manifest hash) before it exists. The caller streams `zip_path`, then `remove()`s."""
    from streams.errors import ConfigError
    from streams.evidence.export import ExportQuery, export_bundle
    from streams.evidence.ledger import LedgerError, open_ledger

    purpose = _text(form, "purpose", required=True, limit=2000)
    if purpose is None or not any(c.isalnum() for c in purpose):
        raise ActionError(400, "purpose: say why the data is exported")
    try:
        flt = queries.parse_filter({name: str(form.get(name) or "") for name in
                                    ("rule", "account", "subject", "from", "to")})
    except queries.FilterError as exc:
        raise ActionError(400, "; ".join(exc.problems)) from None
    if flt.from_ms is None or flt.to_ms is None:
        raise ActionError(400, "from and to: the window to export (both required)")
    query = ExportQuery(flt.from_ms, flt.to_ms, purpose, flt.rule, flt.account, flt.subject)
    now = now_ms() if at_ms is None else at_ms
    folder = Path(tempfile.mkdtemp(prefix="consentwatch-desk-export-"))
    out = folder / _NAME.sub("-", f"consentwatch-export-{now}")
    try:
        with open_ledger(db.target) as ledger:
            result = export_bundle(ledger, out, query, key, actor=actor, params=params,
                                   now_ms=now)
    except (ConfigError, LedgerError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ActionError(409 if isinstance(exc, LedgerError) else 400,
                          f"export refused: {exc}") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Export(result.zip_path, folder, result)
