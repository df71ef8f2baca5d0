"""What a client may ask of the server is bounded by the server: slow uploads hit a deadline derived from a
minimum rate, one client IP holds only its share of the slots, and a request cannot lift the frame cap."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

from stream import protocol as p
from tests.stream.conftest import analyze_sync, get_json, make_settings, serving, wait_for
from ui.client import analyze_file

SLOW_IP = "127.0.0.2"  # all of 127/8 is loopback on Linux: a second "client" without a second machine


def _start(size: int, **options) -> str:
    return p.encode(p.Start(name="x.mp4", size_bytes=size, options=p.Options(**options)))


async def _slowloris(url: str, declared: int, every_s: float = 0.3) -> tuple[p.Message, float]:
    """Declare ``declared`` bytes, then send one byte every ``every_s`` from SLOW_IP; the server's answer and
    the seconds from ``progress(uploading)`` to it."""
    async with connect(url, local_addr=(SLOW_IP, 0)) as ws:
        await ws.recv()  # hello
        await ws.send(_start(declared))
        first = p.decode(await ws.recv())
        if not isinstance(first, p.Progress):
            return first, 0.0
        began = time.monotonic()

        async def trickle() -> None:
            while True:
                await ws.send(b"\x00")
                await asyncio.sleep(every_s)

        task = asyncio.create_task(trickle())
        try:
            answer = p.decode(await asyncio.wait_for(ws.recv(), 20))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return answer, time.monotonic() - began


def test_slow_uploads_time_out_one_client_gets_its_share_and_others_still_get_served(tmp_path, models_dir, media):
    settings = make_settings(tmp_path, models_dir, max_jobs_per_client=2, min_upload_kib_s=1.0, upload_grace_s=2.0)
    with serving(settings) as server:

        async def scenario():
            slow = [asyncio.create_task(_slowloris(server.ws, 100 * 1024 * 1024 // 1000)) for _ in range(2)]
            await asyncio.sleep(0.5)  # both hold a slot now
            depth = (await asyncio.to_thread(get_json, f"{server.http}/healthz"))[1]["queue"]
            extra, _ = await _slowloris(server.ws, 1000)  # a third from the same address
            good = [m async for m in analyze_file(media["short"], server.ws)]  # another address, meanwhile
            return depth, extra, good, await asyncio.gather(*slow)

        depth, extra, good, slow = asyncio.run(scenario())
        assert depth["uploading"] == 2
        assert isinstance(extra, p.Error) and extra.code == "busy"
        assert f"this client ({SLOW_IP}) already has 2 jobs" in extra.message
        assert isinstance(good[-1], p.Done), good[-1]
        for answer, after_s in slow:
            assert isinstance(answer, p.Error) and answer.code == "timeout", answer
            assert "too slow" in answer.message and "1 KiB/s" in answer.message
            assert 2.0 <= after_s < 6.0  # the grace, then a byte per ~1 ms of rate: cut right after the grace
        assert get_json(f"{server.http}/healthz")[1]["queue"]["uploading"] == 0  # the slots are free again
        wait_for(lambda: not any((settings.data_dir / "uploads").iterdir()), timeout_s=5)  # and their files gone
        assert isinstance(analyze_sync(server.ws, media["image"])[-1], p.Done)


def test_an_upload_at_the_minimum_rate_completes(tmp_path, models_dir, media):
    data = media["image"].read_bytes()
    settings = make_settings(tmp_path, models_dir, min_upload_kib_s=len(data) / 1024 / 1.5, upload_grace_s=0.5)

    async def paced(url: str) -> p.Message:
        """The file in 10 pieces over ~1.4 s: on pace for the 2 s the server allows (0.5 s + 1.5 s)."""
        async with connect(url) as ws:
            await ws.recv()
            await ws.send(_start(len(data)))
            await ws.recv()
            step = -(-len(data) // 10)
            for i in range(0, len(data), step):
                await ws.send(data[i : i + step])
                await asyncio.sleep(0.14)
            async for text in ws:
                message = p.decode(text)
                if isinstance(message, (p.Done, p.Error)):
                    return message
        raise AssertionError("no final message")

    with serving(settings) as server:
        assert isinstance(asyncio.run(paced(server.ws)), p.Done)


async def _answer(url: str, start_text: str) -> list[p.Message]:
    async with connect(url) as ws:
        await ws.send(start_text)
        return [p.decode(m) async for m in ws]


@pytest.mark.parametrize(
    "options, words",
    [
        ({"sample_mode": "all", "max_frames": 1_000_000_000}, ["max_frames 1000000000", "limit of 300"]),
        ({"max_frames": 301}, ["max_frames 301", "limit of 300"]),
        ({"sample_mode": "count", "count": 1_000_000_000}, ["count 1000000000", "limit of 300"]),
    ],
)
def test_a_request_cannot_lift_the_frame_cap(server, options, words):
    assert server.settings.max_frames == 300
    messages = asyncio.run(_answer(server.ws, _start(1000, **options)))
    assert [m.TYPE for m in messages] == ["hello", "error"]  # refused before any byte is uploaded
    assert messages[-1].code == "bad_config" and all(w in messages[-1].message for w in words), messages[-1]


def test_a_float_where_an_integer_is_expected_is_a_protocol_error(server):
    text = json.dumps({"type": "start", "v": 2, "name": "x.mp4", "size_bytes": 10, "options": {"max_frames": 1e9}})
    error = asyncio.run(_answer(server.ws, text))[-1]
    assert error.code == "bad_message" and "max_frames" in error.message and "integer" in error.message


def test_an_omitted_cap_is_the_servers_and_a_lower_one_is_honoured(server, media):
    accepted = next(m for m in analyze_sync(server.ws, media["long"]) if isinstance(m, p.Accepted))
    assert accepted.policy.max_frames == 300
    messages = analyze_sync(server.ws, media["long"], options=p.Options(sample_mode="all", max_frames=3))
    accepted = next(m for m in messages if isinstance(m, p.Accepted))
    assert accepted.policy.max_frames == 3 and accepted.planned_frames == 3
    assert len([m for m in messages if isinstance(m, p.FrameResult)]) == 3 and isinstance(messages[-1], p.Done)
