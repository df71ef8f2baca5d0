"""What the protocol fuzz tests feed ``stream.protocol.decode`` and the live server: the property every
decode must keep, hypothesis strategies for JSON and mutated messages, raw literals, and one valid
message of every type (shared by test_fuzz.py and test_fuzz_server.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from pipeline.report import SCHEMA as REPORT_SCHEMA
from stream import protocol as p

DECODE_CODES = {"bad_json", "bad_message", "bad_version", "unknown_type"}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded time when it fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ------------------------------------------------------------------------------------------ the property


def check_decode(raw: str | bytes, allowed: tuple[type, ...] | None = None) -> p.Message | None:
    """The fuzz property: decode raises only ProtocolError with a decode code, or returns an allowed
    message that encodes to valid JSON and decodes back to itself. Returns the message (None = refused)."""
    try:
        message = p.decode(raw, allowed)
    except p.ProtocolError as err:
        assert err.code in DECODE_CODES, f"decode gave code {err.code!r} for {raw!r:.200}"
        assert str(err), "a ProtocolError says what is wrong"
        return None
    assert isinstance(message, allowed or p.CLIENT_MESSAGES + p.SERVER_MESSAGES)
    text = p.encode(message)  # must not raise: a decoded message is a valid one
    json.loads(text)
    assert p.decode(text, allowed) == message
    assert p.decode(text.encode("utf-8"), allowed) == message
    return message


# ------------------------------------------------------------------------------------------ strategies

# every character, lone surrogates included (JSON text may carry them as \ud800 escapes)
CHARS = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
TEXT = st.text(CHARS, max_size=40)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([10**400, -(10**400), 2**1024]),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN/Infinity dump as the non-JSON literals
    st.just(-0.0),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=5)),
    max_leaves=30,
)
# raw literals json.dumps cannot write (or that json.loads reads as something odd)
RAW_LITERALS = [
    "1e309",
    "-1e309",
    "-0",
    "-0.0",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" * 5000,  # over Python's int-from-text digit limit
    "1" * 400,
    "1.0e-400",
    "0x10",
    "01",
    "+1",
    ".5",
    "1.",
    "true false",
    "nul",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\x00"',
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    "[" * 100_000,
    "[" * 100_000 + "]" * 100_000,
]


JOB = "AbCdEfGh12345678_-xyzQ"
_MODEL = p.ModelSummary(name="seed.pth", sha256="ab" * 32, device="cpu", untrained=False)
_MEDIA = p.Media("clip.mp4", 1234, "cd" * 32, "mov,mp4", "h264", 640, 360, 30.0, 2.0, 0, False, 60)
_FACE = p.Face(0, (1.0, 2.0, 50.5, 60.0), 0.99, 0.75, 3, "/9j/4AAQ")
VALID = [
    p.Start(name="clip.mp4", size_bytes=1234),
    p.Start(name="a.mov", size_bytes=0, options=p.Options("count", 0.5, 8, 100, "mean", 0.4, True)),
    p.Attach(job_id=JOB),
    p.Hello(server_version="0.1.0", status="ready", model=_MODEL, max_upload_bytes=10, max_message_bytes=4),
    p.Progress(JOB, "queued", 3, 10, 2),
    p.Accepted(JOB, _MEDIA, 60, p.Policy("every_s", 1.0, 16, 300), "per_person", 0.5, True, _MODEL),
    p.FrameResult(JOB, 0, 30, 1.0, 0.75, (_FACE, _FACE)),
    p.FrameResult(JOB, 1, 60, 2.0, None, ()),
    p.Done(
        JOB,
        p.Report(
            REPORT_SCHEMA,
            _MEDIA,
            p.Policy("every_s", 1.0, 16, 300),
            p.ReportModel("seed.pth", "ab" * 32, p.Profile("facenet", 160, 14, 160, "bilinear", 1 / 128), "cpu", False),
            "per_person",
            0.5,
            0.75,
            "fake",
            (p.FrameRow(0, 0.0, 0.75, (p.FaceRow(0, (1.0, 2.0, 50.5, 60.0), 0.99, 0.75, 0),)),),
            (p.Track(0, (0,), 0.0, 0.0, (0.75,), 0.75, "inconclusive"),),
            (p.Segment(0.0, 0.0, 0.0, 0.75, 1),),
            p.Timings(),
            "0.1.0",
            p.Summary(1, 1, 1, 1, False),
        ),
    ),
    p.Error(code="busy", message="try later", job_id=JOB),
    p.Watch(url="rtsp://127.0.0.1:8554/cam", options=p.Options(rate_hz=2.0)),
    p.Push(name="webcam"),
    p.Stop(),
    p.Notice(JOB, "reconnecting", "connection refused", 2, 5, 1.0),
    p.LiveStatus(JOB, 3, 0.4, (p.Person(0, 0.0, 1.5, 4, 4, 0.2, "real", False),), p.LiveCounters(40, 4, 1, 3, 0)),
]
assert {type(m) for m in VALID} == set(p.CLIENT_MESSAGES + p.SERVER_MESSAGES), "a message type is not fuzzed"


def field_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from field_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from field_paths(item, (*prefix, i))


_PLACEHOLDER = "\ue000raw-literal\ue000"


@dataclass(frozen=True)
class Mutation:
    """One change to a valid message's JSON: at ``path``, ``op`` (replace/delete/add_key/raw) with ``value``."""

    path: tuple[Any, ...]
    op: str
    value: Any

    def apply(self, body: Any) -> str:
        body = copy.deepcopy(body)
        parent, leaf = self._parent(body)
        if self.op == "replace":
            body = self._set(body, parent, leaf, self.value)
        elif self.op == "raw":
            body = self._set(body, parent, leaf, _PLACEHOLDER)
        elif self.op == "delete" and isinstance(parent, dict):
            del parent[leaf]
        elif self.op == "add_key":
            target = body if parent is None else parent[leaf]
            if isinstance(target, dict):
                target[self.value] = 1
        text = json.dumps(body, allow_nan=True, ensure_ascii=bool(len(self.path) % 2))
        return text.replace(json.dumps(_PLACEHOLDER), self.value) if self.op == "raw" else text

    def _parent(self, body: Any) -> tuple[Any, Any]:
        if not self.path:
            return None, None
        parent = body
        for key in self.path[:-1]:
            parent = parent[key]
        return parent, self.path[-1]

    @staticmethod
    def _set(body: Any, parent: Any, leaf: Any, value: Any) -> Any:
        if parent is None:
            return value
        parent[leaf] = value
        return body


@st.composite
def mutated_messages(draw: st.DrawFn) -> str:
    """A valid message of any type, with one to three of its fields (or the whole) mutated."""
    body = json.loads(p.encode(draw(st.sampled_from(VALID))))
    text = json.dumps(body)
    for _ in range(draw(st.integers(1, 3))):
        body = json.loads(text) if _parses(text) else body
        path = draw(st.sampled_from(list(field_paths(body))))
        op = draw(st.sampled_from(["replace", "replace", "raw", "delete", "add_key"]))
        value = {
            "replace": lambda: draw(JSON_VALUES),
            "raw": lambda: draw(st.sampled_from(RAW_LITERALS)),
            "delete": lambda: None,
            "add_key": lambda: draw(st.one_of(TEXT, st.sampled_from(["type", "v", "options", "__proto__"]))),
        }[op]()
        text = Mutation(path, op, value).apply(body)
        if not _parses(text):
            break
    return text


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True
