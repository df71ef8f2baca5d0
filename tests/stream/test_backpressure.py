"""A client that reads nothing for 30 s while a long clip is analysed with overlays (the server in its own
process, so its RSS is its own): the server's RSS stays flat, another client's job streams undelayed, and
the slow client, once it reads, still gets every frame's scores, in order, and the ``done``
(stream/watchers.py: coalesced progress, then overlays, then frames read back from the store)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from tests.media import encode_video, face_scene
from tests.servers import free_port, server_process
from tests.stream.conftest import get_json

STALL_S = 30.0
# the service as `dff serve` composes it, on a listening socket whose accepted connections get a 32 KiB
# kernel send buffer (Linux copies it to them): loopback would otherwise let the kernel hold 4 MiB per
# connection, far more than a real network holds in flight, and this test is about the server's own queues
SERVE = (
    "import socket, sys; from pipeline.config import Settings; from stream.server import create_app, make_server; "
    "s = Settings.from_env(); sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768); "
    "sock.bind((s.host, s.port)); make_server(create_app(s), s, log_level='warning').run(sockets=[sock])"
)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextmanager
def _server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    models = tmp_path / "models"
    models.mkdir()
    save_checkpoint(build_model(), models / "random.pth")
    port = free_port()
    env = {
        "DFF_DATA_DIR": str(tmp_path / "data"),
        "DFF_MODELS_DIR": str(models),
        "DFF_HOST": "127.0.0.1",
        "DFF_PORT": str(port),
        "DFF_DEVICE": "cpu",
        "DFF_CLASSIFY_BATCH": "4",
        "DFF_MAX_PENDING_FRAMES": "1",
        "DFF_MAX_FRAMES": "5000",
        "DFF_WATCH_QUEUE_KIB": "64",  # a small budget, so 30 s of frames overflow it on a slow machine too
    }
    with server_process(env, port, SERVE) as proc:
        yield proc, port


def _small_socket(port: int) -> socket.socket:
    """A client socket with a small receive buffer, so the server, not the kernel, holds what is unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _start(ws, clip: Path, **options) -> str:
    data = clip.read_bytes()
    await ws.recv()  # hello
    await ws.send(p.encode(p.Start(name=clip.name, size_bytes=len(data), options=p.Options(**options))))
    job_id = p.decode(await ws.recv()).job_id  # progress(uploading)
    await ws.send(data)
    return job_id


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bp_media")
    frames = [face_scene(128, 96, [(20 + (t % 30), 10, 64)]) for t in range(50)]
    return {
        "long": encode_video(d / "long.mp4", frames * 4, fps=10),  # 20 s: 200 frames at every 0.1 s
        "short": encode_video(d / "short.mp4", frames[:40], fps=10),  # 4 s
    }


def test_a_client_that_reads_nothing_for_30_s(tmp_path, clips):
    with _server(tmp_path) as (proc, port):
        url = f"ws://127.0.0.1:{port}/v1/analyze"

        async def scenario():
            slow = await connect(url, sock=_small_socket(port), max_size=None, max_queue=1, proxy=None)
            slow_id = await _start(slow, clips["long"], every_s=0.1, overlays=True)
            while not isinstance(message := p.decode(await slow.recv()), p.Accepted):
                pass
            planned = message.planned_frames
            began = time.monotonic()
            rss = [(0.0, _rss_mib(proc.pid))]
            # meanwhile another client analyses a clip, reading as it comes
            other: list[tuple[float, p.Message]] = []

            async def fast() -> None:
                async with connect(url, max_size=None, proxy=None) as ws:
                    await _start(ws, clips["short"], every_s=0.1, overlays=True)
                    async for text in ws:
                        other.append((time.monotonic() - began, p.decode(text)))

            fast_task = asyncio.create_task(fast())
            while time.monotonic() - began < STALL_S:
                await asyncio.sleep(0.5)
                rss.append((time.monotonic() - began, _rss_mib(proc.pid)))
            await fast_task
            got: list[p.Message] = [message]
            async for text in slow:
                got.append(p.decode(text))
            await slow.close()
            return slow_id, planned, rss, other, got

        slow_id, planned, rss, other, got = asyncio.run(scenario())
        stored = get_json(f"http://127.0.0.1:{port}/v1/reports/{slow_id}/frames")[1]["frames"]

    frames = [m for m in got if isinstance(m, p.FrameResult)]
    assert isinstance(got[-1], p.Done), got[-1]
    # every frame's scores, in order, exactly as stored; overlays only while the queue had room
    assert [f.seq for f in frames] == list(range(len(stored))) and len(stored) == planned
    assert [(f.index, f.score, [x.fake_prob for x in f.faces]) for f in frames] == [
        (s["index"], s["score"], [x["fake_prob"] for x in s["faces"]]) for s in stored
    ]
    with_overlays = sum(1 for f in frames if f.faces and f.faces[0].overlay_jpeg_b64)
    assert 0 < with_overlays < len(frames)
    # the other client's job was not held up: done well within the stall, frames arriving throughout
    other_frames = [t for t, m in other if isinstance(m, p.FrameResult)]
    assert isinstance(other[-1][1], p.Done) and other[-1][0] < STALL_S
    gaps = [b - a for a, b in zip(other_frames, other_frames[1:], strict=False)]
    # the server's memory: flat while the slow client read nothing (what the old log + unbounded queue held
    # grows by every frame message, ~9 KB each with its overlay here)
    late = [m for t, m in rss if t >= 5.0]
    growth = max(late) - min(late)
    print(
        f"\nslow job: {len(frames)} frames ({with_overlays} with overlays); RSS MiB at accepted {rss[0][1]:.0f}, "
        f"5-30 s min {min(late):.0f} max {max(late):.0f} (growth {growth:.1f}); other job done at "
        f"{other[-1][0]:.1f} s, max gap between its frames {max(gaps):.2f} s"
    )
    assert growth < 20, rss
    assert max(gaps) < 5.0
