"""Live sessions over the websocket API: push (client frames) and watch (a URL), stop, refusals, History."""

from __future__ import annotations

import asyncio
import io
import struct

import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from stream import protocol as p
from tests.livemedia import LiveClip, SilentServer, TsHttpServer
from tests.media import face_scene
from tests.stream.conftest import get_json, http

pytestmark = pytest.mark.timeout(120)
FACE = face_scene(320, 240, [(90, 50, 130)])


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pushed(time_s: float, data: bytes) -> bytes:
    return struct.pack(">d", time_s) + data


def kinds(messages: list[p.Message]) -> list[str]:
    return [m.TYPE + (f"({m.stage})" if isinstance(m, p.Progress) else "") for m in messages]


async def push_session(url: str, frames: list[tuple[float, bytes]], options: p.Options, *, paced: bool):
    """Push ``frames`` (time_s, picture bytes) — each after the previous one's verdict when ``paced`` — then
    stop once every frame was analysed or dropped; every message."""
    messages: list[p.Message] = []

    async def until(done) -> None:
        while not done():
            message = p.decode(await asyncio.wait_for(ws.recv(), 60))
            messages.append(message)
            assert not isinstance(message, p.FINAL_MESSAGES), message

    def statuses() -> list[p.LiveStatus]:
        return [m for m in messages if isinstance(m, p.LiveStatus)]

    async with connect(url, max_size=None) as ws:
        messages.append(p.decode(await ws.recv()))  # hello
        await ws.send(p.encode(p.Push(name="webcam", options=options)))
        for n, (time_s, data) in enumerate(frames, 1):
            await ws.send(pushed(time_s, data))
            if paced:
                await until(lambda n=n: len(statuses()) >= n)
        await until(lambda: bool(statuses()) and sum(_seen(statuses()[-1].stats)) >= len(frames))
        await ws.send(p.encode(p.Stop()))
        messages.extend([p.decode(m) async for m in ws])
    return messages


def _seen(stats: p.LiveCounters) -> tuple[int, int]:
    return stats.delivered, stats.dropped


def test_a_pushed_session_streams_frames_and_live_status_then_its_stored_report(server):
    frames = [(i * 0.5, jpeg(FACE)) for i in range(4)]
    messages = asyncio.run(push_session(server.ws, frames, p.Options(rate_hz=2.0, overlays=True), paced=True))
    names = kinds(messages)
    assert names[:6] == ["hello", "progress(queued)", "accepted", "progress(analyzing)", "notice", "frame"]
    assert names[-1] == "done" and names.count("frame") == 4 and names.count("live") == 4
    accepted = messages[2]
    assert isinstance(accepted, p.Accepted)
    assert (accepted.media.kind, accepted.media.size_bytes, accepted.media.sha256) == ("live", None, None)
    assert accepted.planned_frames is None and accepted.policy.every_s == pytest.approx(0.5)
    frame = next(m for m in messages if isinstance(m, p.FrameResult))
    assert frame.faces and frame.faces[0].overlay_jpeg() is not None, "overlays were asked for"
    status = [m for m in messages if isinstance(m, p.LiveStatus)][-1]
    assert status.seq == 3 and status.people and status.people[0].n_faces == 4 and status.lag_s >= 0
    done = messages[-1]
    assert isinstance(done, p.Done)
    report = done.report
    assert report.session is not None and report.session.end == "stopped"
    assert report.session.frames_analysed == 4 and report.frames == () and report.summary.n_frames == 4
    # stored like any report, listed as live, its frames in the store and the CSV
    status_code, listing = get_json(f"{server.url}v1/reports?limit=5")
    assert status_code == 200, listing
    row = next(r for r in listing["reports"] if r["id"] == done.job_id)
    assert (row["kind"], row["status"], row["n_frames"], row["size_bytes"]) == ("live", "done", 4, 0)
    status_code, stored = get_json(f"{server.url}v1/reports/{done.job_id}/frames")
    assert status_code == 200 and len(stored["frames"]) == 4
    status_code, _, csv = http("GET", f"{server.url}v1/reports/{done.job_id}.csv")
    assert status_code == 200 and len(csv.decode().strip().splitlines()) == 1 + 4


def test_a_client_that_pushes_faster_than_analysis_gets_the_newest_frames_and_the_drops_counted(server):
    frames = [(i * 0.5, jpeg(FACE)) for i in range(12)]  # all at once: the server's queue holds 2
    messages = asyncio.run(push_session(server.ws, frames, p.Options(rate_hz=2.0), paced=False))
    done = messages[-1]
    assert isinstance(done, p.Done) and done.report.session is not None
    stats = done.report.session.stats
    analysed = [m.index for m in messages if isinstance(m, p.FrameResult)]
    assert stats.sampled == 12 and stats.dropped > 0 and stats.delivered == len(analysed) == 12 - stats.dropped
    assert analysed == sorted(analysed) and analysed[-1] == 11, "the newest frame is always analysed"


def test_bad_pushed_frames_are_refused_with_a_notice_and_the_session_goes_on(server):
    frames = [
        (0.0, jpeg(FACE)),
        (0.5, b"not a picture at all"),
        (1.0, jpeg(face_scene(200, 100, [(40, 10, 80)]))),  # another size
        (1.5, jpeg(FACE)),
    ]

    async def scenario():
        messages: list[p.Message] = []
        async with connect(server.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(p.Push(name="cam", options=p.Options(rate_hz=2.0))))
            for time_s, data in frames:
                await ws.send(pushed(time_s, data))
            await ws.send(b"\x00\x01")  # shorter than the time header
            while len([m for m in messages if isinstance(m, p.FrameResult)]) < 2:
                messages.append(p.decode(await asyncio.wait_for(ws.recv(), 60)))
            await ws.send(p.encode(p.Stop()))
            async for raw in ws:
                messages.append(p.decode(raw))
        return messages

    messages = asyncio.run(scenario())
    refused = [m.message for m in messages if isinstance(m, p.Notice) and m.kind == "refused"]
    assert len(refused) == 3, refused
    assert any("JPEG or PNG" in r for r in refused) and any("first frame's size 320×240" in r for r in refused)
    assert any("8-byte time" in r for r in refused)
    assert isinstance(messages[-1], p.Done) and messages[-1].report.session.frames_analysed == 2


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (p.Watch(url="file:///etc/passwd"), "unsupported_source"),
        (p.Watch(url="concat:/etc/passwd|/etc/hosts"), "unsupported_source"),
        (p.Watch(url="subfile:,start,0,end,0,:/etc/passwd"), "unsupported_source"),
        (p.Watch(url="rtsp://"), "unsupported_source"),
        (p.Watch(url="http://127.0.0.1:1/x.ts", options=p.Options(every_s=1.0)), "bad_config"),
        (p.Watch(url="http://127.0.0.1:1/x.ts", options=p.Options(max_frames=3)), "bad_config"),
        (p.Stop(), "unexpected_message"),
    ],
)
def test_live_requests_that_cannot_run_are_refused_before_anything_starts(server, message, code):
    async def scenario():
        async with connect(server.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(message))
            return [p.decode(m) async for m in ws]

    (reply,) = asyncio.run(scenario())
    assert isinstance(reply, p.Error) and reply.code == code, reply


def test_an_unreachable_url_fails_the_session_with_a_clear_error(server):
    async def scenario():
        async with connect(server.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(p.Watch(url="http://127.0.0.1:9/stream.ts")))
            return [p.decode(m) async for m in ws]

    messages = asyncio.run(scenario())
    assert isinstance(messages[-1], p.Error) and messages[-1].code in ("source_unavailable", "source_timeout")
    assert "127.0.0.1:9" in messages[-1].message


async def watch_session(url: str, stream_url: str, *, stop_after_frames: int | None, token: str | None = None):
    """Watch ``stream_url`` through the server; send stop after that many frames (None: until it ends)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    messages: list[p.Message] = []
    async with connect(url, max_size=None, additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(p.encode(p.Watch(url=stream_url, options=p.Options(rate_hz=2.0))))
        async for raw in ws:
            message = p.decode(raw)
            messages.append(message)
            frames = sum(isinstance(m, p.FrameResult) for m in messages)
            if stop_after_frames is not None and frames == stop_after_frames and isinstance(message, p.LiveStatus):
                await ws.send(p.encode(p.Stop()))
    return messages


def test_a_watched_stream_that_ends_cleanly_ends_the_session_with_its_report(server):
    with TsHttpServer(LiveClip(fps=10), seconds=3.0) as stream:
        messages = asyncio.run(watch_session(server.ws, stream.url(), stop_after_frames=None))
    done = messages[-1]
    assert isinstance(done, p.Done), messages[-1]
    session = done.report.session
    assert session is not None and session.end == "ended" and 4 <= session.frames_analysed <= 7
    connected = [m for m in messages if isinstance(m, p.Notice) and m.kind == "connected"]
    assert len(connected) == 1 and "320×240" in connected[0].message
    assert done.report.media.kind == "live" and done.report.media.name == stream.url()
    times = [m.time_s for m in messages if isinstance(m, p.FrameResult)]
    # sampled at 2/s of stream time (a frame dropped under load leaves a gap of 1 s, never less than 0.5)
    assert all(b - a > 0.4 for a, b in zip(times, times[1:], strict=False))


def test_stop_ends_an_endless_stream_with_its_report_and_a_token_is_needed_like_for_uploads(tmp_path, models_dir):
    from tests.servers import serving
    from tests.stream.conftest import make_settings

    with serving(make_settings(tmp_path, models_dir, token="s3cret")) as served, TsHttpServer(LiveClip()) as stream:
        with pytest.raises(Exception, match="401"):
            asyncio.run(watch_session(served.ws, stream.url(), stop_after_frames=2))
        messages = asyncio.run(watch_session(served.ws, stream.url(), stop_after_frames=2, token="s3cret"))
    done = messages[-1]
    assert isinstance(done, p.Done) and done.report.session is not None
    assert done.report.session.end == "stopped" and done.report.session.frames_analysed >= 2


def test_a_silent_live_source_never_holds_up_a_file_job_and_times_out_clearly(tmp_path, models_dir, media):
    from tests.servers import serving
    from tests.stream.conftest import analyze_sync, make_settings

    settings = make_settings(tmp_path, models_dir, live_open_timeout_s=4.0, live_reconnects=0)
    with serving(settings) as served, SilentServer() as silent:

        async def scenario() -> tuple[list[p.Message], float, list[p.Message], float]:
            t0 = asyncio.get_running_loop().time()
            live = asyncio.create_task(_watch_all(served.ws, silent.url()))
            await asyncio.sleep(0.5)  # the live job holds its slot, its reader blocked in FFmpeg's open
            upload = await asyncio.to_thread(analyze_sync, served.ws, media["short"])
            t_file = asyncio.get_running_loop().time() - t0
            messages = await live
            return upload, t_file, messages, asyncio.get_running_loop().time() - t0

        upload, t_file, messages, t_live = asyncio.run(scenario())
    assert isinstance(upload[-1], p.Done), "the file job finished while the live source was silent"
    assert t_file < t_live, "the file's report came before the live source's timeout"
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == "source_timeout", error
    assert 3.5 < t_live < 15.0


async def _watch_all(url: str, stream_url: str) -> list[p.Message]:
    async with connect(url, max_size=None) as ws:
        await ws.recv()
        await ws.send(p.encode(p.Watch(url=stream_url)))
        return [p.decode(m) async for m in ws]


def test_shutdown_ends_a_live_session_with_its_stored_report(tmp_path, models_dir):
    from tests.servers import start_server
    from tests.stream.conftest import make_settings

    served = start_server(make_settings(tmp_path, models_dir))

    async def scenario() -> list[p.Message]:
        messages: list[p.Message] = []
        async with connect(served.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(p.Push(name="cam", options=p.Options(rate_hz=2.0))))
            await ws.send(pushed(0.0, jpeg(FACE)))
            while not any(isinstance(m, p.LiveStatus) for m in messages):
                messages.append(p.decode(await asyncio.wait_for(ws.recv(), 60)))
            stopper = asyncio.create_task(asyncio.to_thread(served.stop))
            async for raw in ws:
                messages.append(p.decode(raw))
            await stopper
        return messages

    try:
        messages = asyncio.run(scenario())
    finally:
        if served.thread.is_alive():
            served.stop()
    done = messages[-1]
    assert isinstance(done, p.Done) and done.report.session is not None, messages[-1]
    assert done.report.session.end == "stopped" and done.report.session.frames_analysed == 1
    from stream.store import Store

    with Store(served.settings.data_dir) as store:
        row = store.job(done.job_id)
    assert row is not None and (row.status, row.kind) == ("done", "live")
