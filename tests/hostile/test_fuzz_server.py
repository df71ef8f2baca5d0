"""A live server survives ~200 hostile conversations (fuzzed first messages, wrong sizes, junk mid-job) with
one typed error each, never ``internal``, and still serves a good client afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pipeline.models import build_model, save_checkpoint
from pipeline.report import SCHEMA as REPORT_SCHEMA
from stream import protocol as p
from tests.hostile.fuzzcorpus import DECODE_CODES, RAW_LITERALS, VALID, Mutation, field_paths
from tests.media import encode_video, face_scene
from tests.servers import Served, make_settings, serving
from tests.stream.conftest import analyze_sync, get_json

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
    body = json.dumps({"type": "start", "v": 2, "name": name, "size_bytes": "SIZE", "options": options})
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
        path = rnd.choice(list(field_paths(body)))
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
            "oversized-json", ('{"type":"start","v":2,"name":"' + "a" * big + '","size_bytes":1}',), frozenset(), True
        ),
        Case("oversized-binary", (b"\0" * big,), frozenset({"unexpected_binary"}), closes=True),
        Case("oversized-chunk-in-upload", (_start(big + 10), b"\0" * big), frozenset(), closes=True),
        Case("nested-100000", ("[" * 100_000 + "]" * 100_000,), frozenset({"bad_json"})),
        Case("nested-in-start", (_start().replace("{}", "[" * 100_000 + "]" * 100_000),), frozenset({"bad_json"})),
        Case("empty-text", ("",), frozenset({"bad_json"})),
        Case("json-array", ("[]",), frozenset({"bad_message"})),
        Case("json-null", ("null",), frozenset({"bad_message"})),
        Case("version-3", ('{"type":"start","v":3}',), frozenset({"bad_version"})),
        Case("version-true", ('{"type":"attach","v":true,"job_id":"abcdefgh"}',), frozenset({"bad_version"})),
        Case("server-type", ('{"type":"hello","v":2}',), frozenset({"unknown_type"})),
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
        text = json.dumps({"type": "attach", "v": 2, "job_id": job_id})
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
