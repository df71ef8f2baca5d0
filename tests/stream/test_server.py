"""The service end to end on the shared server: message sequence, streaming, HTTP routes, cancellation,
attaching, concurrency and the `dff client` command."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

from PIL import Image
from websockets.asyncio.client import connect

from pipeline.models import file_sha256
from pipeline.report import CSV_COLUMNS, report_from_dict
from stream import protocol as p
from tests.stream.conftest import analyze_sync, collect, get_json, http, stable, wait_for
from ui.cli import main
from ui.client import analyze_file, attach


def _types(messages) -> list[str]:
    return [m.TYPE + (f"({m.stage})" if isinstance(m, p.Progress) else "") for m in messages]


def test_exact_message_sequence_and_report_over_http(server, media, models_dir):
    messages = analyze_sync(server.ws, media["short"], options=p.Options(overlays=True))
    frames = [m for m in messages if isinstance(m, p.FrameResult)]
    assert _types(messages) == [
        "hello",
        "progress(uploading)",
        "progress(queued)",
        "accepted",
        "progress(analyzing)",
        *["frame"] * 4,
        "done",
    ]
    hello, uploading, queued, accepted, analyzing, *_, done = messages
    assert hello.status == "ready" and hello.model.name == "random.pth"
    job_id = uploading.job_id
    assert {m.job_id for m in messages[1:]} == {job_id}
    assert queued.queue_position == 0
    assert accepted.media.name == "short.mp4" and accepted.media.size_bytes == media["short"].stat().st_size
    assert accepted.planned_frames == analyzing.frames_planned == 4
    assert accepted.model.sha256 == file_sha256(models_dir / "random.pth")
    assert [f.seq for f in frames] == [0, 1, 2, 3] and [f.index for f in frames] == [0, 5, 10, 15]
    for frame in frames:
        (face,) = frame.faces
        assert face.track_id == 0 and frame.score == face.fake_prob
        overlay = Image.open(io.BytesIO(face.overlay_jpeg()))
        assert overlay.format == "JPEG" and overlay.size == (160, 160)
    # the report was committed before `done`, and HTTP serves exactly what `done` carried
    status, stored = get_json(f"{server.http}/v1/reports/{job_id}")
    assert status == 200 and stored == done.report.to_json()
    report = report_from_dict(done.report.to_json())
    assert report.model.name == "random.pth" and report.model.sha256 == accepted.model.sha256
    assert len(report.frames) == 4
    assert not list((server.settings.data_dir / "uploads").glob("*/*"))  # upload deleted (privacy)


def test_frames_arrive_while_the_file_is_still_being_analysed(server, media):
    timed = asyncio.run(collect(server.ws, media["long"], options=p.Options(every_s=0.25)))
    queued_at = next(t for t, m in timed if isinstance(m, p.Progress) and m.stage == "queued")
    frame_times = [t for t, m in timed if isinstance(m, p.FrameResult)]
    done_at = timed[-1][0]
    assert isinstance(timed[-1][1], p.Done) and len(frame_times) == 16
    # the first frame comes early in the analysis, not in a burst at the end
    assert frame_times[0] - queued_at < 0.5 * (done_at - queued_at)
    assert frame_times[0] < frame_times[len(frame_times) // 2] < done_at


def test_http_report_routes(server, media):
    ids = []
    for name in ("short", "image"):
        messages = analyze_sync(server.ws, media[name])
        assert isinstance(messages[-1], p.Done), messages[-1]
        ids.append(messages[-1].job_id)
    # newest first, paged with a cursor
    status, page = get_json(f"{server.http}/v1/reports?limit=1")
    assert status == 200 and [r["id"] for r in page["reports"]] == [ids[1]] and page["next"]
    status, page2 = get_json(f"{server.http}/v1/reports?limit=1&before={page['next']}")
    assert [r["id"] for r in page2["reports"]] == [ids[0]]
    row = page2["reports"][0]
    assert row["status"] == "done" and row["name"] == "short.mp4" and row["n_frames"] == 4
    assert row["model"]["name"] == "random.pth" and row["label"] in ("real", "fake", "inconclusive")
    # JSON, CSV and per-frame scores
    status, report = get_json(f"{server.http}/v1/reports/{ids[0]}")
    assert status == 200 and report["schema"] == "dff.report/1"
    status, headers, body = http("GET", f"{server.http}/v1/reports/{ids[0]}.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 4 and rows[0]["file"] == "short.mp4"
    status, frames = get_json(f"{server.http}/v1/reports/{ids[0]}/frames")
    assert [f["index"] for f in frames["frames"]] == [0, 5, 10, 15] and frames["status"] == "done"
    assert frames["frames"][0]["faces"][0]["fake_prob"] == report["frames"][0]["faces"][0]["fake_prob"]
    # unknown ids, bad cursors, delete
    unknown = "x" * 22
    for suffix in (unknown, f"{unknown}.csv", f"{unknown}/frames", "not%20an%20id"):
        status, body = get_json(f"{server.http}/v1/reports/{suffix}")
        assert status == 404 and body["error"]["code"] == "unknown_job", suffix
    assert get_json(f"{server.http}/v1/reports?limit=0")[0] == 400
    assert get_json(f"{server.http}/v1/reports?before=abc")[0] == 400
    assert http("DELETE", f"{server.http}/v1/reports/{ids[1]}")[0] == 204
    assert http("DELETE", f"{server.http}/v1/reports/{ids[1]}")[0] == 404
    assert get_json(f"{server.http}/v1/reports/{ids[1]}")[0] == 404


def _healthz(server) -> dict:
    return get_json(f"{server.http}/healthz")[1]


def test_disconnect_cancels_the_job_and_frees_the_worker_within_a_second(server, media):
    async def scenario() -> tuple[str, float]:
        messages = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.1))
        async for message in messages:
            if isinstance(message, p.FrameResult):
                job_id = message.job_id
                # a job still running cannot be deleted
                status, _, body = await asyncio.to_thread(http, "DELETE", f"{server.http}/v1/reports/{job_id}")
                assert status == 409 and json.loads(body)["error"]["code"] == "running"
                break
        closed_at = time.time()
        await messages.aclose()  # closes the websocket: the only client is gone
        return job_id, closed_at

    job_id, closed_at = asyncio.run(scenario())
    wait_for(lambda: _healthz(server)["queue"]["running"] == 0, timeout_s=5)
    # When the job stopped, by the server's own clock (stored as it cancels): the HTTP polling above adds
    # its own latency on a busy machine, which is not the worker's.
    row = next(r for r in get_json(f"{server.http}/v1/reports?limit=50")[1]["reports"] if r["id"] == job_id)
    assert row["status"] == "cancelled" and row["finished_s"] - closed_at < 1.0, row["finished_s"] - closed_at
    assert not (server.settings.data_dir / "uploads" / job_id).exists()
    status, frames = get_json(f"{server.http}/v1/reports/{job_id}/frames")
    assert frames["status"] == "cancelled" and 1 <= len(frames["frames"]) < 40
    status, body = get_json(f"{server.http}/v1/reports/{job_id}")
    assert status == 409 and body["error"]["code"] == "not_done"


def test_second_client_attaches_gets_the_replay_and_keeps_the_job_alive(server, media):
    async def scenario():
        first = analyze_file(media["long"], server.ws, options=p.Options(every_s=0.2))
        seen_first = []
        async for message in first:
            seen_first.append(message)
            if isinstance(message, p.FrameResult):
                break
        job_id = message.job_id
        second = [m async for m in _attach_and_leave_first(job_id, first)]
        return seen_first, second

    async def _attach_and_leave_first(job_id, first):
        messages = attach(job_id, server.ws)
        yield await anext(messages)  # hello
        yield await anext(messages)  # the replay has started: the job has two watchers now
        await first.aclose()  # the uploader leaves; the job goes on for the other client
        async for message in messages:
            yield message

    seen_first, second = asyncio.run(scenario())
    assert isinstance(second[0], p.Hello)
    # the replay is the job's stream from "queued" on, identical to what the uploader saw
    assert second[1 : len(seen_first) - 1] == seen_first[2:]
    assert _types(second[1:4]) == ["progress(queued)", "accepted", "progress(analyzing)"]
    assert isinstance(second[-1], p.Done) and len([m for m in second if isinstance(m, p.FrameResult)]) == 20


def test_four_concurrent_clients_get_the_same_reports_as_solo_runs(server, media):
    solo = {name: analyze_sync(server.ws, media[name])[-1].report.to_json() for name in ("short", "two")}

    async def together():
        names = ["short", "two", "short", "two"]
        runs = await asyncio.gather(*(collect(server.ws, media[n]) for n in names))
        return names, runs

    names, runs = asyncio.run(together())
    for name, timed in zip(names, runs, strict=True):
        messages = [m for _, m in timed]
        assert isinstance(messages[-1], p.Done), messages[-1]
        frames = [m for m in messages if isinstance(m, p.FrameResult)]
        assert [f.seq for f in frames] == list(range(4))  # complete and in order
        assert stable(messages[-1].report.to_json()) == stable(solo[name])
    assert len({timed[-1][1].job_id for timed in runs}) == 4
    # they really ran at the same time: every job saw frames before the others were done
    first_frames = [next(t for t, m in timed if isinstance(m, p.FrameResult)) for timed in runs]
    assert max(first_frames) < min(timed[-1][0] for timed in runs)


def test_dff_client_prints_frames_then_the_verdict(server, media, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "client",
            str(media["two"]),
            "--url",
            server.ws,
            "--json",
            str(tmp_path / "r.json"),
            "--overlays",
            str(tmp_path / "ov"),
        ],
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("job ") and "two.mp4 (320×240, 2.0 s, h264), 4 frames planned" in lines[0]
    assert len(lines) == 7 and all(line.startswith("frame ") and "2 faces" in line for line in lines[1:5])
    assert lines[5].startswith("two.mp4: ") and "(2 people" in lines[5]
    assert lines[6].startswith("  provenance: no C2PA manifest: unknown provenance")
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["n_people"] == 2
    assert len(list((tmp_path / "ov").glob("*.jpg"))) == 8
    # a refused connection is a usage-level failure (exit 2), with a one-line reason
    code = main(["client", str(media["two"]), "--url", "ws://127.0.0.1:9/v1/analyze"], out=out, err=err)
    assert code == 2 and "cannot connect" in err.getvalue()


def test_raw_websockets_client_can_pipeline_start_and_bytes(server, media):
    """A websocat-style client that does not wait for progress(uploading) works too."""

    async def scenario():
        data = media["image"].read_bytes()
        async with connect(server.ws, max_size=None) as ws:
            await ws.send(p.encode(p.Start(name="face.png", size_bytes=len(data))))
            half = len(data) // 2
            await ws.send(data[:half])
            await ws.send(data[half:])
            return [p.decode(m) async for m in ws]

    messages = asyncio.run(scenario())
    assert _types(messages) == [
        "hello",
        "progress(uploading)",
        "progress(queued)",
        "accepted",
        "progress(analyzing)",
        "frame",
        "done",
    ]
    assert messages[3].media.is_image and messages[-1].report.media.name == "face.png"
