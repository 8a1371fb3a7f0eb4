"""The metric names of the contract, and the metric names a PromQL expression reads.

Shared by tests/deploy/test_alerting.py (alert rules) and tests/deploy/test_dashboards.py (dashboard
queries): both check that nothing queries a metric the workers do not export, which
would make an alert that can never fire or a panel that stays empty.
"""

from __future__ import annotations

import re

__all__ = ["ALLOWED_SERIES", "CONTRACT_METRICS", "DESK_METRICS", "metric_names"]

# The metric names the alerts and dashboards rely on (issue 4), pinned here: name -> type.
# tests/metrics/test_metrics.py checks that streams/metrics declares exactly these.
CONTRACT_METRICS: dict[str, str] = {
    "consentwatch_events_consumed_total": "counter",
    "consentwatch_duplicate_events_total": "counter",
    "consentwatch_late_events_total": "counter",
    "consentwatch_late_events_beyond_horizon_total": "counter",
    "consentwatch_dead_letters_total": "counter",
    "consentwatch_schema_registry_errors_total": "counter",
    "consentwatch_findings_total": "counter",
    "consentwatch_amendments_total": "counter",
    "consentwatch_finding_latency_seconds": "histogram",
    "consentwatch_watermark_timestamp_seconds": "gauge",
    "consentwatch_watermark_lag_seconds": "gauge",
    "consentwatch_pending_decisions": "gauge",
    "consentwatch_state_subjects": "gauge",
    "consentwatch_consumer_lag_records": "gauge",
    "consentwatch_build_info": "gauge",
}

# The review desk's own metrics (`consentwatch desk serve`, its /metrics; job
# consentwatch-desk), which its alerts and the compliance dashboard read.
DESK_METRICS: dict[str, str] = {
    "consentwatch_desk_open_findings": "gauge",
    "consentwatch_desk_oldest_open_finding_age_seconds": "gauge",
}


def _series_names() -> frozenset[str]:
    names = {"up"}  # Prometheus' own per-target series: "worker down"
    for name, kind in (CONTRACT_METRICS | DESK_METRICS).items():
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)


# The series names a query may read.
ALLOWED_SERIES = _series_names()

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right",
                       "offset", "bool", "and", "or", "unless", "inf", "nan", "start", "end",
                       "atan2"})


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (its vector selectors).

    Strings, label matchers, ranges and grouping label lists are cut out first; of the
    identifiers left, a function or aggregation is followed by '(' and a keyword is
    known. Grafana's `$variables` are never names.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names
