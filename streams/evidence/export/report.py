"""report.html: the bundle for people. One self-contained page (inline CSS and SVG,
no script, no network), one section per finding: what happened (the finding's
explanation), when, the rule and the regulations it cites, the evidence events (with
links to their canonical JSON in the bundle), amendments, and a timeline.

Every value from a record is HTML-escaped; nothing from a record becomes markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from streams import __version__
from streams.catalogue import load_catalogue
from streams.evidence import bundle
from streams.evidence.export.timeline import mark_for, render_timeline
from streams.evidence.export.times import describe_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.engine import EngineParams
    from streams.evidence.export.writer import ExportQuery
    from streams.evidence.ledger import LedgerEntry

__all__ = ["render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:60em;padding:0 1em;color:#202124;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2.2em;border-top:2px solid #dadce0;
padding-top:1em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #dadce0;
padding:.25em .5em;text-align:left;vertical-align:top;font-size:.92em}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
.sev{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff;font-size:.8em}
.CRITICAL{background:#a50e0e}.HIGH{background:#c5221f}.MEDIUM{background:#e37400}
.LOW{background:#5f6368}.what{font-size:1.05em}.amend{background:#fef7e0;padding:.5em}
pre{white-space:pre-wrap;background:#f1f3f4;padding:.5em}
"""


def _time(value: Any) -> str:
    return describe_ms(value) if type(value) is int else escape(str(value))


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def render_report(findings: Sequence[LedgerEntry], amendments: Sequence[LedgerEntry], *,
                  query: ExportQuery, params: EngineParams | None, checkpoint_note: str,
                  progress: Callable[[str, int, int], None] | None = None) -> bytes:
    """The report's bytes (UTF-8)."""
    catalogue = load_catalogue()
    by_finding: dict[str, list[LedgerEntry]] = {}
    for amendment in amendments:
        by_finding.setdefault(str(amendment.record.get("finding_id")), []).append(amendment)
    grace = None if params is None else params.notice_grace_ms
    filters = ", ".join(f"{name} = {value}" for name, value in
                        (("rule", query.rule), ("account", query.account),
                         ("subject", query.subject)) if value) or "none"
    out = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>consentwatch evidence report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>consentwatch evidence report</h1>",
        "<table>",
        f"<tr><th>Purpose of this export</th><td>{_e(query.purpose)}</td></tr>",
        f"<tr><th>Findings that occurred</th><td>from {describe_ms(query.from_ms)} (inclusive) "
        f"to {describe_ms(query.to_ms)} (exclusive)</td></tr>",
        f"<tr><th>Filters</th><td>{_e(filters)}</td></tr>",
        f"<tr><th>Findings</th><td>{len(findings)}</td></tr>",
        f"<tr><th>Tool</th><td>consentwatch {_e(__version__)}, rule catalogue "
        f"{_e(catalogue.version)}</td></tr>",
        "</table>",
        "<p>Every finding below is a leaf of the evidence ledger's Merkle tree. "
        "<code>manifest.json</code> holds the ledger's signed checkpoint and an inclusion "
        "proof for each finding; check the whole bundle offline with "
        "<code>consentwatch verify BUNDLE --public-key consentwatch.pub</code>.</p>",
        f"<details><summary>Signed checkpoint</summary><pre>{_e(checkpoint_note)}</pre>"
        "</details>",
    ]
    total = len(findings)
    for done, entry in enumerate(findings, 1):
        out.append(_section(entry, catalogue, list(bundle.evidence_events(entry.record)),
                            by_finding.get(entry.entry_id, ()), grace))
        if progress is not None:
            progress("report", done, total)
    if not findings:
        out.append("<p>No finding matched.</p>")
    out.append("</body></html>\n")
    return "".join(out).encode()


def _section(entry: LedgerEntry, catalogue: Any, events: list[dict[str, Any]],
             amendments: Iterable[LedgerEntry], grace: int | None) -> str:
    record = entry.record
    rule_id = str(record.get("rule", ""))
    severity = _e(record.get("severity"))
    try:
        rule = catalogue[rule_id]
        title = _e(rule.title)
        regulations = "".join(f"<li>{_e(r.cite())}: {_e(r.title)}</li>"
                              for r in rule.regulations)
    except KeyError:
        title, regulations = _e(rule_id), "<li>rule not in this catalogue version</li>"
    trigger_id = str(record.get("trigger_event_id", ""))
    occurred = record.get("occurred_at")
    parts = [
        f'<section id="finding-{_e(entry.entry_id)}">',
        f'<h2><span class="sev {severity}">{severity}</span> {title}</h2>',
        f'<p class="what">{_e(record.get("explanation"))}</p>',
        "<table>",
        f"<tr><th>When</th><td>{_time(occurred)} (detected {_time(record.get('detected_at'))})"
        "</td></tr>",
        f"<tr><th>Rule</th><td><code>{_e(rule_id)}</code><ul>{regulations}</ul></td></tr>",
        f"<tr><th>Provider, meeting</th><td>{_e(record.get('provider'))}, "
        f"{_e(record.get('meeting_id'))}</td></tr>",
        f"<tr><th>Finding</th><td><code>{_e(entry.entry_id)}</code>, ledger leaf "
        f"{entry.index}</td></tr>",
        "</table>",
        "<h3>Evidence events</h3>",
    ]
    if events:
        parts.append("<table><tr><th>time</th><th>event</th><th>id</th></tr>")
        for event in sorted(events, key=lambda e: (type(e.get("occurred_at")) is not int,
                                                  e.get("occurred_at") or 0)):
            event_id = str(event["event_id"])
            role = " (trigger)" if event_id == trigger_id else ""
            parts.append(f"<tr><td>{_time(event.get('occurred_at'))}</td>"
                         f"<td>{_e(event.get('type'))}{role}</td><td><a href=\""
                         f"{_e(bundle.evidence_file(event_id))}\"><code>{_e(event_id)}</code>"
                         "</a></td></tr>")
        parts.append("</table>")
    else:
        ids = ", ".join(str(i) for i in record.get("evidence_event_ids") or ())
        parts.append(f"<p>This record names its evidence by id only: <code>{_e(ids)}</code>."
                     "</p>")
    if type(occurred) is int:
        drawn = events if any(e["event_id"] == trigger_id for e in events) else [
            *events, {"type": "trigger", "event_id": trigger_id, "occurred_at": occurred}]
        mark = mark_for(rule_id, occurred, events, grace)
        parts.append(render_timeline(drawn, trigger_id, occurred, mark))
    for amendment in amendments:
        a = amendment.record
        parts.append(f'<p class="amend"><strong>Amended ({_e(a.get("kind"))})</strong> by a '
                     f"late event at {_time(a.get('occurred_at'))}: "
                     f"{_e(a.get('explanation'))}</p>")
    parts.append("</section>")
    return "".join(parts)
