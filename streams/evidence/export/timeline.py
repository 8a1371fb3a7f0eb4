"""An inline SVG timeline of a finding's evidence events, with what is missing marked.

Drawn on the events' own time scale: each evidence event is a dot (the trigger in
red); the notice rules shade the grace window after the act in which no notice came;
the consent and feature rules shade the time since the withdrawal, the expiry or the
switch-off, or draw a dashed line at the act when there was never consent or feature.
Plain SVG 1.1, no script, no external resource: it renders in any browser offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from streams.evidence.export.times import clamp_ms, describe_ms
from streams.model.timestamps import MAX_MS, MIN_MS

__all__ = ["Mark", "mark_for", "render_timeline"]

NOTICE_RULES = frozenset({"enrichment-without-notice", "covert-profile-view"})
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _AXIS_Y = 760, 170, 40, 720, 90
_INSTANT_SPAN = 60_000  # ms of axis around a finding whose times are all one instant


@dataclass(frozen=True, slots=True)
class Mark:
    """What the timeline highlights: a shaded span [start, end] or, when start == end,
    a dashed line at that time; `label` says what it means."""

    start: int
    end: int
    label: str


def _times(event: dict[str, Any]) -> int | None:
    value = event.get("occurred_at")
    return value if type(value) is int else None


def _duration(ms: int) -> str:
    seconds = ms // 1000
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def mark_for(rule: str, trigger_ms: int, events: Sequence[dict[str, Any]],
             notice_grace_ms: int | None) -> Mark:
    """The mark a finding of `rule` gets (see the module doc)."""
    if rule in NOTICE_RULES:
        if notice_grace_ms is None:
            return Mark(trigger_ms, trigger_ms, "no notice delivered")
        return Mark(trigger_ms, trigger_ms + notice_grace_ms,
                    f"notice grace ({_duration(notice_grace_ms)}): no notice delivered")
    by_type = {e.get("type"): e for e in events}
    if rule in ("enrichment-without-consent", "enrichment-exceeds-consent"):
        consent = by_type.get("ConsentChanged")
        since = _times(consent) if consent else None
        if consent is None or since is None:
            return Mark(trigger_ms, trigger_ms, "missing consent: none ever given")
        if rule == "enrichment-exceeds-consent":
            return Mark(since, trigger_ms, "consent in force, data sent beyond its scope")
        expires = consent.get("expires_at")
        if consent.get("status") == "GRANTED" and type(expires) is int and expires <= trigger_ms:
            return Mark(expires, trigger_ms, "missing consent: the grant had expired")
        return Mark(since, trigger_ms, "missing consent: withdrawn")
    if rule == "automatic-egress-feature-inactive":
        toggle = by_type.get("FeatureToggled")
        since = _times(toggle) if toggle else None
        if since is None:
            return Mark(trigger_ms, trigger_ms, "feature never enabled")
        return Mark(since, trigger_ms, "feature switched off")
    if rule == "pseudonym-deanonymized":
        return Mark(trigger_ms, trigger_ms, "real name shown for a pseudonym")
    return Mark(trigger_ms, trigger_ms, "act")


def _axis(first: int, last: int) -> tuple[int, int]:
    """The axis ends: the times padded by a twentieth of their span (an instant gets a
    minute, centred), the padding clamped to the years 1 to 9999 so that the ends can be
    written. Times all beyond one end of that range get the minute at that end."""
    pad = (last - first) // 20 if last > first else _INSTANT_SPAN // 2
    start, end = clamp_ms(first - pad), clamp_ms(last + pad)
    if start < end:
        return start, end
    return (MAX_MS - _INSTANT_SPAN, MAX_MS) if start == MAX_MS else (MIN_MS, MIN_MS + _INSTANT_SPAN)


def render_timeline(events: Sequence[dict[str, Any]], trigger_event_id: str, trigger_ms: int,
                    mark: Mark) -> str:
    """The `<svg>` element (a string) for one finding."""
    dated = [(t, e) for e in events if (t := _times(e)) is not None]
    times = [t for t, _ in dated] + [trigger_ms, mark.start, mark.end]
    first, last = _axis(min(times), max(times))

    def x(ms: int) -> float:
        ms = min(max(ms, first), last)  # a mark past the axis ends at its edge
        return round(_LEFT + (ms - first) * (_RIGHT - _LEFT) / (last - first), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{_WIDTH}" '
        f'height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="timeline of the evidence events">',
        f"<title>{escape(mark.label)}</title>",
    ]
    if mark.end > mark.start:
        parts.append(f'<rect class="mark" x="{x(mark.start)}" y="{_AXIS_Y - 40}" '
                     f'width="{round(x(mark.end) - x(mark.start), 1)}" height="80" '
                     f'fill="#f4c7c3" fill-opacity="0.6"/>')
    else:
        parts.append(f'<line class="mark" x1="{x(mark.start)}" y1="{_AXIS_Y - 45}" '
                     f'x2="{x(mark.start)}" y2="{_AXIS_Y + 45}" stroke="#c5221f" '
                     f'stroke-width="2" stroke-dasharray="5,4"/>')
    anchor = "end" if x(mark.start) > (_LEFT + _RIGHT) / 2 else "start"
    parts.append(f'<text x="{x(mark.start)}" y="{_AXIS_Y - 48}" font-size="12" '
                 f'text-anchor="{anchor}" fill="#c5221f">{escape(mark.label)}</text>')
    parts.append(f'<line x1="{_LEFT}" y1="{_AXIS_Y}" x2="{_RIGHT}" y2="{_AXIS_Y}" '
                 f'stroke="#555" stroke-width="1.5"/>')
    for number, (ms, event) in enumerate(sorted(dated, key=lambda pair: pair[0])):
        is_trigger = event.get("event_id") == trigger_event_id
        colour, radius = ("#c5221f", 7) if is_trigger else ("#1a73e8", 5)
        label_y = _AXIS_Y + 22 + (number % 2) * 16
        kind = escape(str(event.get("type", "event")))
        parts.append(f'<circle cx="{x(ms)}" cy="{_AXIS_Y}" r="{radius}" fill="{colour}">'
                     f"<title>{kind} at {describe_ms(ms)}</title></circle>")
        parts.append(f'<text x="{x(ms)}" y="{label_y}" font-size="11" text-anchor="middle">'
                     f"{kind}</text>")
    parts.append(f'<text x="{_LEFT}" y="{_HEIGHT - 6}" font-size="10" fill="#555">'
                 f"{describe_ms(first)}</text>")
    parts.append(f'<text x="{_RIGHT}" y="{_HEIGHT - 6}" font-size="10" fill="#555" '
                 f'text-anchor="end">{describe_ms(last)}</text>')
    parts.append("</svg>")
    return "".join(parts)
