"""The worker's finding writer gives the general path's bytes: sealed, then encoded."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.catalogue import load_catalogue
from streams.errors import SchemaError
from streams.model.events import ParticipantJoined
from streams.model.findings import Finding
from streams.privacy.pseudonymise import NAMES_IN_CLEAR_FOR, Pseudonymiser
from streams.serde.finding_writer import FindingWriter
from streams.serde.wire import _current, decode_output, encode_finding, encode_output
from tests.strategies import event_of, findings

_RULES = st.sampled_from(sorted({rule.id for rule in load_catalogue().rules}
                                | NAMES_IN_CLEAR_FOR))
_KEYS = st.binary(min_size=32, max_size=64)


@given(finding=findings(), rule=_RULES, key=_KEYS)
def test_a_finding_is_written_as_sealing_then_encoding_writes_it(finding: Finding, rule: str,
                                                                  key: bytes) -> None:
    finding = dataclasses.replace(finding, rule=rule)
    pseudonymiser = Pseudonymiser(key)
    written = encode_finding(finding, pseudonymiser)
    assert written == encode_output(pseudonymiser.finding(finding))
    assert decode_output(written).finding_id == finding.finding_id


@given(base=findings(), joined=event_of(ParticipantJoined))
def test_names_stay_in_clear_only_for_the_rules_that_keep_them(
        base: Finding, joined: ParticipantJoined) -> None:
    joined = dataclasses.replace(joined, display_name="Ada Lovelace")
    pseudonymiser = Pseudonymiser(b"k" * 32)
    for rule, in_clear in (("pseudonym-deanonymized", True),
                           ("enrichment-without-consent", False)):
        finding = dataclasses.replace(base, rule=rule, evidence=(joined,))
        written = encode_finding(finding, pseudonymiser)
        assert (b"Ada Lovelace" in written) is in_clear
        assert written == encode_output(pseudonymiser.finding(finding))


@given(base=findings())
def test_evidence_that_is_not_an_event_is_refused(base: Finding) -> None:
    finding = dataclasses.replace(base, evidence=({"type": "X"},))
    with pytest.raises(TypeError, match="not an event"):
        encode_finding(finding, Pseudonymiser(b"k" * 32))


def test_a_schema_whose_fields_are_not_the_findings_is_refused() -> None:
    schema = _current("Finding")
    with pytest.raises(SchemaError):
        FindingWriter({**schema, "fields": schema["fields"][::-1]})
