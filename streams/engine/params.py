"""The engine's parameters (spec: "Rules" and "Event time"), in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

from streams.errors import ConfigError

__all__ = ["DAY_MS", "EngineParams"]

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class EngineParams:
    allowed_lateness_ms: int = 30_000
    notice_grace_ms: int = 300_000
    notice_validity_ms: int = 365 * DAY_MS
    # A partition with no events for this long advances its watermark with the wall clock.
    idle_timeout_ms: int = 30_000
    # How long a decided trigger is remembered, so a late event can still amend it.
    amendment_horizon_ms: int = DAY_MS
    # How long an event id is remembered to recognise a duplicate. A copy that comes
    # back later still cannot mint a second finding (finding ids are deterministic).
    dedupe_horizon_ms: int = 7 * DAY_MS
    # An event later than its reception plus this cannot be true: dead-lettered with
    # reason `future_timestamp`, never applied (spec: "Time from the future").
    max_future_skew_ms: int = 300_000

    def __post_init__(self) -> None:
        for name in (
            "allowed_lateness_ms",
            "notice_grace_ms",
            "notice_validity_ms",
            "idle_timeout_ms",
            "amendment_horizon_ms",
            "dedupe_horizon_ms",
            "max_future_skew_ms",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigError(f"{name} must be a non-negative whole number of milliseconds")

    @property
    def lookback_ms(self) -> int:
        """How far behind the watermark a trigger may still be (re)decided."""
        return max(self.amendment_horizon_ms, self.notice_grace_ms)
