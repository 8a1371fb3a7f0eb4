"""Reviews of a finding, and its status as the fold of them. Pure: no ledger, no I/O.

A review is a ledger record of kind `review` (a leaf of the same Merkle tree as the
findings), RFC 8785 JSON with exactly these fields:

    review_id   the id (below)
    finding_id  the finding reviewed
    reviewer    who (the desk's user name)
    at_ms       when (epoch milliseconds, the reviewer's clock; the ledger refuses a
                time more than 5 minutes from its own clock, or earlier than the
                finding's previous review)
    prev_review_id  the review_id of the finding's previous review in ledger order,
                or null for its first review (the chain below)
    action      acknowledge | assign | comment | resolve | reopen
    and per action:
      assign    assignee (required)
      comment   text (required)
      resolve   reason (required): remediated | false_positive | accepted_risk | duplicate;
                false_positive_kind with false_positive (FALSE_POSITIVE_KINDS);
                duplicate_of (the finding_id of the original) with duplicate
      every action but comment may carry a free-text `note`.

The review_id is the SHA-256 (lower-case hex) of the RFC 8785 JSON of the record
without its review_id: a content hash, not a uuid4. So the id binds the content (a
review whose id is not the hash of its fields is refused, by the ledger and by
`verify`); a retried request or a re-load of the same review is stored once by the
ledger's idempotency by id; and two different reviews can never share an id. Two
reviews identical in every field, at the same millisecond, are one review: nothing is
lost by storing it once.

A finding's status is the fold (`fold`) of its reviews in ledger order:

    open --acknowledge--> acknowledged
    open | acknowledged | assigned --assign--> assigned (to the assignee)
    open | acknowledged | assigned --resolve--> resolved (with the reason)
    resolved --reopen--> open (assignee and reason cleared, `reopened` counted)
    comment: allowed in every state, changes nothing but the count

Anything else is refused (`TrailError`): the ledger refuses such a review when it is
appended, so every sequence it holds folds without error.

The reviews of a finding are a chain: each names the one before it (`prev_review_id`,
null for the first), as its writer saw the trail. `step` refuses a review whose
prev_review_id is not the finding's latest review (`StaleReview`): the ledger so
refuses, under its writer lock, a review written against a stale view (of two
reviewers acting at once, one succeeds and the other is told to look again), and
`verify` finds a first or middle review left out of a bundle. A chain cannot show
that its latest reviews were left out: nothing after them names them.

Imported by `streams.evidence.verify`: this module ships in the offline verifier and
imports nothing but the standard library, rfc8785 and streams.errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import rfc8785

from streams.errors import ConsentwatchError

__all__ = [
    "ACTIONS",
    "ALLOWED_FROM",
    "FALSE_POSITIVE_KINDS",
    "REASONS",
    "STATES",
    "ReviewStatus",
    "StaleReview",
    "TrailError",
    "check_review",
    "fold",
    "new_review",
    "record_id",
    "step",
]

ACTIONS = ("acknowledge", "assign", "comment", "resolve", "reopen")
REASONS = ("remediated", "false_positive", "accepted_risk", "duplicate")
FALSE_POSITIVE_KINDS = ("rule_misfire", "data_error", "test_traffic", "other")
STATES = ("open", "acknowledged", "assigned", "resolved")

#: The states each action may be taken from.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "acknowledge": frozenset({"open"}),
    "assign": frozenset({"open", "acknowledged", "assigned"}),
    "comment": frozenset(STATES),
    "resolve": frozenset({"open", "acknowledged", "assigned"}),
    "reopen": frozenset({"resolved"}),
}

_COMMON = ("review_id", "finding_id", "reviewer", "at_ms", "prev_review_id", "action")
#: Per action: the fields it requires, and the ones it may carry.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "acknowledge": (), "assign": ("assignee",), "comment": ("text",),
    "resolve": ("reason",), "reopen": (),
}
_OPTIONAL: dict[str, tuple[str, ...]] = {
    "acknowledge": ("note",), "assign": ("note",), "comment": (),
    "resolve": ("note", "false_positive_kind", "duplicate_of"), "reopen": ("note",),
}
#: No free-text field is longer than this many characters.
MAX_TEXT = 10_000
#: The last millisecond of the year 9999 (as streams.model.timestamps.MAX_MS): every time
#: of a review or exception can be written in RFC 3339.
MAX_MS = 253_402_300_799_999


class TrailError(ConsentwatchError):
    """A review or exception record that is malformed, or a review its finding's status
    does not allow. The message names the field or the states, never a value."""


class StaleReview(TrailError):
    """A review whose prev_review_id is not its finding's latest review: written against
    a stale view of the trail (or, in a bundle, a review before it was left out)."""


def record_id(record: Mapping[str, Any], id_field: str) -> str:
    """The content hash of a record: SHA-256 hex of the RFC 8785 JSON of every field
    but `id_field`."""
    body = {name: value for name, value in record.items() if name != id_field}
    try:
        return hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        raise TrailError(f"the record cannot be written as canonical JSON "
                         f"(so it has no {id_field})") from None


def new_review(finding_id: str, reviewer: str, action: str, at_ms: int, *,
               prev_review_id: str | None, **fields: Any) -> dict[str, Any]:
    """A review record with its review_id, checked (TrailError names what is wrong).

    `prev_review_id` is what the caller saw: the review_id of the finding's latest
    review (`Ledger.reviews(finding_id)[-1].entry_id`, or `ReviewStatus.last_review_id`),
    None when it saw none. The ledger refuses the review (InvalidRecord) when that is no
    longer the latest one. `fields` are the action's own: assignee, text, reason,
    false_positive_kind, duplicate_of, note (None values are left out).
    """
    record: dict[str, Any] = {"finding_id": finding_id, "reviewer": reviewer,
                              "at_ms": at_ms, "prev_review_id": prev_review_id,
                              "action": action}
    record.update({name: value for name, value in fields.items() if value is not None})
    record["review_id"] = record_id(record, "review_id")
    check_review(record)
    return record


def _text(record: Mapping[str, Any], name: str, what: str = "review") -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise TrailError(f"the {what} has no {name} (a non-empty string)")
    if len(value) > MAX_TEXT:
        raise TrailError(f"the {what}'s {name} is longer than {MAX_TEXT} characters")
    return value


def _epoch_ms(record: Mapping[str, Any], name: str, what: str) -> int:
    value = record.get(name)
    if type(value) is not int or not 0 <= value <= MAX_MS:
        raise TrailError(f"the {what} has no {name} (epoch milliseconds, 1970 to 9999)")
    return value


def check_review(record: Any) -> None:
    """Refuse (TrailError) a review that is not well formed on its own: the fields of
    its action and nothing else, a known reason, a review_id that is its content hash.
    Whether its finding exists, and whether its status allows the action, is the
    ledger's check when it is appended (`step`)."""
    if not isinstance(record, Mapping):
        raise TrailError("a review must be a JSON object")
    action = record.get("action")
    if action not in ACTIONS:
        raise TrailError(f"the review has no action (one of {', '.join(ACTIONS)})")
    for name in ("review_id", "finding_id", "reviewer"):
        _text(record, name)
    _epoch_ms(record, "at_ms", "review")
    if "prev_review_id" not in record:
        raise TrailError("the review has no prev_review_id (the review_id of its "
                         "finding's previous review, or null)")
    if record["prev_review_id"] is not None:
        _text(record, "prev_review_id")
    allowed = {*_COMMON, *_REQUIRED[action], *_OPTIONAL[action]}
    if not set(record) <= allowed:
        raise TrailError(f"the review has a field a {action} does not take (it takes "
                         f"{', '.join(sorted(allowed))})")
    for name in (*_REQUIRED[action], *(n for n in _OPTIONAL[action] if n in record)):
        _text(record, name)
    if action == "resolve":
        _check_resolution(record)
    if record["review_id"] != record_id(record, "review_id"):
        raise TrailError("the review's review_id is not the SHA-256 of its other fields "
                         "(was it changed?)")


def _check_resolution(record: Mapping[str, Any]) -> None:
    reason = record["reason"]
    if reason not in REASONS:
        raise TrailError(f"the resolve has no valid reason (one of {', '.join(REASONS)})")
    if reason == "false_positive":
        if record.get("false_positive_kind") not in FALSE_POSITIVE_KINDS:
            raise TrailError("a false_positive resolve has no valid false_positive_kind (one "
                             f"of {', '.join(FALSE_POSITIVE_KINDS)})")
    elif "false_positive_kind" in record:
        raise TrailError("only a false_positive resolve takes a false_positive_kind")
    if reason == "duplicate":
        if record.get("duplicate_of") == record["finding_id"]:
            raise TrailError("a duplicate resolve names its own finding as duplicate_of "
                             "(it must name another finding)")
    elif "duplicate_of" in record:
        raise TrailError("only a duplicate resolve takes a duplicate_of")
    if reason == "duplicate" and "duplicate_of" not in record:
        raise TrailError("a duplicate resolve has no duplicate_of (the original finding)")


@dataclass(frozen=True, slots=True)
class ReviewStatus:
    """Where a finding stands after its reviews (`fold`)."""

    state: str = "open"
    assignee: str | None = None
    reason: str | None = None
    false_positive_kind: str | None = None
    duplicate_of: str | None = None
    reopened: int = 0
    reviews: int = 0
    last_at_ms: int | None = None
    last_review_id: str | None = None

    def label(self) -> str:
        """One line for people: 'assigned to NAME', 'resolved: false_positive
        (rule_misfire)', 'resolved: duplicate of ID', 'open'."""
        if self.state == "assigned":
            return f"assigned to {self.assignee}"
        if self.state == "resolved":
            if self.reason == "false_positive":
                return f"resolved: false_positive ({self.false_positive_kind})"
            if self.reason == "duplicate":
                return f"resolved: duplicate of {self.duplicate_of}"
            return f"resolved: {self.reason}"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "assignee": self.assignee, "reason": self.reason,
                "false_positive_kind": self.false_positive_kind,
                "duplicate_of": self.duplicate_of, "reopened": self.reopened,
                "reviews": self.reviews, "last_at_ms": self.last_at_ms,
                "last_review_id": self.last_review_id}


OPEN = ReviewStatus()


def step(status: ReviewStatus, review: Mapping[str, Any]) -> ReviewStatus:
    """The status after one more (well-formed) review; StaleReview if it does not name
    the latest review as its prev_review_id, TrailError if its at_ms is earlier than the
    latest review's or its action is not allowed from `status.state`."""
    if review.get("prev_review_id") != status.last_review_id:
        raise StaleReview("the review's prev_review_id is not its finding's latest review: "
                          "it was written against a stale view of the finding's reviews")
    at = review.get("at_ms")
    if status.last_at_ms is not None and type(at) is int and at < status.last_at_ms:
        raise TrailError("the review's at_ms is earlier than its finding's previous review")
    action = str(review.get("action"))
    allowed = ALLOWED_FROM.get(action)
    if allowed is None:
        raise TrailError(f"the review has no action (one of {', '.join(ACTIONS)})")
    if status.state not in allowed:
        states = [s for s in STATES if s in allowed]
        either = " or ".join(filter(None, (", ".join(states[:-1]), states[-1])))
        article = "an" if action[0] in "aeiou" else "a"
        raise TrailError(f"{article} {action} is allowed only on a finding that is {either}; "
                         f"this one is {status.state}")
    review_id = review.get("review_id")
    counted = replace(status, reviews=status.reviews + 1,
                      last_at_ms=at if type(at) is int else status.last_at_ms,
                      last_review_id=review_id if isinstance(review_id, str) else None)
    if action == "acknowledge":
        return replace(counted, state="acknowledged")
    if action == "assign":
        return replace(counted, state="assigned", assignee=str(review.get("assignee")))
    if action == "resolve":
        return replace(counted, state="resolved", reason=str(review.get("reason")),
                       false_positive_kind=review.get("false_positive_kind"),
                       duplicate_of=review.get("duplicate_of"))
    if action == "reopen":
        return replace(counted, state="open", assignee=None, reason=None,
                       false_positive_kind=None, duplicate_of=None,
                       reopened=status.reopened + 1)
    return counted  # comment


def fold(reviews: Iterable[Mapping[str, Any]], start: ReviewStatus = OPEN) -> ReviewStatus:
    """The status of one finding after its reviews, in ledger order (deterministic:
    the same reviews always give the same status). TrailError if one is not allowed
    where it stands, or they are not all of one finding."""
    status, finding = start, None
    for review in reviews:
        if finding is None:
            finding = review.get("finding_id")
        elif review.get("finding_id") != finding:
            raise TrailError("the reviews folded are not all of one finding")
        status = step(status, review)
    return status
