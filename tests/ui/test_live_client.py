"""ui/live_client.py: the newest-first frame feed, the pushed-frame encoding, and real watch/push sessions
against the real server (port 0, tiny random checkpoint) and a loopback MPEG-TS stream."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from stream import protocol as p
from tests.livemedia import LiveClip, TsHttpServer
from tests.servers import Served, free_port, make_settings, serving
from ui.client import ClientError
from ui.live_client import FrameFeed, PushedFrame, jpeg_bytes, push, watch

pytestmark = pytest.mark.timeout(120)
CLIP = LiveClip(n_faces=1)
WAIT_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint_dir) -> Iterator[Served]:
    with serving(make_settings(tmp_path_factory.mktemp("live_client"), checkpoint_dir, live_rate_hz=2.0)) as served:
        yield served


async def until_done(messages, on_status=None) -> list[p.Message]:
    """Every message of a session, each within WAIT_S; ``on_status(n)`` after the n-th ``live``."""
    out: list[p.Message] = []
    iterator = aiter(messages)
    while True:
        try:
            message = await asyncio.wait_for(anext(iterator), WAIT_S)
        except StopAsyncIteration:
            return out
        out.append(message)
        if isinstance(message, p.LiveStatus) and on_status is not None:
            on_status(sum(isinstance(m, p.LiveStatus) for m in out))


# ------------------------------------------------------------------------------------------------ pure


def test_the_feed_keeps_the_newest_frames_and_counts_the_ones_it_drops() -> None:
    async def scenario() -> tuple[list[float], FrameFeed]:
        feed = FrameFeed(max_frames=2)
        for i in range(5):
            assert feed.put(float(i), b"x")
        feed.close()
        assert not feed.put(9.0, b"x"), "a closed feed takes no frame"
        got = []
        while (frame := await asyncio.wait_for(feed.get(), 1)) is not None:
            got.append(frame.time_s)
        return got, feed

    got, feed = asyncio.run(scenario())
    assert got == [3.0, 4.0] and feed.dropped == 3 and feed.put_count == 5


def test_a_waiting_get_wakes_on_a_frame_and_on_close() -> None:
    async def scenario() -> list[PushedFrame | None]:
        feed = FrameFeed()
        waiting = asyncio.create_task(feed.get())
        await asyncio.sleep(0.05)
        feed.put(1.5, b"jpeg")
        first = await asyncio.wait_for(waiting, 1)
        waiting = asyncio.create_task(feed.get())
        await asyncio.sleep(0.05)
        feed.close()
        return [first, await asyncio.wait_for(waiting, 1)]

    assert asyncio.run(scenario()) == [PushedFrame(1.5, b"jpeg"), None]
    with pytest.raises(ValueError):
        FrameFeed(0)


def test_a_pushed_frame_is_its_big_endian_time_then_the_picture() -> None:
    image = CLIP.frame(0)
    data = jpeg_bytes(image)
    message = PushedFrame(12.25, data).encode()
    assert len(message) == p.PUSH_HEADER_BYTES + len(data) and struct.unpack(">d", message[:8]) == (12.25,)
    decoded = Image.open(io.BytesIO(message[8:]))
    assert decoded.format == "JPEG" and decoded.size == (CLIP.width, CLIP.height)
    assert Image.open(io.BytesIO(jpeg_bytes(np.zeros((4, 6), np.uint8)))).mode == "RGB", "grey becomes RGB"
    with pytest.raises(ValueError, match="uint8"):
        jpeg_bytes(np.zeros((4, 4, 3), np.float32))


# -------------------------------------------------------------------------------------- real sessions


def test_push_sends_frames_as_they_come_and_closing_the_feed_brings_the_report(server) -> None:
    n = 4

    async def scenario() -> list[p.Message]:
        feed = FrameFeed()
        jpeg = jpeg_bytes(CLIP.frame(0))
        feed.put(0.0, jpeg)

        def next_frame(analysed: int) -> None:  # one frame after each verdict: none dropped
            if analysed < n:
                feed.put(analysed * 0.5, jpeg)
            else:
                feed.close()

        return await until_done(push(feed, server.ws, name="webcam", options=p.Options(overlays=True)), next_frame)

    messages = asyncio.run(scenario())
    assert isinstance(messages[0], p.Hello)
    frames = [m for m in messages if isinstance(m, p.FrameResult)]
    assert len(frames) == n and all(f.faces and f.faces[0].overlay_jpeg_b64 for f in frames)
    assert [m.kind for m in messages if isinstance(m, p.Notice)] == ["connected"]
    done = messages[-1]
    assert isinstance(done, p.Done) and done.report.session is not None
    assert done.report.session.end == "stopped" and done.report.session.frames_analysed == n
    assert done.report.media.kind == "live" and done.report.media.name == "webcam"


def test_watch_follows_a_stream_until_stop_is_set_then_the_report(server) -> None:
    async def scenario() -> list[p.Message]:
        stop = asyncio.Event()
        messages = watch(stream.url(), server.ws, stop=stop, options=p.Options(rate_hz=2.0))
        return await until_done(messages, lambda n: n >= 2 and stop.set())

    with TsHttpServer(CLIP) as stream:  # endless: only stop ends it
        messages = asyncio.run(scenario())
    assert sum(isinstance(m, p.LiveStatus) for m in messages) >= 2
    accepted = next(m for m in messages if isinstance(m, p.Accepted))
    assert accepted.media.kind == "live" and accepted.policy.every_s == pytest.approx(0.5)
    done = messages[-1]
    assert isinstance(done, p.Done) and done.report.session.end == "stopped"
    assert done.report.media.name == stream.url()


def test_a_refused_url_is_the_servers_error_message_not_an_exception(server) -> None:
    messages = asyncio.run(until_done(watch("concat:/etc/passwd|/etc/hosts", server.ws, stop=asyncio.Event())))
    assert [type(m) for m in messages] == [p.Hello, p.Error] and messages[-1].code == "unsupported_source"


def test_no_server_and_a_missing_token_are_client_errors(tmp_path, checkpoint_dir) -> None:
    with pytest.raises(ClientError) as err:
        asyncio.run(until_done(watch("http://127.0.0.1:9/x.ts", f"ws://127.0.0.1:{free_port()}/v1/analyze")))
    assert err.value.code == "connect"
    with serving(make_settings(tmp_path, checkpoint_dir, token="s3cret")) as served:
        with pytest.raises(ClientError) as err:
            asyncio.run(until_done(push(FrameFeed(), served.ws)))
        assert err.value.code == "unauthorized"
        feed = FrameFeed()
        feed.close()  # with the token the session starts; with no frame at all it ends as a source error
        messages = asyncio.run(until_done(push(feed, served.ws, token="s3cret")))
    assert [m.TYPE for m in messages] == ["hello", "progress", "error"]
    assert messages[-1].code == "source_unavailable" and "before it sent anything" in messages[-1].message
