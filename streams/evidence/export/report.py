"""report.html: the bundle for people, the page a regulator reads first.

One self-contained page (inline CSS and SVG, no script, no network). At the top: who
exported what, when and why (purpose, exporter, query, the signing key's fingerprint),
counts by rule, severity, provider and account (findings in force and retracted apart),
what the `hmac-sha256:` pseudonyms are, and a table of contents. Then one section per
finding, by severity (CRITICAL first) then time: what happened (the finding's
explanation), when, the rule and the regulations it cites, the consent record in force
(`streams.evidence.consent_record`, in DPV / ISO/IEC TS 27560 terms), each evidence
event's fields, amendments, a timeline, its review status and history (the reviews in the bundle, in
ledger order) and the exceptions that cover it (marked excepted when one is in force
at the export). A finding a late event retracted is marked so, in a muted style, its
timeline greyed as superseded. Printing gives one finding per page, no
background colours, and the target of each link written out.

Every value from a record is HTML-escaped; nothing from a record becomes markup.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import orjson

from streams import __version__
from streams.catalogue import load_catalogue
from streams.evidence import bundle
from streams.evidence.consent_record import FIELDS, consent_record
from streams.evidence.exception_scope import covering, covers
from streams.evidence.export.summary import (
    RETRACTED,
    amendments_by_finding,
    finding_status,
    reviews_by_finding,
)
from streams.evidence.export.timeline import mark_for, render_timeline
from streams.evidence.export.times import describe_ms
from streams.evidence.keys import public_key_bytes
from streams.evidence.review import ReviewStatus, TrailError, fold

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from streams.engine import EngineParams
    from streams.evidence.export.query import ExportQuery
    from streams.evidence.ledger import LedgerEntry

__all__ = ["SEVERITIES", "ExportFacts", "key_fingerprint", "render_report"]

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:60em;padding:0 1em;color:#202124;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2.2em;border-top:2px solid #dadce0;
padding-top:1em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #dadce0;
padding:.25em .5em;text-align:left;vertical-align:top;font-size:.92em}
td.n{text-align:right}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;
word-break:break-all}.counts{display:inline-block;margin:0 1.5em .5em 0;vertical-align:top}
.sev{display:inline-block;padding:0 .5em;border-radius:3px;color:#fff;font-size:.8em}
.CRITICAL{background:#a50e0e}.HIGH{background:#c5221f}.MEDIUM{background:#e37400}
.LOW{background:#5f6368}.what{font-size:1.05em}.amend{background:#fef7e0;padding:.5em}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;font-size:.8em;
border:1px solid #80868b;color:#3c4043;background:#f1f3f4}
.retracted h2{color:#5f6368}.retracted .sev{background:#bdc1c6;color:#3c4043}
.retracted .what{text-decoration:line-through;color:#5f6368}
.superseded svg{filter:grayscale(1);opacity:.5}.superseded p{color:#5f6368;font-style:italic}
.event{margin:.6em 0}.event table{margin-top:.2em}.fields th{font-weight:normal;color:#5f6368}
pre{white-space:pre-wrap;background:#f1f3f4;padding:.5em}.toc li{margin:.15em 0}
.review{background:#e8f0fe;padding:.5em}.consent-record{background:#f3e8fd;padding:.5em}.excepted{background:#e6f4ea;padding:.5em}
@media print{
body{margin:0;max-width:none;color:#000}
.sev,.badge,.retracted .sev{background:none;color:#000;border:1px solid #000}
.amend,pre,.badge{background:none}.amend{border-left:3px solid #000}
section{break-before:page;page-break-before:always}
h2,h3,tr,.event,svg{break-inside:avoid;page-break-inside:avoid}
a{color:#000}a[href]:not([href^="#"])::after{content:" (" attr(href) ")";font-size:.8em}
}
"""

_PSEUDONYMS = (
    "<p>Values written <code>hmac-sha256:&lt;hex&gt;</code> are pseudonyms: personal data "
    "this export does not need (email addresses, the people who requested, viewed or "
    "acted, and display names except where a finding is about a real name being shown) "
    "was replaced, before it entered the ledger, by a keyed hash (HMAC-SHA-256) under the "
    "operator's pseudonymisation key. The same value always gives the same pseudonym "
    "under one key, so the events of one person can be linked across findings without "
    "revealing who the person is; without the key the value cannot be recovered or "
    "confirmed by guessing. Re-identification needs the key, held by the operator, not "
    "this bundle.</p>")


@dataclass(frozen=True, slots=True)
class ExportFacts:
    """Who exported, when, and with which key: the report's header, beside the query."""

    actor: str
    created_ms: int
    key_fingerprint: str


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """The signing key's fingerprint: lower-case hex SHA-256 of its 32 raw bytes
    (RFC 8032), so `openssl pkey -pubin -outform DER | tail -c 32 | sha256sum` gives it."""
    return hashlib.sha256(public_key_bytes(public_key)).hexdigest()


def _time(value: Any) -> str:
    return describe_ms(value) if type(value) is int else escape(str(value))


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _severity_rank(record: Mapping[str, Any]) -> int:
    severity = record.get("severity")
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _reading_order(findings: Sequence[LedgerEntry]) -> list[LedgerEntry]:
    """By severity (CRITICAL first, unknown last), then time, then ledger order."""
    def key(entry: LedgerEntry) -> tuple[int, bool, int, int]:
        occurred = entry.record.get("occurred_at")
        when = occurred if isinstance(occurred, int) and type(occurred) is int else None
        return (_severity_rank(entry.record), when is None, when or 0, entry.index)
    return sorted(findings, key=key)


def render_report(findings: Sequence[LedgerEntry], amendments: Sequence[LedgerEntry], *,
                  query: ExportQuery, params: EngineParams | None, checkpoint_note: str,
                  facts: ExportFacts,
                  progress: Callable[[str, int, int], None] | None = None,
                  reviews: Sequence[LedgerEntry] = (),
                  exceptions: Sequence[LedgerEntry] = ()) -> bytes:
    """The report's bytes (UTF-8). Exceptions are shown in force or not as of the
    export (`facts.created_ms`)."""
    catalogue = load_catalogue()
    trails = reviews_by_finding(reviews)
    exception_records = [entry.record for entry in exceptions]
    by_finding = amendments_by_finding(amendments)
    statuses = {e.entry_id: finding_status(by_finding.get(e.entry_id, ())) for e in findings}
    ordered = _reading_order(findings)
    grace = None if params is None else params.notice_grace_ms
    out = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>consentwatch evidence report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>consentwatch evidence report</h1>",
        _header(query, facts, findings, statuses, catalogue.version),
        _counts(findings, statuses),
        "<h2 id=\"pseudonyms\">Pseudonyms</h2>", _PSEUDONYMS,
        "<h2 id=\"verifying\">Verifying this bundle</h2>",
        "<p>Every finding below is a leaf of the evidence ledger's Merkle tree. "
        "<code>manifest.json</code> holds the ledger's signed checkpoint and an inclusion "
        "proof for each finding, and for each review and exception of the review trail "
        f"({len(reviews)} reviews and {len(exceptions)} exceptions in this bundle, shown "
        "with each finding); check the whole bundle offline with "
        "<code>consentwatch verify BUNDLE --public-key consentwatch.pub</code> (or by hand, "
        "see docs/verifying.md), and check that the public key's fingerprint is the one "
        "above.</p>",
        f"<p>Signed checkpoint:</p><pre>{_e(checkpoint_note)}</pre>",
        _contents(ordered, statuses, catalogue),
    ]
    total = len(ordered)
    names = bundle.EvidenceNames()  # the files' paths are given in ledger order
    for entry in findings:
        for event in bundle.evidence_events(entry.record):
            names.name(event)
    for done, entry in enumerate(ordered, 1):
        events = [(event, names.name(event)[0])
                  for event in bundle.evidence_events(entry.record)]
        out.append(_section(entry, catalogue, events,
                            by_finding.get(entry.entry_id, ()), statuses[entry.entry_id],
                            grace, trails.get(entry.entry_id, []),
                            exception_records, facts.created_ms))
        if progress is not None:
            progress("report", done, total)
    exported = {entry.entry_id for entry in findings}
    never_raised = [entry for entry in amendments
                    if str(entry.record.get("finding_id")) not in exported]
    if not findings and not never_raised:
        out.append("<p>No finding matched.</p>")
    if never_raised:
        out.append('<section id="never-raised"><h2>Findings a late event showed should have '
                   "been raised</h2><p>Each trigger below was decided without a finding; an "
                   "event that arrived late showed that the rule fires. The ledger holds the "
                   "amendment, not a finding: it is the evidence.</p>")
        out.extend(_amendment(entry.record) for entry in never_raised)
        out.append("</section>")
    out.append("</body></html>\n")
    return "".join(out).encode()


def _header(query: ExportQuery, facts: ExportFacts, findings: Sequence[LedgerEntry],
            statuses: Mapping[str, str], catalogue_version: str) -> str:
    filters = ", ".join(f"{name} = {value}" for name, value in
                        (("rule", query.rule), ("account", query.account),
                         ("subject", query.subject)) if value) or "none"
    retracted = sum(1 for status in statuses.values() if status == RETRACTED)
    return "".join([
        "<table>",
        f"<tr><th>Exported</th><td>{describe_ms(facts.created_ms)}</td></tr>",
        f"<tr><th>Exported by</th><td>{_e(facts.actor)}</td></tr>",
        f"<tr><th>Purpose of this export</th><td>{_e(query.purpose)}</td></tr>",
        f"<tr><th>Findings that occurred</th><td>from {describe_ms(query.from_ms)} (inclusive) "
        f"to {describe_ms(query.to_ms)} (exclusive)</td></tr>",
        f"<tr><th>Filters</th><td>{_e(filters)}</td></tr>",
        f"<tr><th>Findings</th><td>{len(findings) - retracted} in force, {retracted} "
        f"retracted by a late event ({len(findings)} exported)</td></tr>",
        "<tr><th>Signing key fingerprint</th><td><code>SHA256:"
        f"{_e(facts.key_fingerprint)}</code><br>(SHA-256 of the raw 32-byte Ed25519 public "
        "key)</td></tr>",
        f"<tr><th>Tool</th><td>consentwatch {_e(__version__)}, rule catalogue "
        f"{_e(catalogue_version)}</td></tr>",
        "</table>",
    ])


def _counts(findings: Sequence[LedgerEntry], statuses: Mapping[str, str]) -> str:
    """Tables of counts by rule, severity, provider and account: in force / retracted."""
    parts = ["<h2 id=\"summary\">Summary</h2>"]
    for title, field in (("Rule", "rule"), ("Severity", "severity"),
                         ("Provider", "provider"), ("Account", "account_id")):
        in_force: Counter[str] = Counter()
        retracted: Counter[str] = Counter()
        for entry in findings:
            value = str(entry.record.get(field, ""))
            (retracted if statuses[entry.entry_id] == RETRACTED else in_force)[value] += 1
        keys = sorted(set(in_force) | set(retracted))
        if field == "severity":
            keys.sort(key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else len(SEVERITIES))
        rows = "".join(f"<tr><td>{_e(k)}</td><td class=\"n\">{in_force[k]}</td>"
                       f"<td class=\"n\">{retracted[k]}</td></tr>" for k in keys)
        parts.append(f'<table class="counts"><tr><th>{title}</th><th>in force</th>'
                     f"<th>retracted</th></tr>{rows}</table>")
    return "".join(parts)


def _title(catalogue: Any, rule_id: str) -> str:
    try:
        return _e(catalogue[rule_id].title)
    except KeyError:
        return _e(rule_id)


def _badge(status: str) -> str:
    if status == RETRACTED:
        return ' <span class="badge">retracted by a late event</span>'
    if status == "evidence_changed":
        return ' <span class="badge">evidence changed by a late event</span>'
    if status == "reinstated":
        return ' <span class="badge">retracted, then reinstated by late events</span>'
    return ""


def _contents(ordered: Sequence[LedgerEntry], statuses: Mapping[str, str],
              catalogue: Any) -> str:
    if not ordered:
        return ""
    items = "".join(_contents_item(e, statuses[e.entry_id], catalogue) for e in ordered)
    return f'<h2 id="contents">Findings</h2><ol class="toc">{items}</ol>'


def _contents_item(entry: LedgerEntry, status: str, catalogue: Any) -> str:
    record = entry.record
    severity = _e(record.get("severity"))
    return (f'<li class="{_e(status)}"><a href="#finding-{_e(entry.entry_id)}">'
            f'<span class="sev {severity}">{severity}</span> '
            f'{_title(catalogue, str(record.get("rule", "")))}</a>, '
            f"{_time(record.get('occurred_at'))}{_badge(status)}</li>")


def _value(name: str, value: Any) -> str:
    """One field of an evidence event as HTML: times written out, lists joined."""
    if value is None:
        return "<em>null</em>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int and name.endswith("_at"):
        return describe_ms(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(f"<code>{_e(v)}</code>" for v in value) or "<em>none</em>"
    if isinstance(value, dict | list):
        return f"<code>{_e(orjson.dumps(value).decode())}</code>"
    if isinstance(value, str) and value.startswith("hmac-sha256:"):
        return f'<code title="pseudonym">{_e(value)}</code>'
    return _e(value)


def _event(event: Mapping[str, Any], note: str, *, href: str | None) -> str:
    """An event's fields in a small table, linked to its file in evidence/ (`href`; a
    late event of an amendment has none: it is proven by the amendment's leaf)."""
    event_id = str(event.get("event_id", ""))
    rows = "".join(f"<tr><th>{_e(name)}</th><td>{_value(name, value)}</td></tr>"
                   for name, value in event.items()
                   if name not in ("type", "event_id", "occurred_at"))
    ident = f"<code>{_e(event_id)}</code>"
    if href is not None:
        ident = f'<a href="{_e(href)}">{ident}</a>'
    return (f'<div class="event"><strong>{_e(event.get("type"))}</strong>{_e(note)} at '
            f"{_time(event.get('occurred_at'))}, {ident}"
            f'<table class="fields">{rows}</table></div>')


def _section(entry: LedgerEntry, catalogue: Any, linked: list[tuple[dict[str, Any], str]],
             amendments: Iterable[LedgerEntry], status: str, grace: int | None,
             trail: Sequence[LedgerEntry] = (), exceptions: Sequence[Mapping[str, Any]] = (),
             at_ms: int = 0) -> str:
    """`linked`: the finding's evidence events, each with the path of its file."""
    record = entry.record
    events = [event for event, _ in linked]
    rule_id = str(record.get("rule", ""))
    severity = _e(record.get("severity"))
    try:
        regulations = "".join(f"<li>{_e(r.cite())}: {_e(r.title)}</li>"
                              for r in catalogue[rule_id].regulations)
    except KeyError:
        regulations = "<li>rule not in this catalogue version</li>"
    trigger_id = str(record.get("trigger_event_id", ""))
    occurred = record.get("occurred_at")
    retracted = status == RETRACTED
    excepted = (' <span class="badge">excepted</span>'
                if covering(exceptions, record, at_ms) else "")
    parts = [
        f'<section id="finding-{_e(entry.entry_id)}" class="finding {_e(status)}">',
        f'<h2><span class="sev {severity}">{severity}</span> {_title(catalogue, rule_id)}'
        f"{_badge(status)}{excepted}</h2>",
        f'<p class="what">{_e(record.get("explanation"))}</p>',
        "<table>",
        f"<tr><th>Status</th><td>{_e(status)}</td></tr>",
        f"<tr><th>When</th><td>{_time(occurred)} (detected {_time(record.get('detected_at'))})"
        "</td></tr>",
        f"<tr><th>Rule</th><td><code>{_e(rule_id)}</code><ul>{regulations}</ul></td></tr>",
        f"<tr><th>Provider, account, meeting</th><td>{_e(record.get('provider'))}, "
        f"{_e(record.get('account_id'))}, {_e(record.get('meeting_id'))}</td></tr>",
        f"<tr><th>Finding</th><td><code>{_e(entry.entry_id)}</code>, ledger leaf "
        f"{entry.index}</td></tr>",
        "</table>",
        _consent_record(record),
        "<h3>Evidence events</h3>",
    ]
    if linked:
        by_time = sorted(linked, key=lambda pair: (type(pair[0].get("occurred_at")) is not int,
                                                  pair[0].get("occurred_at") or 0))
        parts.extend(_event(event, " (trigger)" if str(event.get("event_id")) == trigger_id
                            else "", href=href) for event, href in by_time)
    else:
        ids = ", ".join(str(i) for i in record.get("evidence_event_ids") or ())
        parts.append(f"<p>This record names its evidence by id only: <code>{_e(ids)}</code>."
                     "</p>")
    if type(occurred) is int:
        drawn = events if any(e["event_id"] == trigger_id for e in events) else [
            *events, {"type": "trigger", "event_id": trigger_id, "occurred_at": occurred}]
        svg = render_timeline(drawn, trigger_id, occurred,
                              mark_for(rule_id, occurred, events, grace))
        parts.append('<div class="superseded"><p>Timeline as first decided; a late event '
                     f"retracted this finding (below).</p>{svg}</div>" if retracted else svg)
    for amendment in amendments:
        parts.append(_amendment(amendment.record))
    parts.append(_reviews(trail))
    parts.append(_exceptions(record, exceptions, at_ms))
    parts.append("</section>")
    return "".join(parts)


def _consent_record(finding: Mapping[str, Any]) -> str:
    """The consent record in force (consent_records.jsonl's line), field by field."""
    record = consent_record(finding)
    basis = record["basis"]
    if basis == "not-a-consent-rule":
        return ('<div class="consent-record"><h3>Consent record: not decided by consent</h3>'
                "<p>This rule decides on notices, feature toggles or names, not on the "
                "consent in force; its finding names no consent record.</p></div>")
    in_force = "in force" if record["in_force"] else "not in force"
    title = ("none in force: no consent record covered the data use and provider"
             if basis == "no-consent-record" else f"{record['status_label']}, {in_force}")
    notes = {"notice_version": record["notice_version_note"],
             "jurisdiction": record["jurisdiction_note"],
             "recipient": "any provider" if basis == "deciding-consent" else None}
    rows = []
    for key, label, term, iso in FIELDS:
        value = record[key]
        shown = _value(key, value)
        if value is None and notes.get(key):
            shown += f" ({_e(notes[key])})"
        rows.append(f"<tr><th>{_e(label)}</th><td>{shown}</td><td><code>{_e(term)}</code>"
                    f"</td><td>{_e(iso)}</td></tr>")
    return (f'<div class="consent-record"><h3>Consent record: {_e(title)}</h3>'
            "<table><tr><th>field</th><th>value</th><th>DPV</th><th>ISO/IEC TS 27560</th>"
            f"</tr>{''.join(rows)}</table></div>")


_ACTION_DETAIL = (("assignee", "to"), ("reason", "reason"),
                  ("false_positive_kind", "false positive kind"),
                  ("duplicate_of", "duplicate of"), ("text", ""), ("note", "note"))


def _reviews(trail: Sequence[LedgerEntry]) -> str:
    """The finding's review status and history, each review a row."""
    try:
        status = fold(entry.record for entry in trail)
        label = status.label()
    except TrailError:  # the ledger refuses such a trail: only a tampered one gets here
        status, label = ReviewStatus(), "not a valid review trail"
    rows = "".join(
        f"<tr><td>{_time(r.get('at_ms'))}</td><td>{_e(r.get('reviewer'))}</td>"
        f"<td>{_e(r.get('action'))}</td><td>"
        + "; ".join(f"{name + ': ' if name else ''}{_e(r[key])}"
                    for key, name in _ACTION_DETAIL if key in r)
        + f"</td><td>ledger leaf {entry.index}</td></tr>"
        for entry in trail for r in (entry.record,))
    history = ("<table><tr><th>When</th><th>Reviewer</th><th>Action</th><th>Details</th>"
               f"<th>Proof</th></tr>{rows}</table>" if trail
               else "<p>No review recorded.</p>")
    reopened = f", reopened {status.reopened} time(s)" if status.reopened else ""
    return f'<div class="review"><h3>Review: {_e(label)}{reopened}</h3>{history}</div>'


def _exceptions(finding: Mapping[str, Any], exceptions: Sequence[Mapping[str, Any]],
                at_ms: int) -> str:
    """The exceptions whose scope covers the finding: in force at the export, or not."""
    scoped = [e for e in exceptions if covers(e, finding)]
    if not scoped:
        return ""
    active = covering(scoped, finding, at_ms)
    items = "".join(
        f"<li>{'in force' if e in active else 'not in force'} (expires "
        f"{_time(e.get('expires_at_ms'))}): {_e(e.get('reason'))}, recorded by "
        f"{_e(e.get('author'))} at {_time(e.get('at_ms'))}; scope: account "
        f"{_e(e.get('account_id'))}, provider {_e(e.get('provider') or 'any')}, rule "
        f"{_e(e.get('rule') or 'any')}, from {_time(e.get('from_ms'))} to "
        f"{_time(e.get('to_ms'))}</li>" for e in scoped)
    title = ("Excepted: an exception in force covers this finding (it is still recorded)"
             if active else "Exceptions that covered this finding (none in force)")
    return f'<div class="excepted"><h3>{title}</h3><ul>{items}</ul></div>'



def _amendment(a: Mapping[str, Any]) -> str:
    late = a.get("late_event")
    late_html = (_event(late, " (the late event)", href=None) if isinstance(late, dict)
                 else "")
    return (f'<div class="amend"><strong>Amended ({_e(a.get("kind"))})</strong> by a late '
            f"event, decided at {_time(a.get('detected_at'))}: {_e(a.get('explanation'))}"
            f"{late_html}</div>")
