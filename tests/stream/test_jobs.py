"""The LocalBackend and the job table with fake programs and fake engines: interleaving, capacity,
cancellation, engine hand-over, draining, a lagging consumer, a program that raises, and the head +
stored frames + live stream a late attacher gets."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeline.types import FaceRow, FrameRow
from stream import protocol as p
from stream.backend import Busy, Failed, JobSpec, ShuttingDown, Stopped
from stream.jobs import JobState, JobTable
from stream.store import Store
from stream.worker import LocalBackend

ID = "AbCdEfGh12345678_-xyz"


class FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _spec(name: str, steps: int | None = 3, client: str | None = None) -> JobSpec:
    return JobSpec(f"{name}{ID}", None, steps, client)  # type: ignore[arg-type]  # the fake programs read no file


def _wait(predicate, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
    return time.monotonic() - start


async def _await(predicate, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


class Recorder:
    """Program factory: each job runs ``spec.request`` steps (None = forever) of ``step_s`` seconds, one
    ``progress`` per step, then a Failed("done_here") as its final event."""

    def __init__(self, step_s: float = 0.01) -> None:
        self.step_s = step_s
        self.steps: list[tuple[str, int]] = []
        self.engines: dict[str, object] = {}
        self.closed: list[str] = []
        self.lock = threading.Lock()

    def program(self, spec: JobSpec, engine, wake=None):
        self.engines[spec.job_id] = engine
        n = 0
        try:
            while spec.request is None or n < spec.request:
                time.sleep(self.step_s)
                with self.lock:
                    self.steps.append((spec.job_id[0], n))
                n += 1
                yield p.Progress(spec.job_id, "analyzing", n, spec.request)
            yield Failed("done_here", "the fake program ended")
        except GeneratorExit:
            self.closed.append(spec.job_id[0])
            raise


def _backend(recorder, engine=None, **kw) -> LocalBackend:
    kw.setdefault("max_jobs", 4)
    kw.setdefault("max_queue", 4)
    return LocalBackend(engine, recorder.program, **kw)


async def _drain(stream) -> list:
    return [event async for event in stream]


def test_jobs_are_interleaved_one_step_at_a_time_and_keep_their_order():
    rec = Recorder()

    async def scenario():
        with _backend(rec) as backend:
            specs = [_spec(name, steps=5) for name in "abc"]
            for spec in specs:
                backend.reserve(spec.job_id, None)
            streams = [backend.submit(spec) for spec in specs]
            return await asyncio.gather(*(_drain(s) for s in streams))

    for events in asyncio.run(scenario()):
        assert [type(e).__name__ for e in events] == ["Progress"] * 6 + ["Failed"]  # queued, 5 steps, the end
        assert [e.frames_done for e in events[1:-1]] == [1, 2, 3, 4, 5]
    for name in "abc":
        mine = [i for i, (n, _) in enumerate(rec.steps) if n == name]
        assert [rec.steps[i][1] for i in mine] == [0, 1, 2, 3, 4]  # in order
        assert mine[-1] - mine[0] > 4  # others ran in between: interleaved, not one after the other


def test_capacity_counts_uploading_waiting_and_running_and_the_per_client_cap():
    rec = Recorder()

    async def scenario():
        with _backend(rec, max_jobs=1, max_queue=1, max_per_client=1) as backend:
            a, b, c = (_spec(n, steps=None) for n in "abc")
            backend.reserve(a.job_id, "10.0.0.1")
            with pytest.raises(Busy, match="per client"):
                backend.reserve(b.job_id, "10.0.0.1")
            backend.reserve(b.job_id, "10.0.0.2")
            with pytest.raises(Busy):
                backend.reserve(c.job_id, None)
            backend.release(b.job_id)  # an upload that failed gives its slot back
            backend.reserve(c.job_id, None)
            assert backend.depth().to_json() == {"uploading": 2, "waiting": 0, "running": 0, "capacity": 2}
            first = backend.submit(a)
            second = backend.submit(c)
            assert (await anext(second)).queue_position == 0  # next in line
            await _await(lambda: backend.depth().running == 1 and backend.depth().waiting == 1)
            backend.cancel_all("test")
            ends = [(await _drain(s))[-1] for s in (first, second)]
            assert ends == [Stopped("test"), Stopped("test")]

    asyncio.run(scenario())


def test_cancel_running_job_stops_within_a_second_and_its_stream_ends_stopped():
    rec = Recorder(step_s=0.05)

    async def scenario():
        with _backend(rec) as backend:
            spec = _spec("a", steps=None)
            backend.reserve(spec.job_id, None)
            stream = backend.submit(spec)
            await _await(lambda: len(rec.steps) >= 2)
            began = time.monotonic()
            backend.cancel(spec.job_id, "disconnected")
            events = await _drain(stream)
            return events, time.monotonic() - began

    events, elapsed = asyncio.run(scenario())
    assert elapsed < 1.0 and events[-1] == Stopped("disconnected")
    assert rec.closed == ["a"]  # the program saw GeneratorExit: its file is closed before the end is sent


def test_cancel_waiting_job_is_dropped_and_the_line_moves_up():
    rec = Recorder()

    async def scenario():
        with _backend(rec, max_jobs=1) as backend:
            a, b, c = (_spec(n, steps=None) for n in "abc")
            for spec in (a, b, c):
                backend.reserve(spec.job_id, None)
            backend.submit(a)
            await _await(lambda: backend.depth().running == 1)
            sb, sc = backend.submit(b), backend.submit(c)
            assert (await anext(sb)).queue_position == 0 and (await anext(sc)).queue_position == 1
            backend.cancel(b.job_id, "disconnected")
            assert await _drain(sb) == [Stopped("disconnected")]
            moved = await anext(sc)
            assert isinstance(moved, p.Progress) and moved.stage == "queued" and moved.queue_position == 0
            assert rec.closed == []  # b's program never ran
            backend.cancel(a.job_id, "x")
            await _await(lambda: rec.engines.get(c.job_id, "none") is None)  # c started once a left
            backend.cancel(c.job_id, "x")

    asyncio.run(scenario())


def test_running_jobs_finish_on_their_engine_and_old_engines_close():
    rec = Recorder(step_s=0.02)
    old, new = FakeEngine("old"), FakeEngine("new")

    async def scenario():
        backend = _backend(rec, engine=old)
        a, b = _spec("a", steps=None), _spec("b", steps=2)
        backend.reserve(a.job_id, None)
        sa = backend.submit(a)
        await _await(lambda: a.job_id in rec.engines)
        backend.set_engine(new)
        assert not old.closed  # a still runs on it
        backend.reserve(b.job_id, None)
        sb = backend.submit(b)
        assert (await _drain(sb))[-1] == Failed("done_here", "the fake program ended")
        assert rec.engines[a.job_id] is old and rec.engines[b.job_id] is new
        backend.cancel(a.job_id, "x")
        await _drain(sa)
        await _await(lambda: old.closed)
        await backend.aclose()
        assert new.closed

    asyncio.run(scenario())


def test_drain_and_shutdown():
    rec = Recorder(step_s=0.02)

    async def scenario():
        backend = _backend(rec)
        a = _spec("a", steps=None)
        backend.reserve(a.job_id, None)
        stream = backend.submit(a)
        assert await backend.drain(0.1) is False
        backend.stop_accepting()
        with pytest.raises(ShuttingDown):
            backend.reserve("b" + ID, None)
        assert backend.cancel_all("interrupted") == 1
        assert await backend.drain(2.0) is True
        assert (await _drain(stream))[-1] == Stopped("interrupted")
        await backend.aclose()

    asyncio.run(scenario())


def test_a_lagging_consumer_bounds_its_jobs_events_and_does_not_hold_up_the_others():
    """Job a's stream is not read: the backend stops stepping it at ``event_queue_size`` events in flight,
    while job b runs to its end; once a's events are taken, a runs on."""
    rec = Recorder(step_s=0.001)

    async def scenario():
        with _backend(rec, event_queue_size=4) as backend:
            a, b = _spec("a", steps=50), _spec("b", steps=50)
            for spec in (a, b):
                backend.reserve(spec.job_id, None)
            sa, sb = backend.submit(a), backend.submit(b)
            b_events = await _drain(sb)
            await asyncio.sleep(0.05)
            a_steps_while_unread = sum(1 for n, _ in rec.steps if n == "a")
            a_events = await _drain(sa)
            return b_events, a_steps_while_unread, a_events

    b_events, a_steps_while_unread, a_events = asyncio.run(scenario())
    assert len(b_events) == 52 and len(a_events) == 52
    assert a_steps_while_unread <= 4  # queued progress + 3 steps fill the 4 slots (one step may be mid-way)


def test_a_program_that_raises_fails_the_job_for_every_watcher_and_in_the_store(tmp_path):
    """The program raises after two frames: both watchers get ``error(internal)`` (no traceback), the store
    says failed with the two frames, and a late attacher gets the same end."""

    def broken(spec: JobSpec, engine, wake=None):
        for seq in range(2):
            yield p.FrameResult(spec.job_id, seq, seq * 5, seq / 2, None, ())
        raise RuntimeError("secret detail /srv/private")

    async def scenario():
        with Store(tmp_path / "data") as store, LocalBackend(None, broken, max_jobs=1, max_queue=1) as backend:
            table = JobTable(backend, store)
            job = table.new("j" + ID, "x.mp4", tmp_path / "up", None, keep_upload=False, client=None)
            (tmp_path / "up").mkdir()
            store.add_job(job.id, job.name, 4)
            backend.reserve(job.id, None)
            table.start(job)
            watchers = [job.attach(), job.attach()]
            got = await asyncio.wait_for(asyncio.gather(*(_texts(w) for w in watchers)), 5)
            late = await _texts(job.attach())
            await table.idle(5)
            return got, late, store.job(job.id), store.frames(job.id), job

    got, late, row, frames, job = asyncio.run(scenario())
    for texts in (*got, late):
        messages = [p.decode(t) for t in texts]
        assert [m.TYPE for m in messages] == ["progress", "frame", "frame", "error"]
        error = messages[-1]
        assert error.code == "internal" and "secret" not in error.message and job.id in error.message
    assert job.state is JobState.FAILED and row.status == "failed" and row.error_code == "internal"
    assert [f["index"] for f in frames] == [0, 5]
    assert not (tmp_path / "up").exists()  # the upload is deleted when the job ends


async def _texts(watcher) -> list[str]:
    return [text async for text, _ in watcher.texts()]


def test_late_attacher_gets_head_stored_frames_then_live_and_the_table_keeps_the_newest_finished(tmp_path):
    """No message log: a late attacher gets the head (coalesced progress, accepted), the frames so far from
    the store (without overlays), then the live ones; a job nobody watches any more is cancelled."""
    gate = threading.Event()

    def program(spec: JobSpec, engine, wake=None):
        yield p.Progress(spec.job_id, "analyzing", 0, 4)
        for seq in range(4):
            if seq == 2:
                gate.wait(5)
            face = p.Face(0, (1.0, 2.0, 30.0, 40.0), 0.99, 0.25 + seq / 10, 0, "b3ZlcmxheQ==")
            yield p.FrameResult(spec.job_id, seq, seq * 5, seq / 2, face.fake_prob, (face,))
        yield Failed("done_here", "end")

    async def scenario():
        with Store(tmp_path / "data") as store, LocalBackend(None, program, max_jobs=2, max_queue=2) as backend:
            table = JobTable(backend, store, retain_finished=1)
            job = table.new("a" + ID, "x.mp4", tmp_path / "a", None, keep_upload=False, client=None)
            store.add_job(job.id, job.name, 4)
            backend.reserve(job.id, None)
            table.start(job)
            first = job.attach()
            await _await(lambda: job.frames_published == 2)
            second = job.attach()  # late: 2 frames are only in the store now
            gate.set()
            got = await asyncio.gather(_texts(first), _texts(second))
            third = await _texts(job.attach())  # after the end
            for w in list(job._watchers):
                job.detach(w)
            assert job.state is JobState.FAILED  # leaving a finished job cancels nothing

            other = table.new("b" + ID, "x.mp4", tmp_path / "b", None, keep_upload=False, client=None)
            store.add_job(other.id, other.name, 4)
            backend.reserve(other.id, None)
            gate.clear()
            table.start(other)
            watcher = other.attach()
            await _await(lambda: other.frames_published == 2)
            other.detach(watcher)  # nobody watches: cancelled
            gate.set()
            await table.idle(5)
            return got, third, job, other, table, store.job(other.id)

    (first, second), third, job, other, table, other_row = asyncio.run(scenario())
    live = [p.decode(t) for t in first]
    assert [m.TYPE for m in live] == ["progress", "progress", "frame", "frame", "frame", "frame", "error"]
    assert all(f.faces[0].overlay_jpeg_b64 for f in live if isinstance(f, p.FrameResult))
    for replay in (second, third):
        messages = [p.decode(t) for t in replay]
        # the newest progress of each stage; frames 0, 1 from the store (no overlay), then the live ones
        assert [m.TYPE for m in messages] == ["progress", "progress", "frame", "frame", "frame", "frame", "error"]
        assert [m.stage for m in messages[:2]] == ["queued", "analyzing"]
        frames = [m for m in messages if isinstance(m, p.FrameResult)]
        assert [f.seq for f in frames] == [0, 1, 2, 3]
        assert [f.score for f in frames] == [f.score for f in live if isinstance(f, p.FrameResult)]
        assert [f.faces[0].overlay_jpeg_b64 is None for f in frames[:2]] == [True, True]
    assert p.decode(third[-1]) == live[-1]
    assert other.state is JobState.CANCELLED and other_row.status == "cancelled"
    assert table.get(job.id) is None and table.get(other.id) is other  # only the newest finished kept


@pytest.mark.parametrize(
    "start, to, ok",
    [
        (JobState.UPLOADING, JobState.QUEUED, True),
        (JobState.QUEUED, JobState.RUNNING, True),
        (JobState.RUNNING, JobState.DONE, True),
        (JobState.QUEUED, JobState.INTERRUPTED, True),
        (JobState.UPLOADING, JobState.DONE, False),
        (JobState.QUEUED, JobState.DONE, False),
        (JobState.DONE, JobState.FAILED, False),
        (JobState.CANCELLED, JobState.RUNNING, False),
    ],
)
def test_the_lifecycle_has_only_its_moves(start, to, ok):
    assert start.can_move_to(to) is ok


def test_the_store_keeps_the_lifecycles_values(tmp_path):
    import typing

    from stream.store import Status

    assert set(typing.get_args(Status)) == {s.value for s in JobState} - {"uploading"}
    assert set(typing.get_args(p.JobStatus)) == set(typing.get_args(Status))  # the wire's copy too
    with Store(tmp_path) as store:
        store.add_job("x" + ID, "f", 1)
        with pytest.raises(ValueError):
            store.end_job("x" + ID, JobState.DONE, "c", "m")
        store.end_job("x" + ID, JobState.INTERRUPTED, "interrupted", "m")
        assert store.job("x" + ID).status == "interrupted"
        store.add_frame("x" + ID, FrameRow(3, 0.5, 0.4, (FaceRow(0, (1.0, 2.0, 3.0, 4.0), 0.9, 0.4, 0),)))
        assert store.frame_page("x" + ID, 0, 10) == [
            FrameRow(3, 0.5, 0.4, (FaceRow(0, (1.0, 2.0, 3.0, 4.0), 0.9, 0.4, 0),))
        ]
