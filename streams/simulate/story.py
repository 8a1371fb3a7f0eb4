"""Story units: one meeting, its participants, and everything that happens to them.

Each unit uses a fresh meeting and fresh subjects, so its facts alone decide its
triggers (see `truth.py`). What happens is drawn per participant: the name shown
(real, a variant, a pseudonym), the consent story (none, granted, narrower than
what is sent, refused, withdrawn, expiring, for another provider or data use, a
grant and a withdrawal at the same instant, expiring exactly at the send), the
notices (on time, standing, late, missing, for another meeting or provider,
exactly at the grace or one millisecond past it), automatic sends (likely where the
feature is on, and also where nobody turned it on: the story's bug), requests by
other participants, matches, and profile views.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from streams.model.events import (
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    Event,
    FeatureToggled,
    NoticeDelivered,
    ParticipantJoined,
    ProfileViewed,
)
from streams.simulate.people import Person, display_name, new_person
from streams.simulate.truth import Expected, Story, TruthParams, expected_findings

__all__ = ["DATA_USE", "PROVIDERS", "Account", "Ids", "StoryBuilder", "Unit"]

PROVIDERS = ("linkedin_sales_navigator", "zoominfo_enrich")
DATA_USE = "third_party_sharing.enrichment"
NOTICE_VERSION = "notice-2026.1"
_RETURNED = ("user.name", "user.workplace", "user.job_title", "user.location.imprecise",
             "user.social")
_FULL_SCOPES = (("user.name", "user.contact.email"), ("user",), ("user.name", "user.contact"))
_JURISDICTIONS = ("EU", "UK", "US-CA", None)

# Consent stories and their weights.
_CONSENT = (("none", 25), ("grant", 30), ("narrow", 8), ("refuse", 7), ("withdraw", 8),
            ("expiring", 8), ("expiry_exact", 2), ("other_provider", 4), ("tie", 2),
            ("other_use", 3), ("broader_use", 3))
# Notice stories (for both kinds) and their weights.
_NOTICE = (("on_time", 50), ("standing", 5), ("late", 13), ("missing", 22),
           ("other_meeting", 4), ("other_provider", 3), ("grace_exact", 2), ("grace_over", 1))


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    provider: str
    toggles: tuple[FeatureToggled, ...]  # account-wide, all at the start of the run
    enabled: bool  # what the platform believes: it sends automatically more often then


@dataclass(slots=True)
class Unit:
    events: list[Event]
    expected: list[Expected]


class Ids:
    """Deterministic identifiers: event ids from the seeded generator, the rest counted."""

    __slots__ = ("_rng", "meetings", "subjects")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.subjects = 0
        self.meetings = 0

    def event(self) -> str:
        # version=4 sets the RFC 9562 variant bits as well as the version
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def meeting(self) -> str:
        self.meetings += 1
        return f"mtg-{self.meetings:08d}"

    def subject(self, guest: bool) -> tuple[str, int]:
        self.subjects += 1
        return f"{'guest' if guest else 'user'}-{self.subjects:08d}", self.subjects


def _weighted(options: tuple[tuple[str, int], ...]) -> Callable[[random.Random], str]:
    names = [name for name, _ in options]
    weights = [weight for _, weight in options]
    return lambda rng: rng.choices(names, weights)[0]


_consent_story = _weighted(_CONSENT)
_notice_story = _weighted(_NOTICE)


@dataclass(slots=True)
class _Participant:
    subject_id: str
    person: Person
    guest: bool
    joined: int
    story: Story


class StoryBuilder:
    """Builds story units; every draw comes from the one seeded `random.Random`."""

    def __init__(self, rng: random.Random, ids: Ids, guest_share: float,
                 pseudonym_share: float, params: TruthParams) -> None:
        self.rng = rng
        self.ids = ids
        self.guest_share = guest_share
        self.pseudonym_share = pseudonym_share
        self.params = params

    # -- the parts ---------------------------------------------------------------------

    def _participant(self, account: Account, joined: int) -> _Participant:
        rng = self.rng
        guest = rng.random() < self.guest_share
        subject_id, number = self.ids.subject(guest)
        domain = "mail.example" if guest else f"{account.id}.example"
        person = new_person(rng, number, guest, domain)
        return _Participant(subject_id, person, guest, joined, Story(subject_id))

    def _join(self, p: _Participant, account: Account, meeting: str, at: int) -> None:
        pseudonym = self.rng.random() < self.pseudonym_share
        join = ParticipantJoined(self.ids.event(), at, account.id, meeting, p.subject_id,
                                 display_name(self.rng, p.person, pseudonym),
                                 p.person.email, p.guest)
        p.story.joins.append((join, pseudonym))

    def _consents(self, p: _Participant, provider: str, at: int,
                  automatic_at: int | None) -> None:
        rng, ids = self.rng, self.ids
        kind = _consent_story(rng)
        if kind == "none":
            return
        record = f"cr-{ids.event()}"
        use, for_provider = DATA_USE, rng.choice((None, provider))
        scope = rng.choice(_FULL_SCOPES)
        status, expires = "GRANTED", None
        if kind == "narrow":
            scope = ("user.name",)
        elif kind == "refuse":
            status = "WITHDRAWN"
        elif kind == "expiring":
            expires = at + rng.randint(10_000, 900_000)
        elif kind == "expiry_exact":
            # Expires at the very instant of the automatic send: no longer in force then.
            expires = automatic_at if automatic_at is not None and automatic_at > at \
                else at + 60_000
        elif kind == "other_provider":
            for_provider = next(x for x in PROVIDERS if x != provider)
        elif kind == "other_use":
            use = "third_party_sharing.analytics"
        elif kind == "broader_use":
            use = "third_party_sharing"

        def consent(when: int, status: str) -> ConsentChanged:
            return ConsentChanged(ids.event(), when, p.subject_id, record, use, for_provider,
                                  status, scope, expires if status == "GRANTED" else None,
                                  NOTICE_VERSION if rng.random() < 0.9 else None,
                                  rng.choice(_JURISDICTIONS))

        p.story.consents.append(consent(at, status))
        if kind == "withdraw":
            p.story.consents.append(consent(at + rng.randint(5_000, 600_000), "WITHDRAWN"))
        elif kind == "tie":
            p.story.consents.append(consent(at, "WITHDRAWN"))

    def _notice(self, p: _Participant, account: Account, meeting: str, kind: str,
                first_trigger: int | None) -> None:
        """One notice of `kind` per its story; `late` and the grace edges are measured from
        the subject's first trigger of that kind (or the join when there is none)."""
        rng = self.rng
        story = _notice_story(rng)
        if story == "missing":
            return
        anchor = first_trigger if first_trigger is not None else p.joined
        grace = self.params.notice_grace_ms
        provider: str | None = account.provider if rng.random() < 0.7 else None
        where: str | None = meeting
        channel = "in_meeting"
        at = p.joined + rng.randint(0, 5_000)
        if story == "standing":
            where, provider, channel = None, None, "email"
            at = p.joined + rng.randint(0, 60_000)
        elif story == "late":
            at = anchor + grace + rng.randint(1_000, 600_000)
        elif story == "other_meeting":
            where = f"{meeting}-breakout"
        elif story == "other_provider":
            provider = next(x for x in PROVIDERS if x != account.provider)
        elif story == "grace_exact":
            at = anchor + grace
        elif story == "grace_over":
            at = anchor + grace + 1
        p.story.notices.append(NoticeDelivered(self.ids.event(), at, account.id, p.subject_id,
                                               where, kind, provider, channel, NOTICE_VERSION))

    def _request(self, p: _Participant, account: Account, meeting: str, at: int,
                 trigger: str, requested_by: str | None) -> EnrichmentRequested:
        sent = ("user.name", "user.contact.email") if p.person.email else ("user.name",)
        request = EnrichmentRequested(self.ids.event(), at, account.id, meeting, p.subject_id,
                                      account.provider, DATA_USE, sent, trigger, requested_by)
        p.story.triggers.append(request)
        return request

    def _match(self, p: _Participant, request: EnrichmentRequested) -> EnrichmentMatched:
        rng = self.rng
        r = rng.random()
        matched = r < 0.7
        profile = p.person.profile_name if r < 0.65 else None
        returned = (tuple(c for c in _RETURNED if c == "user.name" or rng.random() < 0.6)
                    if matched else ())
        match = EnrichmentMatched(self.ids.event(), request.occurred_at + rng.randint(200, 2_500),
                                  request.account_id, request.meeting_id, p.subject_id,
                                  request.provider, request.event_id, matched, profile, returned)
        p.story.matches.append(match)
        return match

    def _views(self, p: _Participant, match: EnrichmentMatched,
               others: list[_Participant]) -> None:
        rng = self.rng
        r = rng.random()
        count = 0 if r < 0.4 else 1 if r < 0.75 else 2 if r < 0.93 else 3
        for _ in range(count):
            viewer = p if rng.random() < 0.04 or not others else rng.choice(others)
            disclosed = (("user.name", "user.workplace", "user.job_title") if rng.random() < 0.9
                         else ("user.workplace", "user.job_title"))
            p.story.triggers.append(ProfileViewed(
                self.ids.event(), match.occurred_at + rng.randint(5_000, 900_000),
                match.account_id, match.meeting_id, p.subject_id, viewer.subject_id,
                match.provider, disclosed))

    # -- units -------------------------------------------------------------------------

    def meeting(self, t0: int, account: Account) -> Unit:
        """A meeting starting at t0 (every event of the unit is at or after t0)."""
        rng, ids = self.rng, self.ids
        meeting = ids.meeting()
        toggles: list[FeatureToggled] = []
        enabled = account.enabled
        people = [self._participant(account, t0 + rng.randint(1_000, 120_000))
                  for _ in range(rng.randint(2, 7))]
        host = people[0].subject_id
        r = rng.random()
        if r < 0.12:  # the host turns the integration on or off for this meeting
            states = (True,) if r < 0.05 else (False,) if r < 0.10 else (True, False)
            toggles = [FeatureToggled(ids.event(), t0, account.id, meeting, account.provider,
                                      state, host) for state in states]
            enabled = len(states) == 1 and states[0]
        for p in people:
            others = [o for o in people if o is not p]
            self._join(p, account, meeting, p.joined)
            if rng.random() < 0.05:  # rejoins, maybe under another name
                self._join(p, account, meeting, p.joined + rng.randint(30_000, 600_000))
            automatic_at = (p.joined + rng.randint(500, 15_000)
                            if rng.random() < (0.95 if enabled else 0.4) else None)
            self._consents(p, account.provider, p.joined + rng.randint(1_000, 8_000),
                           automatic_at)
            requests = []
            if automatic_at is not None:
                requests.append(self._request(p, account, meeting, automatic_at, "AUTOMATIC",
                                              None))
            if rng.random() < 0.12:
                requests.append(self._request(p, account, meeting,
                                              p.joined + rng.randint(60_000, 900_000),
                                              "USER_ACTION", rng.choice(others).subject_id))
            for request in requests:
                match = self._match(p, request)
                if match.matched:
                    self._views(p, match, others)
            p.story.triggers.sort(key=lambda e: e.occurred_at)
            first_request = min((r.occurred_at for r in requests), default=None)
            first_view = min((t.occurred_at for t in p.story.triggers
                              if isinstance(t, ProfileViewed)), default=None)
            self._notice(p, account, meeting, "ENRICHMENT", first_request)
            self._notice(p, account, meeting, "PROFILE_VIEW", first_view)
        return self._unit(toggles, [p.story for p in people], account)

    def validity_edges(self, t0: int, account: Account) -> Unit:
        """Two subjects told by a standing notice exactly `notice_validity` before a request,
        and one millisecond earlier: the first counts, the second does not. Their notices
        are a year old, so this unit must open the stream."""
        ids = self.ids
        meeting = ids.meeting()
        people = [self._participant(account, t0 + 1_000 * i) for i in range(2)]
        for i, p in enumerate(people):
            self._join(p, account, meeting, p.joined)
            p.story.consents.append(ConsentChanged(
                ids.event(), p.joined + 1_000, p.subject_id, f"cr-{ids.event()}", DATA_USE,
                None, "GRANTED", ("user",), None, NOTICE_VERSION, "EU"))
            at = t0 + 60_000 + 1_000 * i
            request = self._request(p, account, meeting, at, "USER_ACTION",
                                    people[1 - i].subject_id)
            self._match(p, request)
            p.story.notices.append(NoticeDelivered(
                ids.event(), at - self.params.notice_validity_ms - i, account.id, p.subject_id,
                None, "ENRICHMENT", None, "email", NOTICE_VERSION))
        return self._unit([], [p.story for p in people], account)

    def _unit(self, meeting_toggles: list[FeatureToggled], stories: list[Story],
              account: Account) -> Unit:
        toggles = (*account.toggles, *meeting_toggles)
        events: list[Event] = list(meeting_toggles)
        expected: list[Expected] = []
        for story in stories:
            events.extend(join for join, _ in story.joins)
            events.extend(story.consents)
            events.extend(story.notices)
            events.extend(story.matches)
            events.extend(story.triggers)
            expected.extend(expected_findings(story, toggles, self.params))
        return Unit(events, expected)
