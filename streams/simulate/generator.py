"""The simulated stream: story units laid out in event time, delivered out of order.

The stream opens with the account-wide feature toggles and one unit whose notices
are a year old (the notice-validity edge), then meetings start one after the other
(Poisson arrivals, about `event_rate` events per second of event time). Each event
is delivered at `occurred_at + delay`, the delay uniform in [0, max_delay): an
event is never `max_delay` or more behind the newest event delivered before it, so
with `max_delay` at most the allowed lateness nothing is late and the findings are
those of the sorted stream. About `duplicate_share` of the events are delivered a
second time, with their own delay.

Memory stays flat: only the events of the meetings still running wait in a heap.
Every unit is complete (so its truth holds): a unit that would overshoot the
requested count is not started, and the rest of the count is made of lobby joins
that raise nothing. The same configuration always gives the same events.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streams.errors import ConfigError
from streams.model.events import Event, FeatureToggled, ParticipantJoined
from streams.simulate.story import PROVIDERS, Account, Ids, StoryBuilder, Unit
from streams.simulate.truth import Expected, TruthParams

__all__ = ["DEFAULT_START_MS", "SimulationConfig", "simulate"]

DEFAULT_START_MS = 1_772_438_400_000  # 2026-03-02T08:00:00Z, a Monday morning


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    seed: int = 1
    events: int = 10_000
    guest_share: float = 0.2
    pseudonym_share: float = 0.1
    duplicate_share: float = 0.01
    max_delay_ms: int = 30_000  # keep at most the engine's allowed lateness
    event_rate: float = 20.0  # events per second of event time
    start_ms: int = DEFAULT_START_MS
    notice_grace_ms: int = 300_000
    notice_validity_ms: int = 365 * 86_400_000

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ConfigError("the number of events cannot be negative")
        for name in ("guest_share", "pseudonym_share", "duplicate_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 0 and 1")
        if self.max_delay_ms < 1:
            raise ConfigError("the maximum delivery delay must be at least 1 ms")
        if self.event_rate <= 0:
            raise ConfigError("the event rate must be positive")

    @property
    def accounts(self) -> int:
        return max(1, min(1_000, self.events // 500))


_ACCOUNT_STATES = (("on", 55), ("never", 20), ("off", 10), ("on_then_off", 7),
                   ("other_provider", 5), ("tie", 3))


def _accounts(rng: random.Random, ids: Ids, count: int, start: int) -> list[Account]:
    """The accounts, each with its provider and its account-wide toggles at the start."""
    names = [name for name, _ in _ACCOUNT_STATES]
    weights = [weight for _, weight in _ACCOUNT_STATES]
    accounts = []
    for index in range(count):
        account_id = f"acct-{index + 1:05d}"
        provider = PROVIDERS[0] if rng.random() < 0.75 else PROVIDERS[1]
        state = rng.choices(names, weights)[0]
        at = start + 1_000 * index
        other = next(p for p in PROVIDERS if p != provider)
        plan: tuple[tuple[int, bool, str], ...] = {
            "on": ((at, True, provider),),
            "never": (),
            "off": ((at, False, provider),),
            "on_then_off": ((at, True, provider), (at + 500, False, provider)),
            "other_provider": ((at, True, other),),
            "tie": ((at, True, provider), (at, False, provider)),  # the disable wins
        }[state]
        toggles = tuple(FeatureToggled(ids.event(), when, account_id, None, for_provider,
                                       enabled, f"admin-{account_id}")
                        for when, enabled, for_provider in plan)
        accounts.append(Account(account_id, provider, toggles, state == "on"))
    return accounts


def simulate(config: SimulationConfig,
             on_expected: Callable[[Expected], None] | None = None) -> Iterator[Event]:
    """Yield exactly `config.events` events in delivery order; report the truth of each
    unit to `on_expected` as the unit is planned (before its events are yielded)."""
    rng = random.Random(config.seed)
    ids = Ids(rng)
    params = TruthParams(config.notice_grace_ms, config.notice_validity_ms)
    builder = StoryBuilder(rng, ids, config.guest_share, config.pseudonym_share, params)
    heap: list[tuple[int, int, Event]] = []
    budget = config.events
    planned = 0
    seq = 0
    delay = config.max_delay_ms
    random_ = rng.random

    def plan(unit: Unit) -> bool:
        """Schedule a complete unit with its duplicates, or nothing when it would not fit."""
        nonlocal planned, seq
        deliveries = [(event.occurred_at + int(random_() * delay), event)
                      for event in unit.events
                      for _ in range(2 if random_() < config.duplicate_share else 1)]
        if planned + len(deliveries) > budget:
            return False
        planned += len(deliveries)
        for at, event in deliveries:
            seq += 1
            heapq.heappush(heap, (at, seq, event))
        if on_expected is not None:
            for expected in unit.expected:
                on_expected(expected)
        return True

    start = config.start_ms
    accounts = _accounts(rng, ids, config.accounts, start)
    toggles: list[Event] = [t for account in accounts for t in account.toggles]
    t = start + 60_000
    if plan(Unit(toggles, [])) and plan(builder.validity_edges(t, accounts[0])):
        t += 120_000
        while True:
            while heap and heap[0][0] < t:
                yield heapq.heappop(heap)[2]
            unit = builder.meeting(t, rng.choice(accounts))
            if not plan(unit):
                break
            mean_gap_ms = len(unit.events) * 1000 / config.event_rate
            t += 1 + int(rng.expovariate(1.0) * mean_gap_ms)
    # The rest of the count: people who wait in a lobby and leave before anything is sent.
    lobby = ids.meeting()
    for index in range(budget - planned):
        subject_id, _ = ids.subject(guest=True)
        seq += 1
        heapq.heappush(heap, (t + index, seq, ParticipantJoined(
            ids.event(), t + index, accounts[0].id, lobby, subject_id, f"Lobby {index}", None,
            True)))
    while heap:
        yield heapq.heappop(heap)[2]
