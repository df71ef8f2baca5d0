"""Bad input and faults on the shared server: each gets its own error code, the connection is closed,
no traceback reaches the client, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

import stream.programs
from stream import protocol as p
from tests.stream.conftest import analyze_sync, get_json, wait_for

JUNK_ID = "Zz" * 11


def _start(size: int, name: str = "x.mp4", **options) -> str:
    return p.encode(p.Start(name=name, size_bytes=size, options=p.Options(**options)))


async def _converse(url: str, sends: list[str | bytes]) -> list[p.Message]:
    """Send everything, then read until the server closes; all server messages, decoded."""
    async with connect(url, max_size=None) as ws:
        for item in sends:
            await ws.send(item)
        return [p.decode(m, p.SERVER_MESSAGES) async for m in ws]


CASES = [
    ("garbage json", ["{this is not json"], "bad_json"),
    ("binary before start", [b"\x00\x01\x02"], "unexpected_binary"),
    ("server message from a client", ['{"type":"hello","v":2}'], "unknown_type"),
    ("unknown type", ['{"type":"upload","v":2}'], "unknown_type"),
    ("other version", ['{"type":"start","v":9,"name":"x","size_bytes":1}'], "bad_version"),
    ("bad option", ['{"type":"start","v":2,"name":"x","size_bytes":1,"options":{"every_s":-2}}'], "bad_message"),
    ("declared size over the cap", [_start(10**15)], "too_large"),
    ("attach to an unknown job", [p.encode(p.Attach(job_id=JUNK_ID))], "unknown_job"),
    ("text during the upload", [_start(10), b"12345", "more?"], "unexpected_message"),
    ("more bytes than declared", [_start(4), b"123", b"45"], "size_mismatch"),
]


@pytest.mark.parametrize("sends, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_protocol_faults_get_specific_codes(server, sends, code):
    messages = asyncio.run(_converse(server.ws, sends))
    assert isinstance(messages[0], p.Hello)
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == code, messages
    assert "Traceback" not in error.message and 'File "' not in error.message


@pytest.mark.parametrize("name, code", [("text", "unsupported_media"), ("empty", "empty_file")])
def test_files_that_are_not_media(server, media, name, code):
    messages = analyze_sync(server.ws, media[name])
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == code and error.job_id
    assert media[name].name in error.message and str(media[name].parent) not in error.message
    status, frames = get_json(f"{server.http}/v1/reports/{error.job_id}/frames")
    assert status == 200 and frames["status"] == "failed" and frames["frames"] == []
    assert not (server.settings.data_dir / "uploads" / error.job_id).exists()


def test_unexpected_exceptions_are_logged_not_sent(server, media, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /srv/private/path")
        yield  # pragma: no cover

    monkeypatch.setattr(stream.programs, "analyze", broken)
    error = analyze_sync(server.ws, media["short"])[-1]
    assert isinstance(error, p.Error) and error.code == "internal"
    assert "secret" not in error.message and error.job_id in error.message
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)  # in the log


def _depth(server) -> dict:
    return get_json(f"{server.http}/healthz")[1]["queue"]


def test_client_vanishing_mid_upload_frees_its_slot_and_file(server):
    async def vanish():
        ws = await connect(server.ws)
        await ws.recv()  # hello
        await ws.send(_start(100_000))
        job_id = json.loads(await ws.recv())["job_id"]  # progress(uploading)
        await ws.send(b"\x00" * 1000)
        await asyncio.sleep(0.2)
        assert (server.settings.data_dir / "uploads" / job_id).exists()
        ws.transport.abort()  # no close frame: the network just went away
        return job_id

    job_id = asyncio.run(vanish())
    wait_for(lambda: _depth(server)["uploading"] == 0, timeout_s=5)
    assert not (server.settings.data_dir / "uploads" / job_id).exists()


def test_client_vanishing_mid_analysis_cancels_its_job(server, media):
    async def vanish():
        data = media["long"].read_bytes()
        ws = await connect(server.ws, max_size=None)
        await ws.recv()
        await ws.send(_start(len(data), every_s=0.1))
        await ws.recv()
        await ws.send(data)
        while p.decode(await ws.recv()).TYPE != "frame":
            pass
        ws.transport.abort()

    asyncio.run(vanish())
    wait_for(lambda: _depth(server)["running"] == 0, timeout_s=5)


def test_server_still_serves_after_all_of_that(server, media):
    assert get_json(f"{server.http}/healthz")[1]["status"] == "ok"
    assert isinstance(analyze_sync(server.ws, media["image"])[-1], p.Done)
