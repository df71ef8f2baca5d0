"""Servers with their own settings: token auth and origins, a full queue, running with no model and
installing models at run time, graceful shutdown, restarts on the same data directory, `dff serve`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pipeline.models import build_model, file_sha256, save_checkpoint
from stream import protocol as p
from stream.auth import WS_SUBPROTOCOL, bearer_subprotocol
from stream.store import Store
from tests.servers import bound_port
from tests.stream.conftest import analyze_sync, get_json, http, make_settings, serving, stable
from ui.client import ClientError, analyze_file, attach


async def _until_first_frame(messages) -> list[p.Message]:
    seen = []
    async for message in messages:
        seen.append(message)
        if isinstance(message, p.FrameResult):
            return seen
    raise AssertionError(f"no frame: {seen}")


def test_token_auth_on_and_origin_check(tmp_path, models_dir, media):
    with serving(make_settings(tmp_path, models_dir, token="s3cret")) as server:
        auth = {"Authorization": "Bearer s3cret"}
        # HTTP: everything but /healthz needs the token
        assert get_json(f"{server.http}/healthz")[0] == 200
        status, body = get_json(f"{server.http}/v1/reports")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        assert get_json(f"{server.http}/v1/reports", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert get_json(f"{server.http}/v1/reports", headers=auth)[0] == 200
        assert get_json(f"{server.http}/v1/reports/{'x' * 22}")[0] == 401  # no existence oracle without a token
        assert http("PUT", f"{server.http}/v1/models/m.pth", body=b"x")[0] == 401
        # websocket: refused at the handshake without it
        with pytest.raises(ClientError) as info:
            analyze_sync(server.ws, media["image"])
        assert info.value.code == "unauthorized"
        assert isinstance(analyze_sync(server.ws, media["image"], token="s3cret")[-1], p.Done)

        async def handshake(origin: str) -> int:
            try:
                async with connect(server.ws, origin=origin, additional_headers=auth) as ws:
                    await ws.recv()
                    return 101
            except InvalidStatus as err:
                return err.response.status_code

        assert asyncio.run(handshake("http://evil.example")) == 403
        assert asyncio.run(handshake(f"http://127.0.0.1:{server.port}")) == 101

        async def browser_handshake(token: str) -> tuple[int, str | None]:
            """What a page's ``new WebSocket(url, ["dff.v1", "dff.bearer.…"])`` sends: no header, its origin."""
            offered = [WS_SUBPROTOCOL, bearer_subprotocol(token)]
            try:
                async with connect(server.ws, origin=f"http://127.0.0.1:{server.port}", subprotocols=offered) as ws:
                    await ws.recv()
                    return 101, ws.subprotocol
            except InvalidStatus as err:
                return err.response.status_code, None

        assert asyncio.run(browser_handshake("s3cret")) == (101, WS_SUBPROTOCOL)  # the token is never echoed
        assert asyncio.run(browser_handshake("wrong")) == (401, None)


def test_full_queue_says_busy_and_the_queued_job_runs_after(tmp_path, models_dir, media):
    with serving(make_settings(tmp_path, models_dir, max_jobs=1, max_queue=1)) as server:

        async def scenario():
            first = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.25))
            await _until_first_frame(first)
            second = asyncio.create_task(_all(analyze_file(media["short"], server.ws)))
            await asyncio.sleep(0.3)
            third = [m async for m in analyze_file(media["short"], server.ws)]
            rest = [m async for m in first]
            return await second, third, rest

        async def _all(messages):
            return [m async for m in messages]

        second, third, rest = asyncio.run(scenario())
        assert isinstance(third[-1], p.Error) and third[-1].code == "busy"
        assert [m.TYPE for m in third] == ["hello", "error"]  # refused before any byte was sent
        assert isinstance(rest[-1], p.Done)
        queued = [m for m in second if isinstance(m, p.Progress) and m.stage == "queued"]
        assert queued[0].queue_position == 0 and isinstance(second[-1], p.Done)


def test_no_model_then_install_and_switch_models_at_run_time(tmp_path, models_dir, media):
    empty = tmp_path / "models"
    with serving(make_settings(tmp_path, empty)) as server:
        health = get_json(f"{server.http}/healthz")[1]
        assert health["status"] == "no_model" and health["model"] is None
        messages = analyze_sync(server.ws, media["image"])
        assert messages[0].status == "no_model" and messages[0].model is None
        assert [m.TYPE for m in messages] == ["hello", "error"] and messages[-1].code == "no_model"

        put = lambda name, body: http("PUT", f"{server.http}/v1/models/{name}", body=body)  # noqa: E731
        status, _, body = put("junk.pth", b"not a checkpoint")
        assert status == 422 and json.loads(body)["error"]["code"] == "bad_checkpoint"
        assert put("../evil.pth", b"x")[0] in (400, 404)
        assert put("no-suffix", b"x")[0] == 400
        first = (models_dir / "random.pth").read_bytes()
        status, _, body = put("first.pth", first)
        assert status == 201 and json.loads(body)["sha256"] == file_sha256(models_dir / "random.pth")
        assert put("first.pth", first)[0] == 409
        assert http("POST", f"{server.http}/v1/models/missing.pth/activate")[0] == 404
        assert sorted(f.name for f in empty.iterdir() if f.is_file()) == ["first.pth"]  # nothing half-written
        assert not any((empty / ".incoming").iterdir())
        status, _, body = http("POST", f"{server.http}/v1/models/first.pth/activate")
        assert status == 200 and json.loads(body)["active"]["name"] == "first.pth"
        assert get_json(f"{server.http}/healthz")[1]["status"] == "ok"

        second_path = save_checkpoint(build_model(), tmp_path / "other" / "second.pth")

        async def switch_mid_job():
            running = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.25))
            await _until_first_frame(running)
            assert (await asyncio.to_thread(put, "second.pth", second_path.read_bytes()))[0] == 201
            status, _, _ = await asyncio.to_thread(http, "POST", f"{server.http}/v1/models/second.pth/activate")
            assert status == 200
            return [m async for m in running]

        rest = asyncio.run(switch_mid_job())
        assert rest[-1].report.model.name == "first.pth"  # finished on the model it started with
        after = analyze_sync(server.ws, media["image"])[-1]
        assert after.report.model.name == "second.pth"
        assert after.report.model.sha256 == file_sha256(second_path)
        models = get_json(f"{server.http}/v1/models")[1]
        assert {m["name"]: m["active"] for m in models["models"]} == {"first.pth": False, "second.pth": True}
        listed = {m["name"]: m for m in models["models"]}
        assert listed["second.pth"]["sha256"] == file_sha256(second_path)
        assert {m["card_status"] for m in listed.values()} <= {"none", "ok"}
    # the choice survives a restart (not just "newest file wins")
    os.utime(empty / "first.pth")
    with serving(make_settings(tmp_path, empty)) as server:
        assert get_json(f"{server.http}/healthz")[1]["model"]["name"] == "second.pth"


def test_graceful_shutdown_finishes_running_jobs_and_reports_survive_restart(tmp_path, models_dir, media):
    settings = make_settings(tmp_path, models_dir, shutdown_grace_s=30)
    with serving(settings) as server:
        quick = analyze_sync(server.ws, media["short"])[-1]

        async def stop_mid_job():
            running = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.25))
            await _until_first_frame(running)
            server.server.should_exit = True  # what SIGTERM does
            await asyncio.sleep(0.3)
            with pytest.raises(ClientError):  # not listening any more
                await anext(analyze_file(media["short"], server.ws))
            return [m async for m in running]

        rest = asyncio.run(stop_mid_job())
        server.thread.join(30)
    assert isinstance(rest[-1], p.Done), rest[-1]
    with serving(settings) as server:  # same data directory, new process state
        for done in (quick, rest[-1]):
            status, report = get_json(f"{server.http}/v1/reports/{done.job_id}")
            assert status == 200 and report == done.report.to_json()
        replay = asyncio.run(_collect(attach(quick.job_id, server.ws)))
        assert [m.TYPE for m in replay] == ["hello", "done"]
        assert stable(replay[-1].report.to_json()) == stable(quick.report.to_json())
        listed = get_json(f"{server.http}/v1/reports")[1]["reports"]
        assert [r["id"] for r in listed] == [rest[-1].job_id, quick.job_id]


async def _collect(messages):
    return [m async for m in messages]


def test_shutdown_past_the_grace_period_stores_the_job_as_interrupted(tmp_path, models_dir, media):
    settings = make_settings(tmp_path, models_dir, shutdown_grace_s=0)
    with serving(settings) as server:

        async def stop_mid_job():
            running = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.1))
            seen = await _until_first_frame(running)
            server.server.should_exit = True
            return seen + [m async for m in running]

        messages = asyncio.run(stop_mid_job())
        server.thread.join(30)
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == "interrupted", error
    with Store(settings.data_dir) as store:
        row = store.job(error.job_id)
        assert row.status == "interrupted" and 1 <= row.n_frames < 40
        assert len(store.frames(error.job_id)) == row.n_frames
    assert not (settings.data_dir / "uploads" / error.job_id).exists()


def test_dff_serve_runs_and_stops_on_sigterm(tmp_path, models_dir):
    command = [
        sys.executable,
        "-m",
        "ui.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--checkpoint",
        str(models_dir / "random.pth"),
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port, lines = bound_port(proc)
        status, health = get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and health["status"] == "ok" and health["model"]["name"] == "random.pth"
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log and "Traceback" not in log
