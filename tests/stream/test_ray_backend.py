"""The Ray backend through the real server, on a real 2-node Ray cluster (one actor per node): the same
reports as the local backend, frames streamed as they are scored, cancel, live sessions, a model switch,
/healthz, a node killed mid-job, shutdown; and the default path never imports ray."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from pipeline.models import build_model, file_sha256, save_checkpoint
from stream import protocol as p
from stream.state import JobState
from tests.livemedia import LiveClip, TsHttpServer
from tests.raycluster import LocalCluster, close_to, local_cluster
from tests.servers import SERVE_SCRIPT, Served, bound_port, serving
from tests.stream.conftest import analyze_sync, collect, get_json, http, make_settings, wait_for
from tests.stream.test_live_server import watch_session
from ui.client import analyze_file

pytestmark = pytest.mark.timeout(240)
EVERY_S = 0.25  # the long clip (4 s) gives 16 frames: a job lasts long enough to act on it mid-way


@pytest.fixture(scope="module")
def cluster() -> Any:
    with local_cluster(worker_nodes=1, cpus_per_node=1) as made:
        yield made


@pytest.fixture(scope="module")
def ray_models(tmp_path_factory, models_dir) -> Path:
    """The shared random checkpoint in a directory of this module's own (a test installs another model)."""
    directory = tmp_path_factory.mktemp("ray_models")
    shutil.copy2(models_dir / "random.pth", directory / "random.pth")
    return directory


@pytest.fixture(scope="module")
def ray_server(cluster: LocalCluster, tmp_path_factory, ray_models) -> Any:
    settings = make_settings(
        tmp_path_factory.mktemp("ray_server"), ray_models, backend="ray", ray_address=cluster.address,
        ray_actors=2, ray_actor_cpus=1, shutdown_grace_s=0, max_jobs=2, max_queue=1,
        ray_shared_batches="on",  # the actors' cross-job batching path (on CPU "auto" would leave it off)
    )  # fmt: skip
    with serving(settings) as served:
        wait_for(lambda: [w["state"] for w in health(served)["workers"]] == ["alive", "alive"], 60)
        yield served


def health(served: Served) -> dict[str, Any]:
    status, body = get_json(f"{served.http}/healthz")
    assert status == 200, body
    return body


def options() -> p.Options:
    return p.Options(every_s=EVERY_S)


def report_of(messages: list[p.Message]) -> dict[str, Any]:
    done = messages[-1]
    assert isinstance(done, p.Done), done
    return {k: v for k, v in done.report.to_json().items() if k != "timings"}


def frames_of(messages: list[p.Message]) -> list[dict[str, Any]]:
    return [json.loads(p.encode(m)) | {"job_id": None} for m in messages if isinstance(m, p.FrameResult)]


@pytest.fixture(scope="module")
def reference(server, media) -> list[p.Message]:
    """The long clip through the local backend (the shared server, same settings but the backend)."""
    return analyze_sync(server.ws, media["long"], options=options())


def test_healthz_shows_one_alive_actor_per_node(ray_server, cluster):
    body = health(ray_server)
    assert body["status"] == "ok" and body["backend"] == "ray"
    workers = body["workers"]
    assert [w["name"] for w in workers] == ["engine-0", "engine-1"]
    assert all(w["state"] == "alive" and w["jobs"] == 0 and w["device"] == "cpu" for w in workers)
    assert {w["node_id"] for w in workers} == {cluster.head_node_id, cluster.workers[0].node_id}
    assert body["queue"] == {"uploading": 0, "waiting": 0, "running": 0, "capacity": 3}


def test_the_same_clip_gives_the_same_report_as_the_local_backend_streamed_frame_by_frame(ray_server, media, reference):
    timed = asyncio.run(collect(ray_server.ws, media["long"], options=options()))
    messages = [m for _, m in timed]
    assert [m.TYPE for m in messages[:5]] == ["hello", "progress", "progress", "accepted", "progress"]
    close_to(report_of(messages), report_of(reference))
    close_to(frames_of(messages), frames_of(reference), where="frames")
    assert len(frames_of(messages)) == 16
    # streamed: the frames arrive one by one while the job runs, not in a batch at its end
    frame_times = [t for t, m in timed if isinstance(m, p.FrameResult)]
    done_time = timed[-1][0]
    assert done_time - frame_times[0] > 0.3, (frame_times, done_time)
    assert len({round(t, 2) for t in frame_times}) >= 8, frame_times


def test_jobs_beyond_max_jobs_wait_their_turn_and_a_full_queue_says_busy(ray_server, media):
    async def scenario() -> tuple[list[list[tuple[float, p.Message]]], list[p.Message]]:
        running = [analyze_file(media["long"], ray_server.ws, options=options()) for _ in range(2)]
        heads = [[], []]
        for run, head in zip(running, heads, strict=True):  # max_jobs = 2: both run, one per actor
            async for message in run:
                head.append((time.monotonic(), message))
                if isinstance(message, p.FrameResult):
                    break
        waiting = asyncio.create_task(collect(ray_server.ws, media["short"]))
        await asyncio.sleep(0.5)  # it is queued (max_queue = 1): the next one is refused
        refused = [m async for m in analyze_file(media["short"], ray_server.ws)]
        rests = await asyncio.gather(*(_timed(run) for run in running))
        return [head + rest for head, rest in zip(heads, rests, strict=True)] + [await waiting], refused

    (first, second, third), refused = asyncio.run(scenario())
    assert [m.TYPE for m in refused] == ["hello", "error"] and refused[-1].code == "busy", refused
    assert all(isinstance(run[-1][1], p.Done) for run in (first, second, third))
    queued = [m for _, m in third if isinstance(m, p.Progress) and m.stage == "queued"]
    assert [m.queue_position for m in queued] == [0]
    accepted_at = next(t for t, m in third if isinstance(m, p.Accepted))
    last_frames = [max(t for t, m in run if isinstance(m, p.FrameResult)) for run in (first, second)]
    assert accepted_at > min(last_frames)  # it ran once one of the two had ended


async def _timed(messages) -> list[tuple[float, p.Message]]:
    return [(time.monotonic(), m) async for m in messages]


def test_a_client_that_disconnects_cancels_its_job_and_frees_the_actor_within_a_second_or_so(ray_server, media):
    backend = ray_server.service.backend

    async def leave_after_first_frame() -> str:
        async for message in analyze_file(media["long"], ray_server.ws, options=p.Options(every_s=0.1)):
            if isinstance(message, p.FrameResult):
                return message.job_id  # leaving the generator closes the connection
        raise AssertionError("no frame")

    job_id = asyncio.run(leave_after_first_frame())
    left = time.monotonic()
    wait_for(lambda: health(ray_server)["queue"]["running"] == 0, 10)
    freed_s = time.monotonic() - left
    assert all(w["jobs"] == 0 for w in health(ray_server)["workers"])
    assert backend.actor_jobs() == [[], []]  # the actors themselves let go of it
    assert ray_server.service.jobs.get(job_id).state == JobState.CANCELLED
    assert freed_s < 3.0, f"the job took {freed_s:.2f} s to stop"
    print(f"disconnect -> actor free: {freed_s:.2f} s")


def test_a_watched_url_runs_on_an_actor_and_stop_ends_it_with_its_report(ray_server):
    with TsHttpServer(LiveClip()) as stream:  # endless: only stop (finish) ends it
        messages = asyncio.run(watch_session(ray_server.ws, stream.url(), stop_after_frames=2))
    done = messages[-1]
    assert isinstance(done, p.Done), done
    assert done.report.session is not None and done.report.session.end == "stopped"
    assert done.report.session.frames_analysed >= 2
    seqs = [m.seq for m in messages if isinstance(m, p.FrameResult)]
    assert seqs == list(range(len(seqs)))


def test_a_push_session_is_refused_clearly(ray_server):
    async def scenario() -> list[p.Message]:
        async with connect(ray_server.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(p.Push(name="webcam", options=p.Options(rate_hz=2.0))))
            return [p.decode(m) async for m in ws]

    error = asyncio.run(scenario())[-1]
    assert isinstance(error, p.Error) and error.code == "bad_config", error
    assert "local backend" in error.message


def test_a_model_switch_reloads_the_actors_and_running_jobs_keep_their_model(ray_server, ray_models, media, tmp_path):
    second = save_checkpoint(build_model(), tmp_path / "second.pth")  # other random weights
    put = lambda name, path: http("PUT", f"{ray_server.http}/v1/models/{name}", body=path.read_bytes())  # noqa: E731
    activate = lambda name: http("POST", f"{ray_server.http}/v1/models/{name}/activate")[0]  # noqa: E731
    before = analyze_sync(ray_server.ws, media["image"])[-1]

    async def switch_mid_job() -> list[p.Message]:
        running = analyze_file(media["long"], ray_server.ws, options=options())
        async for message in running:
            if isinstance(message, p.FrameResult):
                break
        assert (await asyncio.to_thread(put, "second.pth", second))[0] == 201
        assert await asyncio.to_thread(activate, "second.pth") == 200  # returns once the actors opened it
        return [m async for m in running]

    try:
        rest = asyncio.run(switch_mid_job())
        assert rest[-1].report.model.name == "random.pth"  # finished on the model it started with
        after = analyze_sync(ray_server.ws, media["image"])[-1]
        assert after.report.model.name == "second.pth" and after.report.model.sha256 == file_sha256(second)
        assert health(ray_server)["model"]["name"] == "second.pth"
        assert after.report.score != before.report.score  # the actors really score with the new weights
    finally:
        assert activate("random.pth") == 200
    again = analyze_sync(ray_server.ws, media["image"])[-1]
    assert again.report.score == before.report.score


def test_an_actor_killed_during_a_live_session_fails_it_clearly_and_the_pool_replaces_the_actor(ray_server):
    async def watch_then_kill(url: str) -> list[p.Message]:
        messages: list[p.Message] = []
        async with connect(ray_server.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(p.encode(p.Watch(url=url, options=p.Options(rate_hz=2.0))))
            async for raw in ws:
                messages.append(p.decode(raw))
                if isinstance(messages[-1], p.LiveStatus) and not any(isinstance(m, p.Error) for m in messages):
                    workers = (await asyncio.to_thread(health, ray_server))["workers"]
                    (busy,) = [w for w in workers if w["jobs"] == 1]
                    os.kill(busy["pid"], signal.SIGKILL)  # the actor's process crashes mid-session
                    break
            messages.extend([p.decode(raw) async for raw in ws])
        return messages

    with TsHttpServer(LiveClip()) as stream:
        messages = asyncio.run(watch_then_kill(stream.url()))
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == "worker_lost", error
    assert "was lost" in error.message and "start the session again" in error.message
    assert ray_server.service.jobs.get(error.job_id).state == JobState.FAILED
    wait_for(lambda: all(w["state"] == "alive" for w in health(ray_server)["workers"]), 60)
    assert sorted(w["restarts"] for w in health(ray_server)["workers"]) == [0, 1]


def test_a_node_killed_mid_job_retries_its_job_on_the_other_actor_without_repeating_frames(
    ray_server, cluster, media, reference, caplog
):
    caplog.set_level(logging.WARNING, logger="dff.ray")
    worker_node = cluster.workers[0].node_id

    async def two_jobs_then_kill() -> list[list[p.Message]]:
        runs = [analyze_file(media["long"], ray_server.ws, options=options()) for _ in range(2)]
        seen: list[list[p.Message]] = [[], []]
        for run, messages in zip(runs, seen, strict=True):  # both started and streaming
            async for message in run:
                messages.append(message)
                if isinstance(message, p.FrameResult):
                    break
        workers = (await asyncio.to_thread(health, ray_server))["workers"]
        assert [w["jobs"] for w in workers] == [1, 1], workers  # one job on each actor
        # a crash kills the node's processes at once: removing the raylet alone leaves its worker process
        # streaming for a while (on a loaded CI machine, long enough to finish the job unretried)
        (doomed,) = [w["pid"] for w in workers if w["node_id"] == worker_node]
        os.kill(doomed, signal.SIGKILL)
        await asyncio.to_thread(cluster.remove_worker, worker_node)
        rest = await asyncio.gather(*(_all(run) for run in runs))
        return [a + b for a, b in zip(seen, rest, strict=True)]

    results = asyncio.run(two_jobs_then_kill())
    for messages in results:  # each client: every frame once, in order, then the same report
        assert [m.seq for m in messages if isinstance(m, p.FrameResult)] == list(range(16))
        assert sum(isinstance(m, p.Accepted) for m in messages) == 1
        close_to(frames_of(messages), frames_of(reference), where="frames")
        close_to(report_of(messages), report_of(reference))
    retried = [r.getMessage() for r in caplog.records if "retrying it on another worker" in r.getMessage()]
    assert len(retried) == 1, retried
    lost = next(w for w in health(ray_server)["workers"] if w["node_id"] == worker_node)
    assert lost["state"] == "restarting", lost  # its replacement waits for room
    assert "actor" in lost["error"], lost  # Ray's words: ActorDiedError's or ActorUnavailableError's
    # a new node: the lost actor's slot gets a new actor there, with the current model
    new_node = cluster.add_worker().node_id
    wait_for(lambda: all(w["state"] == "alive" for w in health(ray_server)["workers"]), 60)
    replaced = next(w for w in health(ray_server)["workers"] if w["name"] == lost["name"])
    # (a first replacement may have been placed on the dead node before Ray knew it was dead: it died too)
    assert replaced["node_id"] == new_node and replaced["restarts"] >= 1
    close_to(report_of(analyze_sync(ray_server.ws, media["long"], options=options())), report_of(reference))


async def _all(messages) -> list[p.Message]:
    return [m async for m in messages]


def test_shutdown_interrupts_the_running_job_and_gives_the_actors_back(ray_server, media):
    import ray

    async def stop_mid_job() -> list[p.Message]:
        running = analyze_file(media["long"], ray_server.ws, options=p.Options(every_s=0.1))
        seen = []
        async for message in running:
            seen.append(message)
            if isinstance(message, p.FrameResult):
                break
        ray_server.server.should_exit = True  # what SIGTERM does; shutdown_grace_s is 0
        return seen + [m async for m in running]

    messages = asyncio.run(stop_mid_job())
    ray_server.thread.join(30)
    assert not ray_server.thread.is_alive()
    error = messages[-1]
    assert isinstance(error, p.Error) and error.code == "interrupted", error
    assert ray.is_initialized()  # the backend did not start this Ray, so it left it running
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, 30)  # both actors' CPUs are free again


def _ray_processes(marker: str) -> list[str]:
    """Command lines of this machine's processes that mention ``marker`` (a Ray temp dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if marker in text:
            found.append(text)
    return found


def test_the_server_on_a_ray_of_its_own_starts_it_and_shuts_it_down_on_sigterm():
    ray_tmp = tempfile.mkdtemp(prefix="dffray", dir="/tmp")  # short: Ray's socket paths live under it
    data = tempfile.mkdtemp(prefix="dffdata")
    env = {**os.environ, "DFF_BACKEND": "ray", "DFF_RAY_ACTORS": "1", "RAY_TMPDIR": ray_tmp}
    env.pop("DFF_RAY_ADDRESS", None)
    env |= {"DFF_PORT": "0", "DFF_DATA_DIR": data, "DFF_DEVICE": "cpu"}  # no model: this is about Ray alone
    script = SERVE_SCRIPT.replace("log_level='warning'", "log_level='info'")  # `dff serve` without the page
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    try:
        port, lines = bound_port(proc)
        status, body = get_json(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and [w["state"] for w in body["workers"]] == ["alive"], body
        assert _ray_processes(ray_tmp), "no Ray processes of its own"
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log and "Traceback" not in log, log
    wait_for(lambda: not _ray_processes(ray_tmp), 30)  # the Ray it started is shut down with it
    shutil.rmtree(ray_tmp, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)


def test_the_default_path_never_imports_ray(tmp_path):
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "import stream.server, ui.cli\n"
        "from pipeline.config import Settings\n"
        "from stream.service import Service\n"
        f"service = Service(Settings(data_dir=Path({str(tmp_path)!r}), device='cpu'))\n"
        "async def main():\n"
        "    await service.start()\n"
        "    kind = type(service.backend).__name__\n"
        "    await service.stop()\n"
        "    return kind\n"
        "ray = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'stream.ray')))\n"
        "print(asyncio.run(main()), ray)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFF_")}  # the defaults, whatever CI sets
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "LocalBackend []", out.stdout


def test_dff_serve_flags_choose_the_ray_backend(monkeypatch):
    from ui.cli import build_parser
    from ui.cmd_serve import serve_settings

    for name in ("DFF_BACKEND", "DFF_RAY_ADDRESS", "DFF_RAY_ACTORS"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["serve", "--backend", "ray", "--ray-address", "auto", "--ray-actors", "3"])
    settings = serve_settings(args)
    assert (settings.backend, settings.ray_address, settings.ray_actors) == ("ray", "auto", 3)
    defaults = serve_settings(build_parser().parse_args(["serve"]))
    assert (defaults.backend, defaults.ray_address, defaults.ray_actors) == ("local", None, 2)
    monkeypatch.setenv("DFF_BACKEND", "ray")  # the variable still works when the flag is absent
    assert serve_settings(build_parser().parse_args(["serve"])).backend == "ray"
