"""Protocol fuzzing: ``stream.protocol.decode`` on arbitrary text, bytes and JSON, and on valid messages of
every type with their fields mutated, raises only ``ProtocolError`` with a decode code (or returns a
message that round-trips through ``encode``).

Hypothesis runs derandomized with no example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import protocol as p
from tests.hostile.fuzzcorpus import (
    CHARS,
    FUZZ,
    JOB,
    JSON_SCALARS,
    JSON_VALUES,
    RAW_LITERALS,
    VALID,
    Mutation,
    check_decode,
    field_paths,
    mutated_messages,
)

# ------------------------------------------------------------------------------------------ pure fuzzing


@FUZZ
@given(st.text(CHARS, max_size=200))
def test_arbitrary_text(text):
    check_decode(text)
    check_decode(text, p.CLIENT_MESSAGES)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw):
    check_decode(raw)
    check_decode(raw, p.CLIENT_MESSAGES)


@FUZZ
@given(JSON_VALUES)
def test_arbitrary_json_values(value):
    text = json.dumps(value, allow_nan=True)
    check_decode(text)
    check_decode(text.encode("utf-8", "surrogatepass"))  # lone surrogates: not UTF-8 at all


@FUZZ
@given(
    st.sampled_from(VALID),
    st.dictionaries(st.sampled_from(["type", "v"]), JSON_SCALARS | st.sampled_from(["start", "done", 1, "1"])),
)
def test_type_and_version_fields(message, override):
    body = {**json.loads(p.encode(message)), **override}
    check_decode(json.dumps(body, allow_nan=True))


@settings(FUZZ, max_examples=800)
@given(mutated_messages())
def test_mutated_valid_messages(text):
    check_decode(text)
    check_decode(text, p.CLIENT_MESSAGES)


@pytest.mark.parametrize("message", VALID, ids=lambda m: m.TYPE)
@pytest.mark.parametrize("literal", RAW_LITERALS, ids=lambda s: f"{s[:8]!r}({len(s)}chars)" if len(s) > 8 else repr(s))
def test_every_field_of_every_type_takes_every_raw_literal(message, literal):
    """Exhaustive where hypothesis samples: each raw literal in each field of each message type."""
    body = json.loads(p.encode(message))
    for path in field_paths(body):
        check_decode(Mutation(path, "raw", literal).apply(body))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"type":"start","v":2,"name":"x.mp4","size_bytes":1,"options":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type":"start","v":2,"name":"x.mp4","size_bytes":1,"options":{"x":' + '{"a":' * 100_000 + "}",
        '{"type":"done","v":2,"job_id":"' + JOB + '","report":{"schema":"dff.report/1","r":' + "[" * 100_000,
    ],
    ids=["array", "unclosed", "object", "in-start", "in-options", "in-report"],
)
def test_deeply_nested_json_is_bad_json(text):
    """Issue 9 finding 9: 100,000 levels of nesting is ``bad_json``, not a RecursionError."""
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text, p.CLIENT_MESSAGES)
    assert err.value.code == "bad_json"
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text.encode())
    assert err.value.code == "bad_json"


@pytest.mark.parametrize(
    "field, value",
    [("every_s", "1" * 400), ("threshold", "1" * 400), ("every_s", "-" + "9" * 400), ("every_s", "1e309")],
)
def test_numbers_beyond_float_range_are_refused_in_float_fields(field, value):
    """A 400-digit integer in a float field is not finite as a float: refused, not an OverflowError."""
    text = '{"type":"start","v":2,"name":"x.mp4","size_bytes":1,"options":{"' + field + '":' + value + "}}"
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text, p.CLIENT_MESSAGES)
    assert err.value.code in ("bad_message", "bad_json")


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "NaN", "Infinity"])
def test_a_decoded_report_can_be_encoded_again(literal):
    """``report`` is any JSON object: a number that is not finite must not get through decode only to
    make ``encode`` (which writes strict JSON) fail later."""
    report = json.dumps(VALID[8].report.to_json()).replace('"total_s": 0.0', '"total_s": ' + literal)
    assert literal in report
    text = '{"type":"done","v":2,"job_id":"' + JOB + '","report":' + report + "}"
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text)
    assert err.value.code in ("bad_json", "bad_message")
