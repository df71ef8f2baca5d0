"""``kill -9`` of the real server (its own process) in the middle of a job, then a restart on the same data
directory: every report that got ``done`` is byte-identical over HTTP, ``PRAGMA integrity_check`` is ok,
the interrupted job is marked ``interrupted`` (store, HTTP and ``attach``) with the frames it had, and no
upload is left behind."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from stream.store import DB_NAME
from tests.media import encode_video, face_scene
from tests.servers import free_port, server_process
from tests.stream.conftest import get_json, http
from ui.client import analyze_file


@contextmanager
def _server(data_dir: Path, models_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        "DFF_DATA_DIR": str(data_dir),
        "DFF_MODELS_DIR": str(models_dir),
        "DFF_HOST": "127.0.0.1",
        "DFF_PORT": str(port),
        "DFF_DEVICE": "cpu",
        "DFF_EVERY_S": "0.5",
        "DFF_CLASSIFY_BATCH": "4",
        "DFF_MAX_PENDING_FRAMES": "1",
    }
    with server_process(env, port) as proc:
        yield proc, port


def _done(port: int, path: Path) -> str:
    async def go() -> p.Message:
        return [m async for m in analyze_file(path, f"ws://127.0.0.1:{port}/v1/analyze")][-1]

    last = asyncio.run(go())
    assert isinstance(last, p.Done), last
    return last.job_id


def _report(port: int, job_id: str) -> bytes:
    status, _, body = http("GET", f"http://127.0.0.1:{port}/v1/reports/{job_id}")
    assert status == 200, body
    return body


async def _until_frames(port: int, path: Path, n: int) -> tuple[ClientConnection, str, int]:
    """Start a dense job and return (the open connection, job id, frames seen) once ``n`` frames arrived;
    the connection stays open: the kill must find the job running, not cancelled by a departing client."""
    data = path.read_bytes()
    ws = await connect(f"ws://127.0.0.1:{port}/v1/analyze", max_size=None)
    await ws.recv()  # hello
    await ws.send(p.encode(p.Start(name=path.name, size_bytes=len(data), options=p.Options(sample_mode="all"))))
    job_id = json.loads(await ws.recv())["job_id"]
    await ws.send(data)
    frames = 0
    while frames < n:
        message = p.decode(await asyncio.wait_for(ws.recv(), 60))
        assert not isinstance(message, (p.Done, p.Error)), message
        frames += isinstance(message, p.FrameResult)
    return ws, job_id, frames


def _attach(port: int, job_id: str) -> p.Message:
    async def go() -> p.Message:
        async with connect(f"ws://127.0.0.1:{port}/v1/analyze") as ws:
            await ws.recv()
            await ws.send(p.encode(p.Attach(job_id=job_id)))
            return p.decode(await asyncio.wait_for(ws.recv(), 30))

    return asyncio.run(go())


def test_kill_9_mid_job_then_restart(tmp_path):
    models = tmp_path / "models"
    save_checkpoint(build_model(), models / "random.pth")
    data = tmp_path / "data"
    short = encode_video(tmp_path / "short.mp4", [face_scene(320, 240, [(40 + 3 * t, 50, 120)]) for t in range(20)])
    two = encode_video(
        tmp_path / "two.mp4", [face_scene(320, 240, [(10 + 2 * t, 60, 110), (190, 50, 110)]) for t in range(20)]
    )
    # 30 s at 10 fps, every frame sampled: far longer than the few frames we wait for before the kill
    long = encode_video(tmp_path / "long.mp4", [face_scene(320, 240, [(40 + t % 150, 50, 120)]) for t in range(300)])

    with _server(data, models) as (proc, port):
        done = [_done(port, clip) for clip in (short, two, short)]
        reports = {job_id: _report(port, job_id) for job_id in done}
        loop = asyncio.new_event_loop()
        try:
            ws, job_id, seen = loop.run_until_complete(_until_frames(port, long, 3))
            proc.kill()  # SIGKILL: no shutdown code runs
            assert proc.wait(10) == -signal.SIGKILL
            ws.transport.abort()
        finally:
            loop.close()
    uploads = data / "uploads"
    assert (uploads / job_id).exists()  # the dead process left its upload: the restart must remove it

    with _server(data, models) as (proc, port):
        for earlier, body in reports.items():
            assert _report(port, earlier) == body  # byte-identical
        status, frames = get_json(f"http://127.0.0.1:{port}/v1/reports/{job_id}/frames")
        assert status == 200 and frames["status"] == "interrupted" and len(frames["frames"]) >= seen
        status, body = get_json(f"http://127.0.0.1:{port}/v1/reports/{job_id}")
        assert status == 409 and body["error"]["code"] == "not_done"
        attached = _attach(port, job_id)
        assert isinstance(attached, p.Error) and attached.code == "interrupted" and attached.job_id == job_id
        listed = {r["id"]: r["status"] for r in get_json(f"http://127.0.0.1:{port}/v1/reports?limit=100")[1]["reports"]}
        assert listed == {**dict.fromkeys(done, "done"), job_id: "interrupted"}
        assert not uploads.exists() or not any(uploads.iterdir())
        db = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone() == ("interrupted",)
        finally:
            db.close()
        assert isinstance(_done(port, short), str)  # and it serves again
