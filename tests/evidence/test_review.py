"""Reviews and exceptions as records, and a finding's status as the fold of its reviews
(streams.evidence.review, streams.evidence.exception_scope): pure functions, no ledger."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.evidence.exception_scope import (
    check_exception,
    covering,
    covers,
    in_force,
    new_exception,
)
from streams.evidence.review import (
    ACTIONS,
    ALLOWED_FROM,
    FALSE_POSITIVE_KINDS,
    REASONS,
    ReviewStatus,
    StaleReview,
    TrailError,
    check_review,
    fold,
    new_review,
    record_id,
    step,
)
from tests.hypothesis_profiles import examples

F1, F2 = "f" * 64, "e" * 64
T0 = 1_772_445_600_000


def review(action: str, n: int = 0, finding: str = F1, prev: str | None = None,
           **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"assign": {"assignee": "bob"}, "comment": {"text": "looked"},
                                "resolve": {"reason": "remediated"}}
    return new_review(finding, "alice", action, T0 + n, prev_review_id=prev,
                      **(defaults.get(action, {}) | fields))


def chain(*specs: tuple[Any, ...], finding: str = F1) -> list[dict[str, Any]]:
    """Reviews (action, n, fields) of one finding, each naming the one before it."""
    made: list[dict[str, Any]] = []
    for action, n, *fields in specs:
        prev = made[-1]["review_id"] if made else None
        made.append(review(action, n, finding, prev, **(fields[0] if fields else {})))
    return made


# -- records -----------------------------------------------------------------------------


def test_the_review_id_is_the_hash_of_the_other_fields() -> None:
    record = review("acknowledge")
    body = {k: v for k, v in record.items() if k != "review_id"}
    assert record["review_id"] == record_id(record, "review_id")
    import hashlib
    assert record["review_id"] == hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    # the same review made twice is the same record (the ledger stores it once)
    assert review("acknowledge") == record
    assert review("acknowledge", 1)["review_id"] != record["review_id"]


@pytest.mark.parametrize(("change", "field"), [
    ({"action": "approve"}, "action"),
    ({"reviewer": ""}, "reviewer"),
    ({"reviewer": 7}, "reviewer"),
    ({"finding_id": None}, "finding_id"),
    ({"at_ms": "yesterday"}, "at_ms"),
    ({"at_ms": True}, "at_ms"),
    ({"at_ms": -1}, "at_ms"),
    ({"surprise": "x"}, "does not take"),
    ({"review_id": "0" * 64}, "review_id"),
    ({"prev_review_id": ""}, "prev_review_id"),
    ({"prev_review_id": 5}, "prev_review_id"),
])
def test_a_malformed_review_is_refused_naming_the_field(change: dict[str, Any],
                                                        field: str) -> None:
    record = review("acknowledge") | change
    if "review_id" not in change:
        record["review_id"] = record_id(record, "review_id")
    with pytest.raises(TrailError, match=field) as caught:
        check_review(record)
    for value in change.values():  # never the value
        if isinstance(value, str) and value:
            assert value not in str(caught.value).replace(field, "")


@pytest.mark.parametrize(("action", "fields", "field"), [
    ("assign", {}, "assignee"),
    ("comment", {}, "text"),
    ("comment", {"text": "   "}, "text"),
    ("resolve", {}, "reason"),
    ("resolve", {"reason": "bored"}, "reason"),
    ("resolve", {"reason": "false_positive"}, "false_positive_kind"),
    ("resolve", {"reason": "false_positive", "false_positive_kind": "meh"},
     "false_positive_kind"),
    ("resolve", {"reason": "remediated", "false_positive_kind": "other"},
     "false_positive_kind"),
    ("resolve", {"reason": "duplicate"}, "duplicate_of"),
    ("resolve", {"reason": "duplicate", "duplicate_of": F1}, "its own finding"),
    ("resolve", {"reason": "accepted_risk", "duplicate_of": F2}, "duplicate_of"),
    ("acknowledge", {"text": "no"}, "does not take"),
])
def test_each_action_needs_its_own_fields(action: str, fields: dict[str, Any],
                                          field: str) -> None:
    with pytest.raises(TrailError, match=field):
        new_review(F1, "alice", action, T0, prev_review_id=None, **fields)


def test_a_review_without_prev_review_id_is_refused() -> None:
    record = review("acknowledge")
    del record["prev_review_id"]
    record["review_id"] = record_id(record, "review_id")
    with pytest.raises(TrailError, match="has no prev_review_id"):
        check_review(record)


def test_every_reason_is_accepted_with_what_it_needs() -> None:
    extra = {"false_positive": {"false_positive_kind": "test_traffic"},
             "duplicate": {"duplicate_of": F2}}
    for reason in REASONS:
        check_review(review("resolve", reason=reason, **extra.get(reason, {})))
    for kind in FALSE_POSITIVE_KINDS:
        check_review(review("resolve", reason="false_positive", false_positive_kind=kind))


# -- the fold ----------------------------------------------------------------------------


def test_fold_of_a_typical_trail() -> None:
    trail = chain(("acknowledge", 0), ("comment", 1), ("assign", 2),
                  ("resolve", 3, {"reason": "false_positive",
                                  "false_positive_kind": "rule_misfire",
                                  "note": "the rule fires on test accounts"}))
    assert fold([]) == ReviewStatus()
    status = fold(trail)
    assert (status.state, status.assignee, status.reason, status.false_positive_kind) == (
        "resolved", "bob", "false_positive", "rule_misfire")
    assert status.reviews == 4 and status.last_at_ms == T0 + 3
    assert status.last_review_id == trail[-1]["review_id"]
    assert status.label() == "resolved: false_positive (rule_misfire)"
    reopened = fold([*trail, review("reopen", 4, prev=trail[-1]["review_id"])])
    assert (reopened.state, reopened.assignee, reopened.reason, reopened.reopened) == (
        "open", None, None, 1)
    assert fold(trail[:3]).label() == "assigned to bob"


@pytest.mark.parametrize(("trail", "message"), [
    (["reopen"], "a reopen is allowed only on a finding that is resolved; this one is open"),
    (["acknowledge", "acknowledge"], "this one is acknowledged"),
    (["resolve", "resolve"], "this one is resolved"),
    (["resolve", "assign"], "this one is resolved"),
    (["assign", "acknowledge"], "this one is assigned"),
])
def test_fold_refuses_what_the_status_does_not_allow(trail: list[str], message: str) -> None:
    with pytest.raises(TrailError, match=message):
        fold(chain(*((action, n) for n, action in enumerate(trail))))


def test_fold_refuses_reviews_of_several_findings() -> None:
    first = review("comment", 0)
    with pytest.raises(TrailError, match="not all of one finding"):
        fold([first, review("comment", 1, finding=F2, prev=first["review_id"])])


@pytest.mark.parametrize("drop", [0, 1])
def test_fold_refuses_a_broken_chain(drop: int) -> None:
    """A first or middle review left out: the next one names a review that is not there."""
    trail = chain(("acknowledge", 0), ("comment", 1), ("assign", 2))
    with pytest.raises(StaleReview, match="stale view"):
        fold(trail[:drop] + trail[drop + 1:])
    assert fold(trail[:2]).reviews == 2  # the latest left out: nothing can tell


def test_fold_refuses_a_review_not_naming_the_latest_one() -> None:
    first = review("comment", 0)
    for prev in (None, "0" * 64):  # two reviewers who both saw an empty trail; a made-up id
        with pytest.raises(StaleReview):
            fold([first, review("comment", 1, prev=prev)])


def test_fold_refuses_a_review_dated_before_the_previous_one() -> None:
    first = review("comment", 5)
    with pytest.raises(TrailError, match="at_ms is earlier than its finding's previous review"):
        fold([first, review("comment", 4, prev=first["review_id"])])
    assert fold([first, review("comment", 5, prev=first["review_id"])]).reviews == 2


def _some_review(draw: st.DrawFn, at: int, prev: str | None) -> dict[str, Any]:
    action = draw(st.sampled_from(ACTIONS))
    fields: dict[str, Any] = {}
    if action == "assign":
        fields["assignee"] = draw(st.sampled_from(["bob", "carol", "<b>dan</b>"]))
    elif action == "comment":
        fields["text"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))
    elif action == "resolve":
        reason = draw(st.sampled_from(REASONS))
        fields["reason"] = reason
        if reason == "false_positive":
            fields["false_positive_kind"] = draw(st.sampled_from(FALSE_POSITIVE_KINDS))
        if reason == "duplicate":
            fields["duplicate_of"] = F2
    return new_review(F1, draw(st.sampled_from(["alice", "bob"])), action, at,
                      prev_review_id=prev, **fields)


@st.composite
def review_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Any sequence of well-formed reviews of one finding (allowed or not), each written
    against the trail of those before it that a ledger would have kept (its
    prev_review_id), at a time no earlier than theirs."""
    made, status, at = list[dict[str, Any]](), ReviewStatus(), T0
    for _ in range(draw(st.integers(0, 12))):
        at += draw(st.integers(0, 1000))
        record = _some_review(draw, at, status.last_review_id)
        made.append(record)
        if record["review_id"] not in {r["review_id"] for r in made[:-1]}:
            with contextlib.suppress(TrailError):
                status = step(status, record)
    return made


def accepted(reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a ledger appending the reviews one by one keeps: each one its status allows."""
    kept, status = [], ReviewStatus()
    for record in reviews:
        try:
            status = step(status, record)
        except TrailError:
            continue
        kept.append(record)
    return kept


@settings(max_examples=examples(300))
@given(review_sequences())
def test_every_accepted_sequence_folds_and_every_prefix_agrees(
        reviews: list[dict[str, Any]]) -> None:
    kept = accepted(reviews)
    status = ReviewStatus()
    for n, record in enumerate(kept, 1):
        status = step(status, record)
        assert fold(kept[:n]) == status  # the fold of a prefix is the status so far
        assert status.state in ("open", "acknowledged", "assigned", "resolved")
        assert (status.state == "assigned") <= (status.assignee is not None)
        assert (status.state == "resolved") == (status.reason is not None)
    assert fold(kept) == fold(list(kept)) == status  # deterministic
    assert status.reviews == len(kept)
    assert status.reopened == sum(1 for r in kept if r["action"] == "reopen")


@settings(max_examples=examples(300))
@given(review_sequences())
def test_a_refused_step_is_exactly_one_the_table_does_not_allow(
        reviews: list[dict[str, Any]]) -> None:
    status = ReviewStatus()
    for record in reviews:
        allowed = status.state in ALLOWED_FROM[record["action"]]
        try:
            after = step(status, record)
        except TrailError:
            assert not allowed
            continue
        assert allowed
        if record["action"] == "comment":
            assert after.state == status.state and after.assignee == status.assignee
        status = after


# -- exceptions --------------------------------------------------------------------------


def exception(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"account_id": "acct1", "reason": "DPA with the provider",
                              "author": "alice", "from_ms": T0, "to_ms": T0 + 1000,
                              "expires_at_ms": T0 + 5000, "at_ms": T0 + 10,
                              "provider": "prov", "rule": None}
    return new_exception(**(fields | changes))


def a_finding(**changes: Any) -> dict[str, Any]:
    return {"finding_id": F1, "account_id": "acct1", "provider": "prov",
            "rule": "covert-profile-view", "occurred_at": T0 + 500} | changes


def test_an_exception_covers_its_scope_only() -> None:
    e = exception()
    assert covers(e, a_finding())
    assert covers(e, a_finding(occurred_at=T0)) and not covers(e, a_finding(occurred_at=T0 + 1000))
    assert not covers(e, a_finding(occurred_at=T0 - 1))
    assert not covers(e, a_finding(account_id="acct2"))
    assert not covers(e, a_finding(provider="other"))
    assert covers(e, a_finding(rule="any-rule"))  # no rule named: every rule
    assert not covers(exception(rule="covert-profile-view"), a_finding(rule="other"))
    assert covers(exception(provider=None), a_finding(provider="other"))
    assert not covers(e, a_finding(occurred_at="soon"))


def test_in_force_until_it_expires() -> None:
    e = exception()
    assert not in_force(e, T0 + 9) and in_force(e, T0 + 10) and in_force(e, T0 + 4999)
    assert not in_force(e, T0 + 5000)
    assert covering([e], a_finding(), T0 + 100) == [e]
    assert covering([e], a_finding(), T0 + 6000) == []  # expired: no longer excepted
    assert covering([e], a_finding(account_id="x"), T0 + 100) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"account_id": ""}, "account_id"),
    ({"reason": None}, "reason"),
    ({"author": 3}, "author"),
    ({"provider": ""}, "provider"),
    ({"rule": 5}, "rule"),
    ({"from_ms": T0 + 1000}, "from_ms is not earlier"),
    ({"to_ms": 1.5}, "to_ms"),
    ({"expires_at_ms": T0}, "expires_at_ms is not later"),
])
def test_a_malformed_exception_is_refused_naming_the_field(change: dict[str, Any],
                                                           field: str) -> None:
    with pytest.raises(TrailError, match=field):
        exception(**change)


def test_a_changed_exception_no_longer_has_its_id() -> None:
    e = exception()
    check_exception(e)
    with pytest.raises(TrailError, match="exception_id is not the SHA-256"):
        check_exception(e | {"expires_at_ms": T0 + 10**9})
    with pytest.raises(TrailError, match="does not take"):
        check_exception(e | {"extra": 1})


@settings(max_examples=examples(100))
@given(review_sequences())
def test_the_ledger_accepts_exactly_the_reviews_the_fold_allows(
        reviews: list[dict[str, Any]]) -> None:
    """Appended one by one to a real (SQLite) ledger: it stores exactly the reviews the
    fold allows (each once), refuses the others with InvalidRecord, and its status is
    the fold of what it stored."""
    import tempfile
    from pathlib import Path
    from unittest import mock

    from streams.evidence.ledger import InvalidRecord, open_ledger

    findings = [{"finding_id": fid, "rule": "covert-profile-view", "subject_id": "u-1",
                 "account_id": "acct1", "occurred_at": T0} for fid in (F1, F2)]
    with tempfile.TemporaryDirectory() as folder, \
            mock.patch("streams.evidence.ledger.sql._now_ms", lambda: T0), \
            open_ledger(str(Path(folder) / "ledger.db")) as store:
        store.append("finding", findings)
        for record in reviews:
            try:
                store.append("review", [record])
            except InvalidRecord as exc:
                assert str(exc).startswith("review refused: ")
        stored = [entry.record for entry in store.reviews(F1)]
        ledger_status = store.review_status(F1)
    # the ledger's rule: a review already stored is skipped, else stored if allowed
    expected, status = list[dict[str, Any]](), ReviewStatus()
    for record in reviews:
        if record["review_id"] in {r["review_id"] for r in expected}:
            continue
        try:
            status = step(status, record)
        except TrailError:
            continue
        expected.append(record)
    assert stored == expected
    assert fold(stored) == status == ledger_status
