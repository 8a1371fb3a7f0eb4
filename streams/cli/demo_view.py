"""What `consentwatch demo` shows: live progress, then findings against the ground truth."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console, Group
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
    lag: int | None = None  # input records the worker has not consumed yet
    phase: str = "starting"

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.produced / elapsed if elapsed > 0 else 0.0

    def worker_lag(self) -> str:
        """The events produced so far that the worker has not consumed: the broker's
        count also holds the run's control records, so it is clamped to what was produced."""
        return "-" if self.lag is None else f"{min(max(self.lag, 0), self.produced):,}"


def progress_table(p: Progress) -> Group:
    """Counters above, one row per rule below: fits 80 columns with every rule name whole."""
    counters = Table(title=f"consentwatch demo: {p.phase}", title_justify="left")
    for column in ("produced", "events/s", "worker lag"):
        counters.add_column(column, justify="right")
    counters.add_row(f"{p.produced:,} / {p.target:,}", f"{p.rate():,.0f}", p.worker_lag())
    rules = Table()
    rules.add_column("rule", no_wrap=True)
    rules.add_column("findings", justify="right")
    rules.add_column("expected so far", justify="right")
    for rule in RULE_STAGE:
        rules.add_row(rule, f"{p.found[rule]:,}", f"{p.expected[rule]:,}")
    return Group(counters, rules)


def progress_line(p: Progress) -> str:
    found = sum(p.found.values())
    return (f"[{time.monotonic() - p.started:5.0f} s] {p.phase}: produced {p.produced:,}/"
            f"{p.target:,} ({p.rate():,.0f} events/s), findings {found:,}, worker lag "
            f"{p.worker_lag()}")


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


# Wide enough for any line the demo prints: a log or a pipe gets each line whole.
_PIPE_WIDTH = 1_000


def console() -> Console:
    """The terminal's width on a terminal; on a pipe or file no wrapping at all (rich
    would otherwise wrap at 80 columns, mid-phrase)."""
    terminal = Console(highlight=False)
    if terminal.is_terminal:
        return terminal
    return Console(highlight=False, width=_PIPE_WIDTH, soft_wrap=True)
