"""The finding filters `findings` and the `ledger` commands share: rule, severity, account,
subject, provider and a half-open time window on `occurred_at`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["FindingFilter", "filter_options", "parse_time_ms", "time_option"]


def parse_time_ms(text: str) -> int:
    """Epoch ms of an RFC 3339 date-time with an offset, or of a number of epoch ms."""
    from streams.model.timestamps import parse_rfc3339_ms

    if text.isdigit():
        return int(text)
    return parse_rfc3339_ms(text)


def time_option(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A click callback: the option's time (RFC 3339 or epoch ms) in epoch ms, or None."""
    if value is None:
        return None
    try:
        ms = parse_time_ms(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an RFC 3339 time with an offset nor "
                                 "epoch milliseconds", param=param) from None
    from streams.model.timestamps import MAX_MS, MIN_MS

    if not MIN_MS <= ms <= MAX_MS:
        raise click.BadParameter(f"{value!r} is outside the years 1 to 9999", param=param)
    return ms


def _rule(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from streams.catalogue import load_catalogue

    known = [item.id for item in load_catalogue().rules]
    if value is not None and value not in known:
        raise click.BadParameter(f"unknown rule {value!r}; the rules are: {', '.join(known)}",
                                 param=param)
    return value


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--rule, --severity, --account, --subject, --provider, --from, --to."""
    from streams.catalogue import SEVERITIES

    for option in reversed((
        click.option("--rule", callback=_rule, help="Only findings of this rule."),
        click.option("--severity", type=click.Choice(sorted(SEVERITIES)),
                     help="Only findings of this severity."),
        click.option("--account", help="Only findings of this account."),
        click.option("--subject", help="Only findings about this subject."),
        click.option("--provider", help="Only findings about data sent to this provider."),
        click.option("--from", "from_ms", callback=time_option, metavar="TIME",
                     help="Only findings with occurred_at at or after TIME (RFC 3339 or "
                          "epoch ms)."),
        click.option("--to", "to_ms", callback=time_option, metavar="TIME",
                     help="Only findings with occurred_at before TIME (RFC 3339 or epoch ms)."),
    )):
        command = option(command)
    return command


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """Which findings to keep; None keeps any value. An amendment is kept when the fields
    it has match and no filter names a field it lacks (severity, account, provider)."""

    rule: str | None = None
    severity: str | None = None
    account: str | None = None
    subject: str | None = None
    provider: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> FindingFilter:
        """From the keyword arguments of a command decorated with `filter_options`."""
        return cls(**{name: options.get(name) for name in cls.__slots__})

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)

    def matches(self, record: Mapping[str, Any]) -> bool:
        for name, field in (("rule", "rule"), ("severity", "severity"),
                            ("account", "account_id"), ("subject", "subject_id"),
                            ("provider", "provider")):
            wanted = getattr(self, name)
            if wanted is not None and record.get(field) != wanted:
                return False
        occurred_at = record.get("occurred_at")
        if self.from_ms is not None and not (
                isinstance(occurred_at, int) and occurred_at >= self.from_ms):
            return False
        return self.to_ms is None or (isinstance(occurred_at, int) and occurred_at < self.to_ms)
