"""Protocol fuzzing: ``stream.protocol.decode`` on arbitrary text, bytes and JSON, and on valid messages of
every type with their fields mutated, raises only ``ProtocolError`` with a decode code (or returns a
message that round-trips through ``encode``); a live server survives ~200 hostile first messages and
still serves a good client afterwards.

Hypothesis runs derandomized with no example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pipeline.models import build_model, save_checkpoint
from pipeline.report import SCHEMA as REPORT_SCHEMA
from stream import protocol as p
from tests.media import encode_video, face_scene
from tests.servers import Served, make_settings, serving
from tests.stream.conftest import analyze_sync, get_json

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
]
assert {type(m) for m in VALID} == set(p.CLIENT_MESSAGES + p.SERVER_MESSAGES), "a message type is not fuzzed"


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


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
        path = draw(st.sampled_from(list(_paths(body))))
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
    for path in _paths(body):
        check_decode(Mutation(path, "raw", literal).apply(body))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"type":"start","v":1,"name":"x.mp4","size_bytes":1,"options":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type":"start","v":1,"name":"x.mp4","size_bytes":1,"options":{"x":' + '{"a":' * 100_000 + "}",
        '{"type":"done","v":1,"job_id":"' + JOB + '","report":{"schema":"dff.report/1","r":' + "[" * 100_000,
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
    text = '{"type":"start","v":1,"name":"x.mp4","size_bytes":1,"options":{"' + field + '":' + value + "}}"
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text, p.CLIENT_MESSAGES)
    assert err.value.code in ("bad_message", "bad_json")


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "NaN", "Infinity"])
def test_a_decoded_report_can_be_encoded_again(literal):
    """``report`` is any JSON object: a number that is not finite must not get through decode only to
    make ``encode`` (which writes strict JSON) fail later."""
    report = json.dumps(VALID[8].report.to_json()).replace('"total_s": 0.0', '"total_s": ' + literal)
    assert literal in report
    text = '{"type":"done","v":1,"job_id":"' + JOB + '","report":' + report + "}"
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text)
    assert err.value.code in ("bad_json", "bad_message")


# ------------------------------------------------------------------------------------- the live server

ANY_CODE = frozenset(set(p.ERROR_CODES) - {"internal"})


@dataclass(frozen=True)
class Case:
    """One hostile conversation after ``hello``: ``sends`` (text or bytes, in order; ``None`` = the client
    closes there), and the error codes the server may answer with (``closes``: a close without an error
    message is the right answer too, e.g. for an oversized message). Cases with ``codes=ANY_CODE`` may also
    get ``busy``; the others that take a job slot are played one at a time, so they get their own answer."""

    name: str
    sends: tuple[str | bytes | None, ...]
    codes: frozenset[str] = ANY_CODE
    closes: bool = False

    @property
    def takes_a_slot(self) -> bool:
        """Starts a valid upload (the server reserves a job slot, per-client capped)."""
        return bool(self.codes & {"unexpected_message", "size_mismatch", "unsupported_media", "empty_file"})


def _start(size: int | str = 16, name: str = "x.mp4", **options: Any) -> str:
    body = json.dumps({"type": "start", "v": 1, "name": name, "size_bytes": "SIZE", "options": options})
    return body.replace('"SIZE"', str(size))


def hostile_cases(seed: int = 9) -> list[Case]:
    """~200 hostile first messages (and a few follow-ups), the same every run."""
    rnd = random.Random(seed)
    decode = frozenset(DECODE_CODES)
    cases: list[Case] = []
    alphabets = [string.printable, '{}[]":,0123456789.eE-+ntrufalse', "".join(map(chr, range(0x20, 0x3000, 7)))]
    for i in range(60):  # junk text
        text = "".join(rnd.choice(alphabets[i % 3]) for _ in range(rnd.randint(0, 80)))
        cases.append(Case(f"junk-{i}", (text,), decode))
    for i in range(70):  # valid client messages, mutated
        body = json.loads(p.encode(rnd.choice(VALID[:3])))
        path = rnd.choice(list(_paths(body)))
        op = rnd.choice(["replace", "raw", "delete", "add_key"])
        value = {
            "replace": rnd.choice([None, True, -1, 2**64, -(10**30), 0.5, "", "x" * 300, [], {}, [[[[1]]]], "\ud800"]),
            "raw": rnd.choice(RAW_LITERALS),
            "delete": None,
            "add_key": rnd.choice(["extra", "v", "type", "\ud800", ""]),
        }[op]
        # a mutation may leave a valid start (the server then waits for bytes): the client leaves after it
        cases.append(Case(f"mutated-{i}", (Mutation(path, op, value).apply(body), None)))
    for i, raw in enumerate([b"", b"\x00", b"{}", b'{"type":"start"}', rnd.randbytes(1000), b"\xff" * 70_000]):
        cases.append(Case(f"binary-first-{i}", (raw,), frozenset({"unexpected_binary"})))
    big = p.MAX_MESSAGE_BYTES + 1
    cases += [
        Case("oversized-text", ("x" * big,), frozenset(), closes=True),
        Case(
            "oversized-json", ('{"type":"start","v":1,"name":"' + "a" * big + '","size_bytes":1}',), frozenset(), True
        ),
        Case("oversized-binary", (b"\0" * big,), frozenset({"unexpected_binary"}), closes=True),
        Case("oversized-chunk-in-upload", (_start(big + 10), b"\0" * big), frozenset(), closes=True),
        Case("nested-100000", ("[" * 100_000 + "]" * 100_000,), frozenset({"bad_json"})),
        Case("nested-in-start", (_start().replace("{}", "[" * 100_000 + "]" * 100_000),), frozenset({"bad_json"})),
        Case("empty-text", ("",), frozenset({"bad_json"})),
        Case("json-array", ("[]",), frozenset({"bad_message"})),
        Case("json-null", ("null",), frozenset({"bad_message"})),
        Case("version-2", ('{"type":"start","v":2}',), frozenset({"bad_version"})),
        Case("version-true", ('{"type":"attach","v":true,"job_id":"abcdefgh"}',), frozenset({"bad_version"})),
        Case("server-type", ('{"type":"hello","v":1}',), frozenset({"unknown_type"})),
        Case("done-from-client", (p.encode(VALID[8]),), frozenset({"unknown_type"})),
        Case("negative-size", (_start(-1),), frozenset({"bad_message"})),
        Case("fractional-size", (_start("1.5"),), frozenset({"bad_message"})),
        Case("size-1e309", (_start("1e309"),), frozenset({"bad_json", "bad_message"})),
        Case("size-huge", (_start(10**30),), frozenset({"too_large"})),
        Case("size-400-digits", (_start("9" * 400),), frozenset({"too_large"})),
        Case(
            "every_s-400-digits",
            (_start(every_s=1, count=2).replace('"every_s": 1', '"every_s": ' + "9" * 400),),
            frozenset({"bad_message"}),
        ),
        Case("threshold-nan", (_start().replace("{}", '{"threshold": NaN}'),), frozenset({"bad_json"})),
        Case("max-frames-1e9", (_start(0, sample_mode="all", max_frames=10**9),)),
        Case("start-then-text", (_start(16), "more text"), frozenset({"unexpected_message"})),
        Case("start-then-start", (_start(16), _start(16)), frozenset({"unexpected_message"})),
        Case("too-many-bytes", (_start(5), b"0123456789"), frozenset({"size_mismatch"})),
        Case("too-many-bytes-later", (_start(5), b"012", b"345"), frozenset({"size_mismatch"})),
        Case(
            "junk-upload",
            (_start(16), rnd.randbytes(16)),
            frozenset({"bad_media", "unsupported_media", "decode_error"}),
        ),
        Case("text-as-media", (_start(20), b"this is not a video\n"), frozenset({"bad_media", "unsupported_media"})),
        Case("empty-upload", (_start(0),), frozenset({"empty_file"})),
        Case("leave-mid-upload", (_start(100), b"0" * 10, None)),
        Case("leave-at-once", (None,)),
        Case("surrogate-name", (_start(16, name="\ud800.mp4"), rnd.randbytes(16))),
        Case("nul-name", (_start(16, name="a\x00b.mp4"), rnd.randbytes(16))),
        Case("path-name", (_start(16, name="../../etc/passwd"), rnd.randbytes(16))),
        Case("dot-name", (_start(16, name=".."), rnd.randbytes(16))),
        Case("cjk-200-name", (_start(16, name="\u4e2d" * 200 + ".mp4"), rnd.randbytes(16))),
        Case("emoji-255-name", (_start(16, name="\U0001f600" * 251 + ".mp4"), rnd.randbytes(16))),
        Case(
            "text-after-upload", (_start(4), b"abcd", "hello?"), frozenset({"unexpected_message", "unsupported_media"})
        ),
    ]
    for i in range(12):  # attach to ids that do not exist (valid form) and to ids that are not ids
        job_id = "".join(rnd.choice(string.ascii_letters + string.digits + "_-") for _ in range(rnd.randint(8, 64)))
        cases.append(Case(f"attach-{i}", (p.encode(p.Attach(job_id=job_id)),), frozenset({"unknown_job"})))
    for i, job_id in enumerate(["", "short", "../../etc/passwd", "a" * 65, "abc def gh", "\ud800" * 8, "x" * 10**5]):
        text = json.dumps({"type": "attach", "v": 1, "job_id": job_id})
        cases.append(Case(f"attach-bad-{i}", (text,), frozenset({"bad_message"})))
    return cases


async def _converse(url: str, case: Case) -> tuple[list[p.Message], int | None]:
    """Play ``case``; every server message until the server closes (or 60 s), and the close code."""
    received: list[p.Message] = []
    async with connect(url, max_size=None, open_timeout=30, proxy=None) as ws:
        received.append(p.decode(await ws.recv(), p.SERVER_MESSAGES))
        for item in case.sends:
            if item is None:
                await ws.close()
                return received, None
            try:
                await ws.send(item)
            except ConnectionClosed:
                break
        try:
            while True:
                received.append(p.decode(await asyncio.wait_for(ws.recv(), 60), p.SERVER_MESSAGES))
        except ConnectionClosed:
            pass
        return received, ws.close_code


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz_server")
    save_checkpoint(build_model(), root / "models" / "random.pth")
    with serving(make_settings(root / "data", root / "models", max_upload_mb=5)) as served:
        yield served


def test_the_live_server_survives_a_fuzzed_session(fuzz_server, tmp_path):
    cases = hostile_cases()
    assert len(cases) >= 190
    errors = _Errors()
    loggers = [logging.getLogger(n) for n in ("dff.server", "dff.routes", "dff.service", "dff.worker", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(errors)

    async def run_all() -> list[tuple[Case, list[p.Message], int | None]]:
        gate = asyncio.Semaphore(8)

        async def one(case: Case):
            async with gate:
                return (case, *await _converse(fuzz_server.ws, case))

        crowd = await asyncio.gather(*(one(c) for c in cases if not c.takes_a_slot))
        return crowd + [await one(c) for c in cases if c.takes_a_slot]

    try:
        outcomes = asyncio.run(run_all())
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
    wrong = []
    for case, messages, close_code in outcomes:
        assert isinstance(messages[0], p.Hello) and messages[0].status == "ready"
        errs = [m for m in messages if isinstance(m, p.Error)]
        if case.sends[-1] is None:  # the client left: whatever came before must not be a server bug
            ok = all(e.code in ANY_CODE for e in errs)
        elif errs:  # exactly one error, the last message, with a code this case may get
            ok = len(errs) == 1 and messages[-1] is errs[0] and errs[0].code in case.codes
        else:
            ok = case.closes and close_code == 1009  # message too big
        if not ok:
            got = [e.code + ": " + e.message[:80] for e in errs] or [f"close {close_code}"]
            wrong.append(f"{case.name}: expected {sorted(case.codes)[:6]}, got {got}")
    assert not wrong, f"{len(wrong)} of {len(cases)} hostile conversations went wrong:\n" + "\n".join(wrong)
    assert not errors.records, "server logged errors:\n" + "\n".join(
        f"{r.name}: {r.getMessage()[:200]}" for r in errors.records
    )

    # it keeps serving: a good client gets a correct report, and the server is healthy
    scenes = [face_scene(320, 240, [(40 + 3 * t, 50, 120)]) for t in range(10)]
    clip = encode_video(tmp_path / "good.mp4", scenes, fps=10)
    messages = analyze_sync(fuzz_server.ws, clip)
    accepted = next(m for m in messages if isinstance(m, p.Accepted))
    frames = [m for m in messages if isinstance(m, p.FrameResult)]
    done = messages[-1]
    assert isinstance(done, p.Done), done
    assert done.job_id == accepted.job_id and done.report.schema == REPORT_SCHEMA
    assert accepted.planned_frames == len(frames) == len(done.report.frames) == 2
    assert all(len(f.faces) == 1 for f in frames)
    assert get_json(f"{fuzz_server.http}/v1/reports/{done.job_id}") == (200, done.report.to_json())
    status, health = get_json(f"{fuzz_server.http}/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["queue"]["running"] == 0


def test_one_error_ends_the_conversation(fuzz_server):
    """Text while a job runs is refused with ``unexpected_message``; the job's own end (here: the upload is
    not media) may race with that refusal, but whichever comes first is the last message on the wire."""
    case = Case("text-after-upload", (_start(4), b"abcd", "hello?"))

    async def attempts() -> list[list[str]]:
        return [
            [m.code for m in (await _converse(fuzz_server.ws, case))[0] if isinstance(m, p.Error)] for _ in range(10)
        ]

    for codes in asyncio.run(attempts()):
        assert len(codes) == 1 and codes[0] in ("unexpected_message", "unsupported_media"), codes
