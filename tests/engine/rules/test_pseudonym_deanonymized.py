"""`pseudonym-deanonymized` (spec: "Rules"), firing and not firing, at its boundaries.

Each test builds a tiny stream with `tests.builders`, runs it through the engine
to the end (flush), and checks which findings came out, with which evidence.
"""

from __future__ import annotations

import pytest

from streams.model.findings import Finding
from tests.builders import (
    SEC,
    SUBJECT,
    joined,
    matched,
    run,
    viewed,
)
from tests.engine.rules.cases import (
    COVERT_VIEW,
    PSEUDONYM,
    ids,
    one,
    rules_of,
)

# -- pseudonym-deanonymized -------------------------------------------------------------


def _pseudonym_case(display: str, profile: str, **view: object) -> tuple[list[Finding], dict]:
    j = joined(-60 * SEC, display_name=display)
    m = matched(-50 * SEC, profile_name=profile)
    v = viewed(0, **view)
    findings, _, _ = run([j, m, v])
    return findings, v


def test_pseudonym_fires_with_join_match_and_view_as_evidence() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    f = one(findings, PSEUDONYM, v)
    assert f.evidence_event_ids == ids(j, m, v)
    assert f.severity == "CRITICAL"


@pytest.mark.parametrize(
    ("display", "profile", "pseudonym"),
    [
        ("zoe", "Zoë Müller", False),          # the spec's example: they share "zoe"
        ("Night Owl", "Zoë Müller", True),     # the spec's example: nothing shared
        ("Zoë Müller", "ZOE MULLER", False),
        ("Straße", "Max Strasse", False),      # casefold
        ("Ｒｏｗａｎ", "Rowan Vale", False),    # NFKD: full-width letters
        ("R V", "Rowan Vale", True),           # one-letter tokens are ignored
        ("R. Vale", "Rowan Vale", False),
        ("J", "J Smith", True),                # "j" is no token, so nothing is shared
        ("rowan.vale", "Rowan Vale", False),   # punctuation splits
        ("Jean-Luc", "Luc Picard", False),
        ("O'Neil", "Shaq O'Neal", True),       # "o" is dropped; "neil" != "neal"
        ("vale_", "Rowan Vale", False),        # "_" is not a letter or digit
        ("Agent 47", "47 Smith", False),       # digits are tokens
        ("Alice Liddell", "Alice Liddell", False),
        ("राम", "राम", False),                 # Devanagari: the vowel sign is a mark, dropped
    ],
)
def test_pseudonym_tokenisation(display: str, profile: str, pseudonym: bool) -> None:
    findings, v = _pseudonym_case(display, profile)
    assert (PSEUDONYM in rules_of(findings, v)) is pseudonym


def test_later_failed_match_does_not_undo_an_earlier_named_match() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    failed = matched(-40 * SEC, matched=False, profile_name=None)
    unnamed = matched(-30 * SEC, matched=True, profile_name=None)
    v = viewed(0)
    findings, _, _ = run([j, m, failed, unnamed, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


def test_failed_match_with_a_profile_name_is_not_a_match() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    failed = matched(-50 * SEC, matched=False, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, failed, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_latest_named_match_decides() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m1 = matched(-50 * SEC, profile_name="Rowan Vale")
    m2 = matched(-40 * SEC, profile_name="Night Owl")
    v = viewed(0)
    findings, _, _ = run([j, m1, m2, v])
    assert PSEUDONYM not in rules_of(findings, v)
    j, m1, m2, v = (joined(-60 * SEC, display_name="Night Owl"),
                    matched(-50 * SEC, profile_name="Night Owl"),
                    matched(-40 * SEC, profile_name="Rowan Vale"), viewed(0))
    findings, _, _ = run([j, m1, m2, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m2, v)


def test_latest_join_in_the_view_meeting_decides() -> None:
    j1 = joined(-60 * SEC, display_name="Rowan Vale")
    j2 = joined(-55 * SEC, display_name="Night Owl")
    elsewhere = joined(-52 * SEC, display_name="Rowan Vale", meeting_id="m2")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j1, j2, elsewhere, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j2, m, v)


def test_join_in_another_meeting_does_not_count() -> None:
    j = joined(-60 * SEC, display_name="Night Owl", meeting_id="m2")
    m = matched(-50 * SEC, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_match_for_another_provider_does_not_count() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale", provider="apollo")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert PSEUDONYM not in rules_of(findings, v)


def test_match_in_another_meeting_of_the_same_provider_counts() -> None:
    j = joined(-60 * SEC, display_name="Night Owl")
    m = matched(-50 * SEC, profile_name="Rowan Vale", meeting_id="m0")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


def test_join_and_match_after_the_view_do_not_count() -> None:
    v = viewed(0)
    j = joined(1, display_name="Night Owl")
    m = matched(2, profile_name="Rowan Vale")
    findings, _, _ = run([v, j, m])
    assert PSEUDONYM not in rules_of(findings, v)


def test_join_and_match_at_the_view_millisecond_count() -> None:
    j = joined(0, display_name="Night Owl")
    m = matched(0, profile_name="Rowan Vale")
    v = viewed(0)
    findings, _, _ = run([j, m, v])
    assert one(findings, PSEUDONYM, v).evidence_event_ids == ids(j, m, v)


@pytest.mark.parametrize("missing", ["join", "match"])
def test_pseudonym_needs_both_join_and_match(missing: str) -> None:
    records = [joined(-60 * SEC, display_name="Night Owl"),
               matched(-50 * SEC, profile_name="Rowan Vale")]
    records.pop(0 if missing == "join" else 1)
    v = viewed(0)
    findings, _, _ = run([*records, v])
    assert PSEUDONYM not in rules_of(findings, v)


@pytest.mark.parametrize(
    ("disclosed", "fires"),
    [
        (["user.name"], True),
        (["user.workplace", "user.name"], True),
        (["user.name.last"], True),                     # user.name covers it
        (["user.workplace", "user.job_title"], False),  # no name disclosed
        (["user.nam"], False),                          # a string prefix, not covered
        (["user.name_pronunciation"], False),
        (["user"], False),                              # user.name does not cover `user`
        ([], False),
    ],
)
def test_pseudonym_needs_a_disclosed_category_covered_by_user_name(disclosed: list[str],
                                                                    fires: bool) -> None:
    findings, v = _pseudonym_case("Night Owl", "Rowan Vale", data_disclosed=disclosed)
    assert (PSEUDONYM in rules_of(findings, v)) is fires
    assert COVERT_VIEW in rules_of(findings, v)


def test_pseudonym_not_raised_for_ones_own_view() -> None:
    findings, v = _pseudonym_case("Night Owl", "Rowan Vale", viewer_id=SUBJECT)
    assert rules_of(findings, v) == set()
