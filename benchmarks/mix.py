"""A deterministic, realistic mix of contract events for benchmarks.

    .venv/bin/python benchmarks/mix.py --events 1000000 --subjects 100000 --seed 1 \
        [--jsonl OUT.jsonl] [--avro OUT.avro] [--codec null|deflate|snappy]

With neither --jsonl nor --avro, both are written under benchmarks/data/ (git-ignored)
with names that encode the parameters (see `data_paths`).

The model (all drawn from one seeded `random.Random`, so a seed always gives the
same bytes):

* S subjects; about S/50 accounts of ~40 members each, the rest (20%) are
  platform guests with no account. Every subject has a real name (with non-ASCII
  letters on purpose), an email (most guests have none) and the name the
  enrichment provider holds for them (its `profile_name`: the real name, a
  transliteration such as "Zoe Mueller", or another form of it).
* Each account uses one of two providers and has a notice policy: diligent (notices
  on time), sloppy (some late, some missing) or silent (almost none).
* Account-wide FeatureToggled events open the run (about half the accounts enable
  the integration, a few disable it explicitly); accounts flip it now and then,
  and hosts toggle it for a single meeting.
* Meetings start one after the other (Poisson arrivals). Each has 2 to 12
  participants: members of the host account, members of other accounts and
  guests. Per participant: ParticipantJoined (display name: the real name, a
  variant that shares a token with it, or a pseudonym that shares none: the
  "pseudonym overrides" of the story, which the provider's real-name profile then
  de-anonymises), on the first meeting a consent prompt (grant, some with
  `expires_at` a few hours later so they expire within the run, some narrower
  than what is sent, some refusals; later withdrawals and re-grants), notices
  (ENRICHMENT and PROFILE_VIEW, delivered on time, late past the 300 s grace, or
  missing, per the account's policy; a few standing email notices), an AUTOMATIC
  EnrichmentRequested seconds after the join (almost always when the feature is on,
  often also when it is off: the story's bug), USER_ACTION requests by another
  participant, EnrichmentMatched for each request (70% matched), and 0 to 3
  ProfileViewed per match by other participants (a few self-views, a few without
  the name).

Event time advances at about 20 events per second (`EVENT_RATE`): 1,000,000 events
span ~14 hours, one business day across European and American office hours. For
100,000 subjects that is ~2 meetings per subject per day, ~1.6 meetings starting
per second and ~3,000 meetings running at once: the load of a mid-sized slice of a
meeting platform. It keeps every decision inside the engine's one-day amendment
horizon (a worst case for state size: nothing is pruned away as expired history),
while hourly pruning still runs.

Delivery order: each record is delivered at `occurred_at + jitter`, jitter uniform
in [0, 30 s) (`JITTER_MS`), so records arrive out of order but never later than the
engine's default 30 s allowed lateness (the findings equal those of the sorted
stream). About 1% of records are delivered twice (`DUPLICATE_RATE`), each copy with
its own jitter. N counts delivered records, duplicates included.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

# This checkout, or in a benchmark child told to run another tree, that tree
# (benchmarks/trees.py's ENV_VAR).
_ROOT = Path(os.environ.get("CONSENTWATCH_BENCH_CODE") or Path(__file__).resolve().parent.parent)
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import random  # noqa: E402

from streams.model.events import (  # noqa: E402
    ConsentChanged,
    EnrichmentMatched,
    EnrichmentRequested,
    Event,
    FeatureToggled,
    NoticeDelivered,
    ParticipantJoined,
    ProfileViewed,
)

__all__ = [
    "DATA_DIR",
    "DUPLICATE_RATE",
    "EVENT_RATE",
    "JITTER_MS",
    "MIX_VERSION",
    "PROVIDERS",
    "data_paths",
    "generate",
    "write_files",
]

MIX_VERSION = 1  # bump when the generated stream changes, so cached files are redone
DATA_DIR = Path(__file__).resolve().parent / "data"
START_MS = 1_772_434_800_000  # 2026-03-02T07:00:00Z, a Monday morning in Europe
EVENT_RATE = 20.0  # events per second of event time
JITTER_MS = 30_000  # delivery delay, uniform in [0, JITTER_MS)
DUPLICATE_RATE = 0.01
PROVIDERS = ("linkedin_sales_navigator", "zoominfo_enrich")
DATA_USE = "third_party_sharing.enrichment"

_FIRST = (
    "Zoë", "Rowan", "José", "Amélie", "Øyvind", "Łukasz", "Siobhán", "Mateo", "Aiko",
    "Priya", "Chen", "Fatima", "Jürgen", "Noah", "Olivia", "Liam", "Emma", "Ana", "Björn",
    "Chloé", "Dmitri", "Ingrid", "Kwame", "Leïla", "Marta", "Nikos", "Ramón", "Sofía",
    "Thu", "Yusuf", "Hana", "Grace", "Omar", "Elif", "Tomasz", "Aoife", "Raj", "Mei",
)
_LAST = (
    "Müller", "Vale", "García", "Dubois", "Hansen", "Kowalski", "O'Brien", "Rossi", "Tanaka",
    "Sharma", "Wang", "Haddad", "Schröder", "Smith", "Johnson", "Nguyễn", "Pérez", "Lindqvist",
    "Mensah", "Novák", "Petrov", "Silva", "Öztürk", "Kim", "Andersson", "Costa", "Brown",
    "Fernández", "Jensen", "Łęcki", "Moreau", "Papadopoulos", "Yilmaz", "Walsh", "Ibrahim",
)
_ASCII = str.maketrans({
    "ë": "e", "é": "e", "è": "e", "ï": "i", "á": "a", "ó": "o", "í": "i", "ø": "o", "Ø": "O",
    "Ł": "L", "ł": "l", "ü": "ue", "ö": "oe", "ä": "ae", "Ö": "Oe", "Ü": "Ue", "ñ": "n",
    "ễ": "e", "ę": "e", "ő": "o",
})
_PSEUDO_ADJ = ("Night", "Quiet", "Blue", "Silver", "Lucky", "Sleepy", "Brave", "Hidden")
_PSEUDO_NOUN = ("Owl", "Fox", "Heron", "Otter", "Comet", "Badger", "Falcon", "Maple")
_DEVICES = ("iPhone", "Galaxy S24", "Conference Room B", "Pixel", "MacBook Pro")
_JURISDICTIONS = ("EU", "EU", "UK", "US-CA", "US-VA", None)
_RETURNED = ("user.name", "user.workplace", "user.job_title", "user.location.imprecise",
             "user.social")

# Notice policy of an account: P(on time), P(late); the rest is missing.
_POLICIES = (("diligent", 0.92, 0.04), ("sloppy", 0.45, 0.25), ("silent", 0.05, 0.05))


class _Subject:
    __slots__ = ("account", "consent", "email", "guest", "id", "name", "profile",
                 "pseudonymous", "seen")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.profile = ""
        self.email: str | None = None
        self.account = -1  # home account index, -1 for a guest
        self.guest = False
        self.pseudonymous = False  # always joins under a pseudonym
        self.consent: str | None = None  # None, "GRANTED", "WITHDRAWN"
        self.seen = False  # has been in a meeting before


class _Account:
    __slots__ = ("enabled", "id", "members", "policy", "provider")

    def __init__(self, index: int, provider: str, policy: tuple[str, float, float]) -> None:
        self.id = f"acct-{index:05d}"
        self.provider = provider
        self.policy = policy
        self.members: list[_Subject] = []
        self.enabled = False


def data_paths(n_events: int, n_subjects: int, seed: int,
               data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """The cached JSON Lines and Avro files for these parameters."""
    stem = f"mix-v{MIX_VERSION}-{n_events}e-{n_subjects}s-seed{seed}"
    return data_dir / f"{stem}.jsonl", data_dir / f"{stem}.avro"


def generate(  # noqa: PLR0915 - one simulation, kept in one piece
    n_events: int, n_subjects: int, seed: int = 1
) -> Iterator[Event]:
    """Yield exactly `n_events` records (duplicates included) in delivery order."""
    if n_events <= 0:
        return
    if n_subjects < 4:
        raise ValueError("need at least 4 subjects")
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    choice = rng.choice

    def new_id() -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    # -- the population ---------------------------------------------------------------
    n_accounts = max(1, n_subjects // 50)
    accounts = [
        _Account(
            i,
            PROVIDERS[0] if rand() < 0.75 else PROVIDERS[1],
            _POLICIES[0] if (p := rand()) < 0.55 else _POLICIES[1] if p < 0.85 else _POLICIES[2],
        )
        for i in range(n_accounts)
    ]
    subjects: list[_Subject] = []
    guests: list[_Subject] = []
    for i in range(n_subjects):
        s = _Subject()
        first, last = choice(_FIRST), choice(_LAST)
        s.name = f"{first} {last}"
        r = rand()
        if r < 0.85:
            s.profile = s.name
        elif r < 0.95:
            s.profile = s.name.translate(_ASCII)
        else:
            s.profile = f"{first} {choice(_LAST)}-{last}"
        s.pseudonymous = rand() < 0.06
        if rand() < 0.2:
            s.guest = True
            s.id = f"guest-{i:07d}"
            if rand() < 0.3:
                s.email = f"{first.translate(_ASCII).lower()}{i}@mail.example"
            guests.append(s)
        else:
            account = accounts[i % n_accounts]
            s.account = i % n_accounts
            s.id = f"user-{i:07d}"
            s.email = f"{first.translate(_ASCII).lower()}.{i}@{account.id}.example"
            account.members.append(s)
        subjects.append(s)
    for account in accounts:
        if not account.members:  # tiny populations: borrow anyone
            account.members.append(choice(subjects))
    if not guests:
        guests = subjects

    # -- delivery: a heap of (delivery time, seq, event) ----------------------------
    heap: list[tuple[int, int, Event]] = []
    seq = 0

    def deliver(event: Event) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (event.occurred_at + int(rand() * JITTER_MS), seq, event))
        if rand() < DUPLICATE_RATE:
            seq += 1
            heapq.heappush(heap, (event.occurred_at + int(rand() * JITTER_MS), seq, event))

    # -- the run opens with account-wide toggles ---------------------------------------
    for account in accounts:
        r = rand()
        if r < 0.6:
            account.enabled = r < 0.5
            deliver(FeatureToggled(new_id(), START_MS + randint(0, 60_000), account.id, None,
                                   account.provider, account.enabled,
                                   f"admin-{account.id}"))

    def display_name(s: _Subject) -> str:
        r = rand()
        if s.pseudonymous or r < 0.03:
            r2 = rand()
            if r2 < 0.6:
                return f"{choice(_PSEUDO_ADJ)} {choice(_PSEUDO_NOUN)}"
            if r2 < 0.8:
                return f"Guest {randint(1000, 9999)}"
            return choice(_DEVICES)
        if r < 0.15:
            first, last = s.name.split(" ", 1)
            r2 = rand()
            if r2 < 0.4:
                return first
            if r2 < 0.7:
                return f"{first} {last[0]}."
            return f"{first.translate(_ASCII).lower()} {last.lower()}"
        return s.name

    def consent_event(s: _Subject, at: int, status: str) -> ConsentChanged:
        r = rand()
        if r < 0.5:
            categories: tuple[str, ...] = ("user.name", "user.contact.email")
        elif r < 0.7:
            categories = ("user",)
        else:
            categories = ("user.name",)  # narrower than what is sent with an email
        expires = at + randint(2, 12) * 3_600_000 if status == "GRANTED" and rand() < 0.25 \
            else None
        return ConsentChanged(
            new_id(), at, s.id, f"cr-{new_id()}",
            DATA_USE if rand() < 0.8 else "third_party_sharing",
            None if rand() < 0.5 else choice(PROVIDERS),
            status, categories, expires,
            "notice-2026.1" if rand() < 0.9 else None,
            choice(_JURISDICTIONS),
        )

    def notices(s: _Subject, account: _Account, meeting: str, at: int, kind: str) -> None:
        _, on_time, late = account.policy
        r = rand()
        if r < on_time:
            when = at + randint(0, 5_000)
        elif r < on_time + late:
            when = at + randint(320_000, 900_000)  # past the 300 s grace: too late
        else:
            return
        deliver(NoticeDelivered(new_id(), when, account.id, s.id, meeting, kind,
                                account.provider if rand() < 0.7 else None,
                                "in_meeting", "notice-2026.1"))

    def request(s: _Subject, account: _Account, meeting: str, at: int, trigger: str,
                requested_by: str | None, viewers: list[_Subject], end: int) -> None:
        provider = account.provider
        sent = ("user.name", "user.contact.email") if s.email else ("user.name",)
        rid = new_id()
        deliver(EnrichmentRequested(rid, at, account.id, meeting, s.id, provider, DATA_USE,
                                    sent, trigger, requested_by))
        at += randint(200, 2_500)
        matched = rand() < 0.7
        if matched:
            returned = tuple(c for c in _RETURNED if c == "user.name" or rand() < 0.6)
            profile = s.profile if rand() < 0.9 else None
        else:
            returned, profile = (), None
        deliver(EnrichmentMatched(new_id(), at, account.id, meeting, s.id, provider, rid,
                                  matched, profile, returned))
        if not matched:
            return
        r = rand()
        views = 0 if r < 0.45 else 1 if r < 0.8 else 2 if r < 0.95 else 3
        for _ in range(views):
            viewer = s if rand() < 0.03 or not viewers else choice(viewers)
            disclosed = (("user.name", "user.workplace", "user.job_title") if rand() < 0.9
                         else ("user.workplace", "user.job_title"))
            when = min(at + randint(5_000, 900_000), end)
            deliver(ProfileViewed(new_id(), max(when, at), account.id, meeting, s.id,
                                  viewer.id, provider, disclosed))

    # -- meetings ------------------------------------------------------------------------
    emitted = 0
    t0 = START_MS + 60_000
    meeting_no = 0
    while True:
        before = seq
        meeting_no += 1
        meeting = f"mtg-{meeting_no:08d}"
        account = choice(accounts)
        duration = randint(15, 60) * 60_000
        end = t0 + duration
        # occasional account-wide flip, and per-meeting host toggles
        if rand() < 0.004:
            account.enabled = not account.enabled
            deliver(FeatureToggled(new_id(), t0, account.id, None, account.provider,
                                   account.enabled, choice(account.members).id))
        enabled = account.enabled
        if rand() < 0.06:
            enabled = not enabled
            deliver(FeatureToggled(new_id(), t0 + randint(0, 30_000), account.id, meeting,
                                   account.provider, enabled, choice(account.members).id))
        k = min(12, 2 + int(rng.expovariate(1 / 3.0)))
        people: list[_Subject] = []
        ids: set[str] = set()
        for _ in range(k * 2):
            if len(people) == k:
                break
            r = rand()
            if r < 0.7:
                s = choice(account.members)
            elif r < 0.85:
                s = choice(subjects)
            else:
                s = choice(guests)
            if s.id not in ids:
                ids.add(s.id)
                people.append(s)
        for s in people:
            joined = t0 + (randint(0, 120_000) if rand() < 0.8 else randint(0, duration // 2))
            deliver(ParticipantJoined(new_id(), joined, account.id, meeting, s.id,
                                      display_name(s), s.email, s.guest))
            # consent: a prompt on the first meeting, changes of mind later
            if not s.seen:
                s.seen = True
                r = rand()
                if r < 0.45:
                    s.consent = "GRANTED"
                elif r < 0.5:
                    s.consent = "WITHDRAWN"
                if s.consent is not None:
                    deliver(consent_event(s, joined + randint(1_000, 10_000), s.consent))
                if rand() < 0.05:  # a standing notice by email
                    deliver(NoticeDelivered(new_id(), joined + randint(0, 60_000), account.id,
                                            s.id, None, "ENRICHMENT", None, "email",
                                            "notice-2026.1"))
            elif s.consent == "GRANTED" and rand() < 0.04:
                s.consent = "WITHDRAWN"
                deliver(consent_event(s, joined + randint(0, 30_000), "WITHDRAWN"))
            elif s.consent == "WITHDRAWN" and rand() < 0.1:
                s.consent = "GRANTED"
                deliver(consent_event(s, joined + randint(0, 30_000), "GRANTED"))
            notices(s, account, meeting, joined, "ENRICHMENT")
            notices(s, account, meeting, joined, "PROFILE_VIEW")
            others = [p for p in people if p is not s]
            if rand() < (0.95 if enabled else 0.35):
                request(s, account, meeting, joined + randint(500, 3_000), "AUTOMATIC", None,
                        others, end)
        if rand() < 0.3 and len(people) > 1:
            requester, target = rng.sample(people, 2)
            request(target, account, meeting, t0 + randint(60_000, duration), "USER_ACTION",
                    requester.id, [p for p in people if p is not target], end)
        # Everything still to come happens at or after the next meeting's start, so what
        # is due before it can go out now, in delivery order.
        t0 += max(1, int(rng.expovariate(1.0) * (seq - before) * 1000 / EVENT_RATE))
        while heap and heap[0][0] < t0:
            yield heapq.heappop(heap)[2]
            emitted += 1
            if emitted == n_events:
                return


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_files(n_events: int, n_subjects: int, seed: int, jsonl: Path | None,
                avro: Path | None, codec: str = "null") -> int:
    """Write the mix to either or both files in one pass; returns the record count."""
    from streams.serde.jsonl import write_events_jsonl

    events: Iterable[Event] = generate(n_events, n_subjects, seed)
    tmp_jsonl = _atomic(jsonl) if jsonl else None
    tmp_avro = _atomic(avro) if avro else None
    jsonl_out = open(tmp_jsonl, "wb") if tmp_jsonl else None  # noqa: SIM115
    try:
        if tmp_avro is not None:
            from streams.serde.avro import write_event_container

            if jsonl_out is not None:
                events = _tee_jsonl(events, jsonl_out)
            counter = _Counter(events)
            with open(tmp_avro, "wb") as fo:
                write_event_container(fo, counter, codec=codec)
            count = counter.count
        else:
            assert jsonl_out is not None
            count = write_events_jsonl(jsonl_out, events)
    finally:
        if jsonl_out is not None:
            jsonl_out.close()
    if tmp_jsonl is not None and jsonl is not None:
        tmp_jsonl.replace(jsonl)
    if tmp_avro is not None and avro is not None:
        tmp_avro.replace(avro)
    return count


class _Counter:
    def __init__(self, events: Iterable[Event]) -> None:
        self._events = events
        self.count = 0

    def __iter__(self) -> Iterator[Event]:
        for event in self._events:
            self.count += 1
            yield event


def _tee_jsonl(events: Iterable[Event], out: object) -> Iterator[Event]:
    from streams.serde.jsonl import write_events_jsonl

    for event in events:
        write_events_jsonl(out, (event,))  # type: ignore[arg-type]
        yield event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, help="write JSON Lines here")
    parser.add_argument("--avro", type=Path, help="write an Avro object container here")
    parser.add_argument("--codec", default="null", help="Avro block codec (default null)")
    parser.add_argument("--stats", action="store_true",
                        help="print the mix's composition instead of writing files")
    args = parser.parse_args(argv)
    if args.stats:
        _print_stats(args.events, args.subjects, args.seed)
        return 0
    jsonl, avro = args.jsonl, args.avro
    if jsonl is None and avro is None:
        jsonl, avro = data_paths(args.events, args.subjects, args.seed)
    started = time.perf_counter()
    count = write_files(args.events, args.subjects, args.seed, jsonl, avro, args.codec)
    took = time.perf_counter() - started
    for path in (jsonl, avro):
        if path is not None:
            print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    print(f"{count} events in {took:.1f} s", file=sys.stderr)
    return 0


def _print_stats(n_events: int, n_subjects: int, seed: int) -> None:
    from collections import Counter

    kinds: Counter[str] = Counter()
    detail: Counter[str] = Counter()
    ids: set[str] = set()
    subjects: set[str] = set()
    first = last = None
    behind = late = 0
    max_seen = -(1 << 62)
    for e in generate(n_events, n_subjects, seed):
        kinds[e.TYPE] += 1
        if e.event_id in ids:
            detail["duplicates"] += 1
        ids.add(e.event_id)
        if hasattr(e, "subject_id"):
            subjects.add(e.subject_id)
        if type(e) is EnrichmentRequested:
            detail[f"request {e.trigger}"] += 1
        elif type(e) is ConsentChanged:
            detail[f"consent {e.status}{' expiring' if e.expires_at else ''}"] += 1
        elif type(e) is FeatureToggled:
            detail[f"toggle {'meeting' if e.meeting_id else 'account'} {e.enabled}"] += 1
        elif type(e) is EnrichmentMatched:
            detail[f"match {e.matched} {'named' if e.profile_name else 'unnamed'}"] += 1
        elif type(e) is NoticeDelivered:
            where = "standing" if e.meeting_id is None else "meeting"
            detail[f"notice {e.notice_kind} {where}"] += 1
        t = e.occurred_at
        first = t if first is None else min(first, t)
        last = t if last is None else max(last, t)
        if t < max_seen:
            behind += 1
        if t < max_seen - 30_000:
            late += 1
        max_seen = max(max_seen, t)
    total = sum(kinds.values())
    for name, count in kinds.most_common():
        print(f"{name:22} {count:9} {100 * count / total:5.1f}%")
    for name, count in sorted(detail.items()):
        print(f"  {name:30} {count:9}")
    assert first is not None and last is not None
    span = (last - first) / 1000
    print(f"subjects seen {len(subjects)}, event time span {span / 3600:.2f} h, "
          f"{total / span:.1f} events/s of event time, {behind} behind the newest event, "
          f"{late} more than 30 s behind (late)")


if __name__ == "__main__":
    sys.exit(main())
