"""The worker and jobs with fake programs and fake engines: interleaving, capacity, cancellation, engine
hand-over, draining, and the replay-then-live message stream of a job."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stream.jobs import Job, JobTable
from stream.worker import Busy, ShuttingDown, Worker


class FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _job(tmp_path, loop, name: str, steps: int = 3) -> Job:
    upload_dir = tmp_path / name
    upload_dir.mkdir()
    (upload_dir / "file.bin").write_bytes(b"x")
    return Job(f"{name}-00000000", "file.bin", upload_dir, steps, loop)


def _wait(predicate, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
    return time.monotonic() - start


class Recorder:
    """Program factory: each job runs ``job.request`` steps (None = forever) of ``step_s`` seconds."""

    def __init__(self, step_s: float = 0.01) -> None:
        self.step_s = step_s
        self.steps: list[tuple[str, int]] = []
        self.engines: dict[str, object] = {}
        self.closed: list[str] = []
        self.lock = threading.Lock()

    def program(self, job: Job, engine):
        self.engines[job.id] = engine
        n = 0
        try:
            while job.request is None or n < job.request:
                time.sleep(self.step_s)
                with self.lock:
                    self.steps.append((job.id[0], n))
                n += 1
                yield
        except GeneratorExit:
            self.closed.append(job.id[0])
            raise


def _worker(recorder, engine=None, **kw) -> Worker:
    kw.setdefault("max_jobs", 4)
    kw.setdefault("max_queue", 4)
    kw.setdefault("on_dropped", lambda job, reason: None)
    return Worker(engine, recorder.program, **kw)


def test_jobs_are_interleaved_one_step_at_a_time_and_keep_their_order(tmp_path, loop):
    rec = Recorder()
    with _worker(rec) as worker:
        jobs = [_job(tmp_path, loop, name, steps=5) for name in "abc"]
        for job in jobs:
            worker.reserve(job)
        for job in jobs:
            worker.submit(job)
        _wait(lambda: len(rec.steps) == 15 and worker.depth().running == 0)
    for name in "abc":
        mine = [i for i, (n, _) in enumerate(rec.steps) if n == name]
        assert [rec.steps[i][1] for i in mine] == [0, 1, 2, 3, 4]  # in order
        assert mine[-1] - mine[0] > 4  # others ran in between: interleaved, not one after the other
    assert all(not (tmp_path / n).exists() for n in "abc")  # uploads deleted after the job


def test_capacity_counts_uploading_waiting_and_running(tmp_path, loop):
    rec = Recorder()
    with _worker(rec, max_jobs=1, max_queue=1) as worker:
        a, b, c = (_job(tmp_path, loop, n, steps=None) for n in "abc")
        worker.reserve(a)
        worker.reserve(b)
        with pytest.raises(Busy):
            worker.reserve(c)
        worker.release(b)  # an upload that failed gives its slot back and deletes its file
        assert not (tmp_path / "b").exists()
        worker.reserve(c)
        assert worker.depth().to_json() == {"uploading": 2, "waiting": 0, "running": 0, "capacity": 2}
        worker.submit(a)
        assert worker.submit(c) == 0  # next in line
        _wait(lambda: worker.depth().running == 1 and worker.depth().waiting == 1)
        a.cancel("test")
        c.cancel("test")


def test_cancel_running_job_stops_within_a_second_and_removes_its_upload(tmp_path, loop):
    rec = Recorder(step_s=0.05)
    with _worker(rec) as worker:
        job = _job(tmp_path, loop, "a", steps=None)
        worker.reserve(job)
        worker.submit(job)
        _wait(lambda: len(rec.steps) >= 2)
        job.cancel("disconnected")
        elapsed = _wait(lambda: worker.depth().running == 0)
        assert elapsed < 1.0
        assert rec.closed == ["a"]  # the program saw GeneratorExit: it can store "cancelled"
        assert not (tmp_path / "a").exists()


def test_cancel_waiting_job_is_dropped_and_the_line_moves_up(tmp_path, loop):
    rec = Recorder()
    dropped, moved = [], []
    worker = _worker(
        rec,
        max_jobs=1,
        on_dropped=lambda job, reason: dropped.append((job.id[0], reason)),
        on_queued=lambda job, position: moved.append((job.id[0], position)),
    )
    with worker:
        a, b, c = (_job(tmp_path, loop, n, steps=None) for n in "abc")
        for job in (a, b, c):
            worker.reserve(job)
        worker.submit(a)
        _wait(lambda: worker.depth().running == 1)
        assert worker.submit(b) == 0
        assert worker.submit(c) == 1
        b.cancel("disconnected")
        _wait(lambda: dropped == [("b", "disconnected")] and moved == [("c", 0)])
        assert not (tmp_path / "b").exists() and (tmp_path / "c").exists()
        assert rec.closed == []  # b's program never ran
        a.cancel("x")
        _wait(lambda: rec.engines.get(c.id, "none") is None)  # c started once a left
        c.cancel("x")


def test_running_jobs_finish_on_their_engine_and_old_engines_close(tmp_path, loop):
    rec = Recorder(step_s=0.02)
    old, new = FakeEngine("old"), FakeEngine("new")
    worker = _worker(rec, engine=old)
    a = _job(tmp_path, loop, "a", steps=None)
    worker.reserve(a)
    worker.submit(a)
    _wait(lambda: a.id in rec.engines)
    worker.set_engine(new)
    assert not old.closed  # a still runs on it
    b = _job(tmp_path, loop, "b", steps=2)
    worker.reserve(b)
    worker.submit(b)
    _wait(lambda: b.id in rec.engines)
    assert rec.engines[a.id] is old and rec.engines[b.id] is new
    a.cancel("x")
    _wait(lambda: old.closed)
    worker.close()
    assert new.closed


def test_drain_and_shutdown(tmp_path, loop):
    rec = Recorder(step_s=0.02)
    worker = _worker(rec)
    a = _job(tmp_path, loop, "a", steps=None)
    worker.reserve(a)
    worker.submit(a)
    assert worker.drain(0.1) is False
    worker.stop_accepting()
    with pytest.raises(ShuttingDown):
        worker.reserve(_job(tmp_path, loop, "b"))
    assert worker.cancel_all("interrupted") == [a]
    assert worker.drain(2.0) is True
    assert a.cancel_reason == "interrupted"
    worker.close()


def test_job_replays_its_log_then_streams_live_and_cancels_when_nobody_watches(tmp_path):
    async def scenario():
        loop = asyncio.get_running_loop()
        table = JobTable(retain_finished=1)
        job = Job("job-a-00000", "f", tmp_path / "a", None, loop)
        table.add(job)
        job.publish("one")
        first = job.attach()
        # from another thread, as the worker does
        await asyncio.to_thread(job.publish, "two")
        await asyncio.sleep(0.01)
        second = job.attach()  # a late attacher gets everything so far
        job.publish("three", final=True)
        job.publish("after the end is ignored")
        got = [[q.get_nowait() for _ in range(q.qsize())] for q in (first, second)]
        assert got[0] == got[1] == ["one", "two", "three", None]
        third = job.attach()  # attaching after the end: the full replay and the end marker
        assert [third.get_nowait() for _ in range(third.qsize())] == ["one", "two", "three", None]
        for q in (first, second, third):
            job.detach(q)
        assert not job.cancelled  # finished jobs are not cancelled by leaving

        other = Job("job-b-00000", "f", tmp_path / "b", None, loop)
        table.add(other)
        q = other.attach()
        other.detach(q)
        assert other.cancelled and other.cancel_reason == "disconnected"
        other.publish("end", final=True)
        assert table.get(job.id) is None and table.get(other.id) is other  # only the newest finished kept

    asyncio.run(scenario())
