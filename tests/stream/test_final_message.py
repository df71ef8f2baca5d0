"""A conversation ends with exactly one final message (``done`` or ``error``) and nothing after it, even when
the job's own end and a refusal of the client race for the socket (``_Connection._pump`` vs ``_watch``)."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stream import protocol as p
from stream.jobs import Job
from stream.server import _Connection
from stream.state import JobState
from tests.stream.conftest import get_json, wait_for

JOB = "AbCdEfGh12345678_-xyzQ"


def _start(size_bytes: int, **options) -> str:
    return json.dumps({"type": "start", "v": 2, "name": "x.mp4", "size_bytes": size_bytes, "options": options})


async def _converse(url: str, *sends: str | bytes, send_after_first_frame: str | None = None):
    """Play ``sends`` after ``hello``; every server message until the server closes, and the close code."""
    received: list[p.Message] = []
    async with connect(url, max_size=None, open_timeout=30, proxy=None) as ws:
        received.append(p.decode(await ws.recv(), p.SERVER_MESSAGES))
        for item in sends:
            await ws.send(item)
        try:
            while True:
                message = p.decode(await asyncio.wait_for(ws.recv(), 60), p.SERVER_MESSAGES)
                received.append(message)
                if send_after_first_frame is not None and isinstance(message, p.FrameResult):
                    await ws.send(send_after_first_frame)
                    send_after_first_frame = None
        except ConnectionClosed:
            pass
        return received, ws.close_code


def test_text_racing_the_jobs_own_error_gets_one_error_then_the_close(server):
    """4 bytes that are not media, then text: the job's ``unsupported_media`` and the refusal of the text
    (``unexpected_message``) are sent at about the same moment; before the fix most tries got both."""

    async def attempts():
        return [await _converse(server.ws, _start(4), b"abcd", "hello?") for _ in range(20)]

    for messages, close_code in asyncio.run(attempts()):
        finals = [m for m in messages if isinstance(m, p.FINAL_MESSAGES)]
        assert len(finals) == 1 and messages[-1] is finals[0], [type(m).__name__ for m in messages]
        assert finals[0].code in ("unexpected_message", "unsupported_media"), finals[0]
        assert close_code == 1000


def test_text_while_a_job_runs_is_refused_once_and_cancels_the_job(server, media):
    upload = media["long"].read_bytes()

    async def scenario():
        return await _converse(
            server.ws, _start(len(upload), every_s=0.1), upload, send_after_first_frame="are you done?"
        )

    messages, close_code = asyncio.run(scenario())
    finals = [m for m in messages if isinstance(m, p.FINAL_MESSAGES)]
    assert len(finals) == 1 and messages[-1] is finals[0] and close_code == 1000
    error = finals[0]
    assert isinstance(error, p.Error) and error.code == "unexpected_message", error
    # the only client left by being refused: the job stops, its frames so far stay stored as cancelled
    wait_for(lambda: get_json(f"{server.http}/v1/reports/{error.job_id}/frames")[1]["status"] == "cancelled")
    frames = get_json(f"{server.http}/v1/reports/{error.job_id}/frames")[1]["frames"]
    assert 1 <= len(frames) < 40


class _Wire:
    """The send side of a websocket: records what is sent and yields to the loop on each send, as a socket
    write may, so two senders really contend for the connection's lock."""

    client = ("test", 0)

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        await asyncio.sleep(0)
        self.sent.append(text)


def test_two_tasks_racing_to_end_the_conversation_send_one_final_message():
    async def scenario() -> list[str]:
        wire = _Wire()
        connection = _Connection(wire, service=None)  # type: ignore[arg-type]  # only sends are used
        await connection.send(p.Progress(JOB, "uploading", 0, None))
        await asyncio.gather(
            connection.fail("unexpected_message", "text while a job runs", JOB),
            connection.fail("unsupported_media", "not media", JOB),
        )
        await connection.send(p.Progress(JOB, "queued", 0, None, 0))  # after the end: dropped
        return wire.sent

    sent = [p.decode(t) for t in asyncio.run(scenario())]
    assert [type(m).__name__ for m in sent] == ["Progress", "Error"]
    assert sent[1].code == "unexpected_message"  # the first to take the lock


def test_a_jobs_final_message_ends_the_conversation(tmp_path):
    """``_pump`` sends the job's final message last, for live and late (replayed) watchers alike."""
    frame = p.FrameResult(JOB, 0, 0, 0.0, None, ())
    end = p.Error(code="unsupported_media", message="not media", job_id=JOB)

    async def fetch(job_id: str, first_seq: int, limit: int) -> list[p.FrameResult]:
        return [frame][first_seq : first_seq + limit]  # what the store holds

    async def scenario() -> tuple[list[str], list[str], bool]:
        job = Job(JOB, "x.mp4", tmp_path / "job", None, fetch_frames=fetch)
        live = _Connection(_Wire(), service=None)  # type: ignore[arg-type]
        pump = asyncio.create_task(live._pump(job.attach()))
        job.publish(frame)
        await asyncio.sleep(0.01)
        was_ended = live.ended  # a frame does not end the conversation
        job.end(JobState.FAILED, end)
        await asyncio.wait_for(pump, 5)
        await live.fail("unexpected_message", "too late", JOB)  # the job already ended it: dropped

        replayed = _Connection(_Wire(), service=None)  # type: ignore[arg-type]
        await replayed._pump(job.attach())  # attached after the end: the stored frame, then the end
        await replayed.fail("unexpected_message", "too late", JOB)
        return live.ws.sent, replayed.ws.sent, was_ended

    live_sent, replayed_sent, was_ended = asyncio.run(scenario())
    assert not was_ended
    assert live_sent == replayed_sent == [p.encode(frame), p.encode(end)]
