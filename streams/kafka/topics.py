"""Topic names and configurations: one topic per event type, plus the outputs.

Every name carries a prefix (`--topic-prefix` / `CONSENTWATCH_TOPIC_PREFIX`), and
the worker's consumer group follows from it, so several pipelines share a broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streams.errors import ConfigError
from streams.model.events import EVENT_TYPES

__all__ = ["DEFAULT_PREFIX", "MAX_RECORD_BYTES", "MAX_REPLICATION", "TopicNames", "replica_configs",
           "replication_for", "topic_configs"]

DEFAULT_PREFIX = "consentwatch"
_VALID_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


@dataclass(frozen=True, slots=True)
class TopicNames:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _VALID_PREFIX.fullmatch(self.prefix):
            raise ConfigError("the topic prefix may hold only letters, digits, '.', '_' and '-'")

    def event(self, event_type: str) -> str:
        """The input topic of one event type, e.g. `consentwatch.events.consent-changed`."""
        return f"{self.prefix}.events.{_kebab(event_type)}"

    @property
    def inputs(self) -> dict[str, str]:
        """Event type -> its input topic."""
        return {name: self.event(name) for name in EVENT_TYPES}

    @property
    def correlate(self) -> str:
        """The repartition topic: every event keyed by subject (toggles go to every partition)."""
        return f"{self.prefix}.correlate"

    @property
    def findings(self) -> str:
        return f"{self.prefix}.findings"

    @property
    def amendments(self) -> str:
        return f"{self.prefix}.amendments"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    @property
    def group_id(self) -> str:
        """The worker's consumer group (and Faust app id)."""
        return f"{self.prefix}.worker"

    def all(self) -> list[str]:
        return [*self.inputs.values(), self.correlate, self.findings, self.amendments,
                self.dead_letters]


_DAY_MS = 86_400_000

# Replicas of every topic, the worker's changelogs included, on a cluster that has that
# many brokers; a smaller cluster (one broker in development) gets one on each.
MAX_REPLICATION = 3


def replication_for(brokers: int) -> int:
    """The replication factor of the project's topics on a cluster of `brokers`."""
    return max(1, min(MAX_REPLICATION, brokers))


def replica_configs(replication: int) -> dict[str, str]:
    """Topic configuration that goes with `replication` replicas: with 3, a write
    (acks=all) needs 2 in sync, so one broker may be down and no acknowledged write is
    lost; with fewer, Kafka's default of 1."""
    return {"min.insync.replicas": "2"} if replication >= MAX_REPLICATION else {}


#: The largest record the worker writes (a subject's state in the changelog, a finding
#: citing large events): topic config `max.message.bytes` of the topics it writes, and its
#: producer's `max.request.size`. Kafka's default, 1 MB, is not a bound these have.
MAX_RECORD_BYTES = 8 * 1024 * 1024


def topic_configs(names: TopicNames) -> dict[str, dict[str, str]]:
    """Topic-level configuration of every topic the project creates.

    Findings and amendments are compacted and keyed by their deterministic ids: a
    copy re-sent after a restart replaces the first one instead of adding a second,
    and compaction never deletes the last copy of a finding, so the topic stays a
    complete, duplicate-free record that the evidence ledger can re-read at any
    time. Dead letters are kept 30 days, long enough to inspect and replay them.
    Input and repartition topics keep Kafka's time-based retention (7 days).
    """
    compacted = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(_DAY_MS),
        "retention.ms": "-1",
    }
    configs: dict[str, dict[str, str]] = {
        topic: {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS)}
        for topic in names.inputs.values()
    }
    configs[names.correlate] = {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS)}
    configs[names.findings] = dict(compacted)
    configs[names.amendments] = dict(compacted)
    configs[names.dead_letters] = {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)}
    for written in (names.correlate, names.findings, names.amendments, names.dead_letters):
        configs[written]["max.message.bytes"] = str(MAX_RECORD_BYTES)
    return configs
