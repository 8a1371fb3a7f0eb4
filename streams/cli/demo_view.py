"""What `consentwatch demo` shows: live progress, then findings against the ground truth."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from streams.engine.rules import RULE_STAGE

__all__ = ["Progress", "Score", "console", "progress_line", "progress_table", "score",
           "summary_table"]

Key = tuple[str, str, str]  # rule, subject_id, trigger_event_id


@dataclass(slots=True)
class Progress:
    """Counters the demo's tasks update and the display reads."""

    target: int
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    found: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    lag: int | None = None
    phase: str = "starting"

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.produced / elapsed if elapsed > 0 else 0.0


def progress_table(p: Progress) -> Table:
    table = Table(title=f"consentwatch demo: {p.phase}", title_justify="left")
    table.add_column("produced", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column("worker lag", justify="right")
    for rule in RULE_STAGE:
        table.add_column(rule, justify="right")
    table.add_row(f"{p.produced:,} / {p.target:,}", f"{p.rate():,.0f}",
                  "-" if p.lag is None else f"{p.lag:,}",
                  *(f"{p.found[rule]:,}" for rule in RULE_STAGE))
    return table


def progress_line(p: Progress) -> str:
    found = sum(p.found.values())
    return (f"[{time.monotonic() - p.started:5.0f} s] {p.phase}: produced {p.produced:,}/"
            f"{p.target:,} ({p.rate():,.0f} events/s), findings {found:,}, lag "
            f"{'-' if p.lag is None else f'{p.lag:,}'}")


@dataclass(frozen=True, slots=True)
class Score:
    expected: int
    found: int
    true_positives: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.expected if self.expected else 1.0


def score(expected: set[Key], found: set[Key], rule: str | None = None) -> Score:
    if rule is not None:
        expected = {k for k in expected if k[0] == rule}
        found = {k for k in found if k[0] == rule}
    return Score(len(expected), len(found), len(expected & found))


def summary_table(expected: set[Key], found: set[Key]) -> Table:
    table = Table(title="findings against the simulator's ground truth")
    for column in ("rule", "expected", "found", "precision", "recall"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for rule in RULE_STAGE:
        s = score(expected, found, rule)
        table.add_row(rule, f"{s.expected:,}", f"{s.found:,}", f"{s.precision:.3f}",
                      f"{s.recall:.3f}")
    s = score(expected, found)
    table.add_row("all", f"{s.expected:,}", f"{s.found:,}", f"{s.precision:.3f}",
                  f"{s.recall:.3f}", style="bold")
    return table


def console() -> Console:
    return Console(highlight=False)
