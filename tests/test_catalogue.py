"""The catalogue's explanations: the pre-cut template fills exactly as `str.format_map`."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from streams.catalogue import load_catalogue, template_pieces

_NAMES = ("provider", "data_use", "occurred_at", "meeting_id", "consent_state")
_TEXT = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=12)


@given(st.lists(st.tuples(_TEXT, st.sampled_from(_NAMES)), max_size=6), _TEXT,
       st.dictionaries(st.sampled_from(_NAMES), st.one_of(_TEXT, st.integers()),
                       min_size=len(_NAMES)))
def test_pieces_fill_as_format_map(parts, tail, context):
    template = "".join(f"{literal}{{{name}}}" for literal, name in parts) + tail
    rule = dataclasses.replace(load_catalogue().rules[0], explanation=template)
    assert rule.pieces is not None
    assert rule.explain(context) == template.format_map(context)


def test_templates_beyond_plain_names_use_format_map():
    for template in ("{a!r}", "{a:>5}", "{a[0]}", "{a.b}", "{0}"):
        assert template_pieces(template) is None
    rule = dataclasses.replace(load_catalogue().rules[0], explanation="x{a!r}y")
    assert rule.explain({"a": "q"}) == "x'q'y"


def test_escaped_braces_and_every_catalogue_rule():
    pieces = template_pieces("{{literal}} {a}")
    assert pieces is not None
    assert "".join(literal for literal, _ in pieces) == "{literal} "
    context = {name: f"<{name}>" for name in (
        "provider", "data_use", "data_sent", "occurred_at", "meeting_id", "consent_state",
        "outside", "data_disclosed", "feature_state")}
    for rule in load_catalogue().rules:
        assert rule.pieces is not None, rule.id
        assert rule.explain(context) == rule.explanation.format_map(context)
