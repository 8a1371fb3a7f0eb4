"""Order, duplicates and ids (spec: "Event time, lateness and absence", "Findings").

(a) Any arrival order in which no event arrives more than `allowed_lateness`
    behind the greatest `occurred_at` already seen gives the findings of the
    sorted stream.
(b) Duplicating events (each copy after its original, within the same bound)
    changes nothing.
(c) Findings never repeat a `finding_id`, and it is sha256(rule|trigger).

Checked on every worked example of the spec and on generated scenarios.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import Engine
from streams.model.findings import Amendment
from tests.builders import DAY, T0, Record, run
from tests.conftest import example_cases
from tests.hypothesis_profiles import examples

SETTINGS = settings(max_examples=examples(150), deadline=None)

# Several arrival orders per generated scenario: the costly part is finding a scenario
# where a misordering matters, and then every order is cheap.
ORDERS_PER_SCENARIO = 6

Key = tuple[str, str, str, tuple[str, ...]]  # rule, subject_id, trigger, evidence
Params = dict[str, int]

SPEC_PARAMS: Params = {"allowed_lateness_ms": 30_000, "notice_grace_ms": 300_000}


# -- running and comparing ------------------------------------------------------------------


class Outcome(NamedTuple):
    keys: frozenset[Key]
    amendments: list[Amendment]
    engine: Engine


def outcome(records: list[Record], params: Params) -> Outcome:
    """The findings of one run as comparable keys; checks (c) on the way."""
    findings, amendments, engine = run(records, **params)
    ids = [f.finding_id for f in findings]
    assert len(ids) == len(set(ids)), "a finding_id was raised twice"
    for f in findings:
        assert f.finding_id == hashlib.sha256(
            f"{f.rule}|{f.trigger_event_id}".encode()).hexdigest()
        # The finding carries the very events it cites, in the order of their ids.
        cited = [e.event_id for e in f.evidence if not isinstance(e, dict)]
        assert cited == list(f.evidence_event_ids)
    keys = frozenset((f.rule, f.subject_id, f.trigger_event_id, tuple(f.evidence_event_ids))
                     for f in findings)
    assert len(keys) == len(findings)
    return Outcome(keys, amendments, engine)


def sorted_stream(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: r["occurred_at"])


def assert_bounded(order: list[Record], lateness: int) -> None:
    """No event arrives more than `lateness` behind the greatest occurred_at seen before it."""
    greatest = order[0]["occurred_at"]
    for record in order:
        t = record["occurred_at"]
        assert t >= greatest - lateness, "the generated order breaks the lateness bound"
        greatest = max(greatest, t)


def delays(n: int, lateness: int) -> st.SearchStrategy[list[int]]:
    # Mostly the extremes: on time, or exactly as late as allowed.
    one = st.one_of(st.just(0), st.just(lateness), st.just(0), st.just(lateness),
                    st.integers(0, lateness))
    return st.lists(one, min_size=n, max_size=n)


def jittered(records: list[Record], lateness: int, data: st.DataObject,
             copies: int = 0) -> list[Record]:
    """Sort by occurred_at + a delay in [0, lateness]; that keeps every event within the bound.

    With `copies`, that many duplicates of drawn events are mixed in, each with a delay
    no smaller than its original's and ordered after it on a tie.
    """
    n = len(records)
    wait = data.draw(delays(n, lateness), label="delays")
    rank = data.draw(st.permutations(range(n)), label="tie order")
    items = [(r["occurred_at"] + wait[i], rank[i] * 1000, i, r) for i, r in enumerate(records)]
    for _ in range(copies):
        i = data.draw(st.integers(0, n - 1), label="duplicated")
        extra = data.draw(st.integers(wait[i], lateness), label="copy delay")
        after = data.draw(st.integers(1, 999), label="copy tie order")
        copy = dict(records[i])
        items.append((copy["occurred_at"] + extra, rank[i] * 1000 + after, n, copy))
    items.sort(key=lambda item: (item[0], item[1], item[2]))
    return [item[3] for item in items]


# -- generated scenarios ----------------------------------------------------------------------

NAMES = ("Night Owl", "Rowan Vale", "Zoë Müller", "zoe", "R. Vale", "J")
CATEGORIES = ("user.name", "user.name.last", "user.contact", "user.contact.email",
              "user.job_title", "user.workplace", "user")
USES = ("third_party_sharing.enrichment", "third_party_sharing.enrichment",
        "third_party_sharing", "third_party", "analytics")

# Each scenario picks a few instants, a few minutes apart at most, with gaps of exactly
# 1 ms, the lateness or the grace; events happen at one of them, sometimes 1 ms off. So
# ties are common, and so are events exactly at (or 1 ms past) a deadline: notices at
# the grace, grants expiring at a request, state arriving as the watermark reaches it.
GAPS = (1, 10_000, 30_000, 60_000, 300_000)


def instants_from(gaps: list[int]) -> list[int]:
    moments = [T0]
    for gap in gaps:
        moments.append(moments[-1] + gap)
    return moments


instants = st.lists(st.sampled_from(GAPS), max_size=6).map(instants_from)
categories = st.lists(st.sampled_from(CATEGORIES), max_size=3, unique=True)
# Views mostly disclose a name, so the pseudonym rule has something to judge.
disclosed = st.sampled_from(CATEGORIES[:2]).map(lambda c: [c, "user.workplace"]) | categories


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Record], Params]:
    subjects = ("s1", "s2", "s3")[: draw(st.integers(2, 3))]
    meetings = ("m1", "m2")[: draw(st.integers(1, 2))]
    providers = ("p1", "p2")[: draw(st.integers(1, 2))]
    # The first of each is the likeliest, so that events line up often enough to fire.
    subject, meeting, provider = (st.sampled_from((keys[0], keys[0], *keys))
                                  for keys in (subjects, meetings, providers))
    times = st.builds(int.__add__, st.sampled_from(draw(instants, label="instants")),
                      st.sampled_from((0, 0, 0, 1, -1)))
    account = st.just("a1")
    common = {"account_id": account, "meeting_id": meeting, "subject_id": subject}
    kinds = [
        st.fixed_dictionaries({
            "type": st.just("ParticipantJoined"), "occurred_at": times, **common,
            "display_name": st.sampled_from(NAMES), "email": st.none(), "is_guest": st.booleans(),
        }),
        st.fixed_dictionaries({
            "type": st.just("EnrichmentRequested"), "occurred_at": times, **common,
            "provider": provider, "data_use": st.sampled_from(USES[:2]), "data_sent": categories,
            "trigger": st.sampled_from(("USER_ACTION", "AUTOMATIC")), "requested_by": st.none(),
        }),
        st.fixed_dictionaries({
            "type": st.just("EnrichmentMatched"), "occurred_at": times, **common,
            "provider": provider, "request_event_id": st.just("r0"),
            "matched": st.sampled_from((True, True, False)),
            "profile_name": maybe(st.sampled_from(NAMES)), "data_returned": categories,
        }),
        st.fixed_dictionaries({
            "type": st.just("ProfileViewed"), "occurred_at": times, **common,
            "viewer_id": st.sampled_from((*subjects, "viewer")), "provider": provider,
            "data_disclosed": disclosed,
        }),
        st.fixed_dictionaries({
            "type": st.just("ConsentChanged"), "occurred_at": times, "subject_id": subject,
            "consent_record_id": st.just("cr"), "data_use": st.sampled_from(USES),
            "provider": maybe(provider), "status": st.sampled_from(("GRANTED", "WITHDRAWN")),
            "data_categories": categories, "expires_at": maybe(times),
        }),
        st.fixed_dictionaries({
            "type": st.just("NoticeDelivered"), "occurred_at": times, "account_id": account,
            "subject_id": subject, "meeting_id": maybe(meeting),
            "notice_kind": st.sampled_from(("ENRICHMENT", "PROFILE_VIEW")),
            "provider": maybe(provider), "channel": st.just("in_meeting"),
            "notice_version": st.just("v3"),
        }),
        st.fixed_dictionaries({
            "type": st.just("FeatureToggled"), "occurred_at": times, "account_id": account,
            "meeting_id": maybe(meeting), "provider": provider, "enabled": st.booleans(),
            "actor_id": st.just("host1"),
        }),
    ]
    # Joins, matches and views twice as likely: a pseudonym needs all three to line up.
    joins, _, matches, views = kinds[:4]
    size = draw(st.integers(1, 30), label="events")
    records = draw(st.lists(st.one_of(*kinds, joins, matches, views),
                            min_size=size, max_size=size))
    for index, record in enumerate(records):
        record["event_id"] = f"e{index:03d}"
    params = {
        "allowed_lateness_ms": draw(st.sampled_from((10_000, 30_000))),
        "notice_grace_ms": draw(st.sampled_from((60_000, 300_000))),
        "notice_validity_ms": draw(st.sampled_from((120_000, 365 * DAY))),
    }
    return records, params


# -- the worked examples ----------------------------------------------------------------------


def load(case: Path, name: str) -> list[Record]:
    return [orjson.loads(line) for line in (case / name).read_bytes().splitlines()
            if line.strip()]


CASES = example_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_example_sorted_and_as_given_give_the_expected_findings(case: Path) -> None:
    records = load(case, "events.jsonl")
    expected = sorted((e["rule"], e["subject_id"], e["trigger_event_id"])
                      for e in load(case, "expected.jsonl"))
    for order in (sorted_stream(records), records):
        keys = outcome(order, SPEC_PARAMS).keys
        assert sorted((rule, subject, trigger) for rule, subject, trigger, _ in keys) == expected


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
@SETTINGS
@given(data=st.data())
def test_example_bounded_disorder_gives_the_sorted_findings(case: Path,
                                                            data: st.DataObject) -> None:
    records = load(case, "events.jsonl")
    baseline = outcome(sorted_stream(records), SPEC_PARAMS)
    lateness = SPEC_PARAMS["allowed_lateness_ms"]
    order = jittered(records, lateness, data)
    assert_bounded(order, lateness)
    result = outcome(order, SPEC_PARAMS)
    assert result.keys == baseline.keys
    assert result.amendments == []
    assert result.engine.stats.late == 0


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
@SETTINGS
@given(data=st.data())
def test_example_duplicates_change_nothing(case: Path, data: st.DataObject) -> None:
    records = load(case, "events.jsonl")
    baseline = outcome(sorted_stream(records), SPEC_PARAMS)
    lateness = SPEC_PARAMS["allowed_lateness_ms"]
    copies = data.draw(st.integers(1, 2 * len(records)), label="copies")
    order = jittered(records, lateness, data, copies)
    assert_bounded(order, lateness)
    result = outcome(order, SPEC_PARAMS)
    assert result.keys == baseline.keys
    assert result.amendments == []
    assert result.engine.stats.duplicates == copies


# -- generated scenarios ------------------------------------------------------------------------


@SETTINGS
@given(scenario=scenarios(), data=st.data())
def test_bounded_disorder_gives_the_sorted_findings(scenario: tuple[list[Record], Params],
                                                    data: st.DataObject) -> None:
    records, params = scenario
    baseline = outcome(sorted_stream(records), params)
    lateness = params["allowed_lateness_ms"]
    for _ in range(ORDERS_PER_SCENARIO):
        order = jittered(records, lateness, data)
        assert_bounded(order, lateness)
        result = outcome(order, params)
        assert result.keys == baseline.keys
        assert result.amendments == []
        assert result.engine.stats.late == 0


@SETTINGS
@given(scenario=scenarios(), data=st.data())
def test_duplicates_within_the_bound_change_nothing(scenario: tuple[list[Record], Params],
                                                    data: st.DataObject) -> None:
    records, params = scenario
    baseline = outcome(sorted_stream(records), params)
    lateness = params["allowed_lateness_ms"]
    copies = data.draw(st.integers(1, 2 * len(records)), label="copies")
    order = jittered(records, lateness, data, copies)
    assert_bounded(order, lateness)
    result = outcome(order, params)
    assert result.keys == baseline.keys
    assert result.amendments == []
    assert result.engine.stats.duplicates == copies


@SETTINGS
@given(scenario=scenarios(), data=st.data())
def test_duplicates_anywhere_after_the_original_change_nothing(
    scenario: tuple[list[Record], Params], data: st.DataObject
) -> None:
    """A duplicate is ignored however late it comes (here within minutes of event time)."""
    records, params = scenario
    order = sorted_stream(records)
    baseline = outcome(order, params)
    copies = data.draw(st.lists(st.integers(0, len(order) - 1), min_size=1, max_size=10),
                       label="duplicated")
    stream = list(order)
    for i in copies:
        position = stream.index(order[i])
        at = data.draw(st.integers(position + 1, len(stream)), label="copy position")
        stream.insert(at, dict(order[i]))
    result = outcome(stream, params)
    assert result.keys == baseline.keys
    assert result.amendments == []
    assert result.engine.stats.duplicates == len(copies)


@SETTINGS
@given(scenario=scenarios())
def test_sorted_stream_never_repeats_a_finding(scenario: tuple[list[Record], Params]) -> None:
    records, params = scenario
    result = outcome(sorted_stream(records), params)
    assert result.amendments == []
    # At most one finding per rule and trigger.
    pairs = [(rule, trigger) for rule, _, trigger, _ in result.keys]
    assert len(pairs) == len(set(pairs))
