"""The real server on a real PostgreSQL (``DFF_DATABASE_URL``; tests/pgserver.py starts it): a file's report
is committed to PostgreSQL before ``done`` and HTTP serves exactly what ``done`` carried; then the server
dies (``kill -9``, its own process) in the middle of a job, and a restart on the same database still lists
the report, byte-identical, and marks the job it left running ``interrupted``, with the frames it had."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from stream import protocol as p
from tests.media import encode_video, face_scene
from tests.pgserver import database_url
from tests.servers import free_port, server_process, serving
from tests.stream.conftest import analyze_sync, get_json, http, make_settings

TIMEOUT_S = 60.0


async def _until_frames(ws_url: str, path: Path, n: int) -> tuple[ClientConnection, str, int]:
    """Start a dense job; (the open connection, job id, frames seen) once ``n`` frames arrived. The connection
    stays open: the kill must find the job running, not cancelled by a client that left."""
    data = path.read_bytes()
    ws = await connect(ws_url, max_size=None, open_timeout=TIMEOUT_S)
    await asyncio.wait_for(ws.recv(), TIMEOUT_S)  # hello
    await ws.send(p.encode(p.Start(name=path.name, size_bytes=len(data), options=p.Options(sample_mode="all"))))
    job_id = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))["job_id"]
    await ws.send(data)
    frames = 0
    while frames < n:
        message = p.decode(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        assert not isinstance(message, (p.Done, p.Error)), message
        frames += isinstance(message, p.FrameResult)
    return ws, job_id, frames


def _attach(ws_url: str, job_id: str) -> p.Message:
    async def go() -> p.Message:
        async with connect(ws_url, open_timeout=TIMEOUT_S) as ws:
            await asyncio.wait_for(ws.recv(), TIMEOUT_S)  # hello
            await ws.send(p.encode(p.Attach(job_id=job_id)))
            return p.decode(await asyncio.wait_for(ws.recv(), TIMEOUT_S))

    return asyncio.run(go())


def test_reports_live_in_postgresql_across_a_crash(request, tmp_path, models_dir, media):
    url = database_url(request)  # skips (fails in CI) without PostgreSQL or psycopg: import it after
    import psycopg

    # 20 s at 10 fps, every frame sampled: far longer than the few frames waited for before the kill
    long = encode_video(tmp_path / "long.mp4", [face_scene(320, 240, [(40 + t % 150, 50, 120)]) for t in range(200)])
    port = free_port()
    env = {
        "DFF_DATABASE_URL": url,
        "DFF_DATA_DIR": str(tmp_path / "data"),
        "DFF_MODELS_DIR": str(models_dir),
        "DFF_HOST": "127.0.0.1",
        "DFF_PORT": str(port),
        "DFF_DEVICE": "cpu",
        "DFF_EVERY_S": "0.5",
        "DFF_CLASSIFY_BATCH": "4",
        "DFF_MAX_PENDING_FRAMES": "1",
    }
    ws_url = f"ws://127.0.0.1:{port}/v1/analyze"
    with server_process(env, port) as proc:
        done = analyze_sync(ws_url, media["short"])[-1]
        assert isinstance(done, p.Done), done
        status, _, body = http("GET", f"http://127.0.0.1:{port}/v1/reports/{done.job_id}")
        assert status == 200 and json.loads(body) == done.report.to_json()
        loop = asyncio.new_event_loop()
        try:
            ws, running_id, seen = loop.run_until_complete(_until_frames(ws_url, long, 2))
            proc.kill()  # SIGKILL: no shutdown code runs; the job stays `running` in the database
            assert proc.wait(10) == -signal.SIGKILL
            ws.transport.abort()
        finally:
            loop.close()

    # the reports are in PostgreSQL, not in a SQLite file under the data directory
    assert not (tmp_path / "data" / "dff.sqlite3").exists()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
        rows = dict(db.execute("SELECT id, status FROM jobs").fetchall())
        (stored,) = db.execute("SELECT report_json FROM jobs WHERE id=%s", (done.job_id,)).fetchone()
    assert rows == {done.job_id: "done", running_id: "running"}
    assert json.loads(stored) == done.report.to_json()

    # a restart on the same database (the postgres:// spelling of the URL is accepted too)
    settings = make_settings(tmp_path, models_dir, database_url=url.replace("postgresql://", "postgres://", 1))
    with serving(settings) as served:
        status, _, again = http("GET", f"{served.http}/v1/reports/{done.job_id}")
        assert status == 200 and again == body  # byte-identical
        listed = {r["id"]: r["status"] for r in get_json(f"{served.http}/v1/reports?limit=100")[1]["reports"]}
        assert listed == {done.job_id: "done", running_id: "interrupted"}
        status, frames = get_json(f"{served.http}/v1/reports/{running_id}/frames")
        assert status == 200 and frames["status"] == "interrupted" and len(frames["frames"]) >= seen
        attached = _attach(served.ws, running_id)
        assert isinstance(attached, p.Error) and attached.code == "interrupted" and attached.job_id == running_id
        # and it serves again, into the same database
        second = analyze_sync(served.ws, media["short"])[-1]
        assert isinstance(second, p.Done) and get_json(f"{served.http}/v1/reports/{second.job_id}")[1] == (
            second.report.to_json()
        )
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
        assert db.execute("SELECT count(*) FROM jobs WHERE status='done'").fetchone() == (2,)
