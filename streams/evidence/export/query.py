"""What an export selects, and why (`consentwatch export`'s query)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.evidence.export.times import describe_ms

__all__ = ["ExportQuery"]


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """What to export and why. The window is half-open: from_ms <= occurred_at < to_ms."""

    from_ms: int
    to_ms: int
    purpose: str
    rule: str | None = None
    account: str | None = None
    subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"from": describe_ms(self.from_ms), "to": describe_ms(self.to_ms),
                "from_ms": self.from_ms, "to_ms": self.to_ms,
                "filters": {"rule": self.rule, "account": self.account,
                            "subject": self.subject}}
