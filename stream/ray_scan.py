"""Batch scanning on Ray (``dff scan --ray``, ui/cmd_scan_ray.py, which also decides what to skip on a
rerun): many files spread over a pool of EngineActors (stream/ray_actor.py, stream/ray_pool.py), each
file's outcome yielded as soon as it finishes.

    files ──READ_THREADS threads: size cap, read, ray.put──▶ ready ──an actor with room──▶ running
    running ──ray.wait over the streaming generators (this thread)──▶ events ──Finished / Failed──▶ yielded
       └── its actor died: once more from the start on another actor (the same bytes), else worker_lost

No disk is shared: a file's bytes travel through the object store, at most ``max_upload_mb`` of them (the
server's cap; a bigger file fails ``too_large`` before it is read). At most ``read_ahead`` files are read
ahead of the actors, so memory holds a bounded number of files, never all reports: each outcome is yielded
and forgotten. An actor runs ``jobs_per_actor`` files at once (their steps take turns on its engine): while
one file's bytes are fetched and written on the actor, another is analysed, so no actor idles between
files. Closing the generator (Ctrl-C) cancels the files that run and waits for them to stop.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DffError, MediaTooLarge, UnsupportedMedia
from pipeline.sources.probe import check_file
from pipeline.types import Report
from stream import protocol as p
from stream.backend import Failed, Finished, JobSpec, Stopped
from stream.programs import JobRequest
from stream.ray_actor import LOST_ERRORS, first_line
from stream.ray_backend import MAX_ATTEMPTS, WORKER_LOST
from stream.ray_job import CANCEL_GRACE_S
from stream.ray_pool import Member, Pool, WorkerState

log = logging.getLogger("dff.ray_scan")

JOBS_PER_ACTOR = 2  # files one actor runs at once: one is analysed while the next one's bytes arrive
READ_THREADS = 4  # files read and put into the object store at once
TICK_S = 0.1  # the longest this thread waits on Ray before it looks at the reads again
NO_ACTOR_WAIT_S = 60.0  # files that wait this long with no actor alive fail worker_lost


@dataclass(frozen=True, slots=True)
class Scanned:
    """A file analysed: its report. ``seconds``: wall time from its first start on an actor to its report;
    ``attempts``: 2 when the first actor died under it."""

    path: Path
    report: Report
    seconds: float
    attempts: int


@dataclass(frozen=True, slots=True)
class ScanFailed:
    """A file that got no report: ``code`` from the error tree (``not_found``, ``unsupported_media``,
    ``too_large``, ...), ``worker_lost`` or ``internal``; ``message`` one line for people (the error
    tree's own text, which names the file as the in-process scan prints it). ``seconds`` as in Scanned (0
    when it never ran)."""

    path: Path
    code: str
    message: str
    seconds: float


ScanOutcome = Scanned | ScanFailed


@dataclass(frozen=True, slots=True)
class RunningFile:
    """A file on an actor now (``RayScanner.running``): the pool slot, the actor, the attempt (1 or 2) and
    the frames scored so far in this attempt."""

    path: Path
    actor: str
    handle: Any  # ray.actor.ActorHandle
    attempt: int
    frames: int


def _ship(path: Path, cap_bytes: int) -> Any:
    """``path``'s bytes into the object store (in a read thread); its ObjectRef. Raises the error tree's
    MediaNotFound/UnsupportedMedia/EmptyMedia (pipeline.sources.probe.check_file) or MediaTooLarge."""
    size = check_file(path)
    if size > cap_bytes:
        raise _too_large(path, size, cap_bytes)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnsupportedMedia(f"{path.name} cannot be read: {e.strerror or e}") from None
    if len(data) > cap_bytes:  # it grew since check_file
        raise _too_large(path, len(data), cap_bytes)
    return ray.put(data)


def _too_large(path: Path, size: int, cap_bytes: int) -> MediaTooLarge:
    cap = f"at most {cap_bytes} are sent to the cluster (DFF_MAX_UPLOAD_MB)"
    return MediaTooLarge(f"{path.name} is {size} bytes; {cap}")


@dataclass(eq=False)
class _File:
    path: Path
    upload: Any = None  # ray.ObjectRef of its bytes, kept for a retry
    attempts: int = 0
    started_s: float | None = None  # time.monotonic() of its first start on an actor

    def seconds(self) -> float:
        return 0.0 if self.started_s is None else time.monotonic() - self.started_s


@dataclass(eq=False)
class _Run:
    file: _File
    member: Member
    handle: Any
    job_id: str
    frames: int = 0


class RayScanner:
    """A pool of ``settings.ray_actors`` actors holding ``engine``'s model, and ``scan`` to spread files over
    them. A context manager: entering connects to Ray (``settings.ray_address``; None starts a Ray of its
    own, shut down on exit; a driver already connected is used as it is) and starts the pool, blocking
    until an actor is up (ConfigError when none comes up, ConnectionError when Ray cannot be reached);
    leaving kills the actors. ``scan`` is not re-entrant: one batch at a time."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        request: JobRequest,
        *,
        jobs_per_actor: int = JOBS_PER_ACTOR,
        read_ahead: int | None = None,
    ) -> None:
        """``request``: each file's options (``stream.service.resolve_options``); ``read_ahead``: files read
        into the object store before an actor has room for them (default: one per actor)."""
        if jobs_per_actor < 1:
            raise ValueError(f"jobs_per_actor must be >= 1, got {jobs_per_actor}")
        self._settings = settings
        self._engine = engine
        self._request = request
        self._jobs_per_actor = jobs_per_actor
        self._read_ahead = max(1, read_ahead if read_ahead is not None else settings.ray_actors)
        self._cap_bytes = int(settings.max_upload_mb * 1024 * 1024)
        self._pool: Pool | None = None
        self._started_ray = False
        self._wake = threading.Event()  # the pool's thread: an actor came up or died
        self._lock = threading.Lock()  # guards _running for ``running()`` from other threads
        self._running: dict[Any, _Run] = {}  # ray.ObjectRefGenerator -> its run
        self._busy = False

    def __enter__(self) -> RayScanner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect to Ray and start the pool (blocking; a second call does nothing). See the class docstring."""
        if self._pool is not None:
            return
        if not ray.is_initialized():
            extra = {"include_dashboard": False} if self._settings.ray_address is None else {}
            # Ray's own INFO lines ("Connecting to ...") would interleave with the verdict lines
            # "local" for None: see RayBackend (None would join a cluster found in /tmp/ray)
            address = self._settings.ray_address or "local"
            ray.init(address=address, logging_level=logging.WARNING, **extra)
            self._started_ray = True
        self._pool = Pool(self._settings, self._jobs_per_actor, on_change=self._wake.set)
        try:
            self._pool.start(self._engine)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the actors; shut Ray down if this scanner started it."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("the scanner is not started (use it as a context manager)")
        return self._pool

    def workers(self) -> tuple[WorkerState, ...]:
        """Each actor's state (``alive``, ``restarting``, ...), as /healthz shows them."""
        return self.pool.states()

    def running(self) -> tuple[RunningFile, ...]:
        """The files on actors now (any thread; for progress displays and tests)."""
        with self._lock:
            runs = list(self._running.values())
        return tuple(RunningFile(r.file.path, r.member.name, r.handle, r.file.attempts, r.frames) for r in runs)

    # -- one batch --------------------------------------------------------------------------------------------

    def scan(self, paths: Iterable[Path]) -> Iterator[ScanOutcome]:
        """Each of ``paths`` analysed on the pool, its outcome yielded as it finishes (not in input order).
        A bad file fails alone. Closing the generator cancels what runs (see the module docstring)."""
        if self._busy:
            raise RuntimeError("RayScanner.scan is already running a batch")
        self._busy = True
        pending = deque(_File(path) for path in paths)
        reads: dict[Future[Any], _File] = {}
        ready: deque[_File] = deque()
        readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dff-scan-read")
        stranded_since: float | None = None  # files wait for an actor and none is alive
        try:
            while pending or reads or ready or self._running:
                while pending and len(reads) + len(ready) < self._read_ahead:
                    item = pending.popleft()
                    reads[readers.submit(_ship, item.path, self._cap_bytes)] = item
                for future in [f for f in reads if f.done()]:
                    item = reads.pop(future)
                    try:
                        item.upload = future.result()
                    except DffError as err:
                        yield ScanFailed(item.path, err.code, str(err), 0.0)
                        continue
                    except Exception as err:  # the object store refused it (full, or Ray is going down)
                        why = f"cannot send it to the cluster: {first_line(err)}"
                        yield ScanFailed(item.path, "internal", why, 0.0)
                        continue
                    ready.append(item)
                while ready and (member := self._free_member()) is not None:
                    self._start(ready.popleft(), member)
                if ready and not self._running:
                    stranded_since = stranded_since or time.monotonic()
                    reason = self._stranded(time.monotonic() - stranded_since)
                    if reason is not None:
                        for item in (*ready, *reads.values(), *pending):
                            yield ScanFailed(item.path, WORKER_LOST, reason, item.seconds())
                        return
                else:
                    stranded_since = None
                if self._running:
                    for gen in self._ready_generators():
                        retry, outcome = self._advance(gen)
                        if retry is not None:
                            ready.appendleft(retry)
                        if outcome is not None:
                            yield outcome
                elif reads and not ready:
                    wait_futures(reads, timeout=TICK_S, return_when=FIRST_COMPLETED)
                elif ready:
                    self._wake.wait(TICK_S)
                    self._wake.clear()
        finally:
            readers.shutdown(wait=False, cancel_futures=True)
            self._cancel_running()
            self._busy = False

    def _free_member(self) -> Member | None:
        member = self.pool.pick()  # the alive actor with the fewest jobs
        return member if member is not None and len(member.jobs) < self._jobs_per_actor else None

    def _stranded(self, waited_s: float) -> str | None:
        """Why files that wait for an actor will never get one, or None while one may still come up."""
        states = [w.state for w in self.pool.states()]
        if all(state == "dead" for state in states):
            return "every Ray actor died and could not be replaced"
        if waited_s >= NO_ACTOR_WAIT_S:
            return f"no Ray actor was alive for {NO_ACTOR_WAIT_S:.0f} s (actors: {', '.join(states)})"
        return None

    def _start(self, item: _File, member: Member) -> None:
        item.attempts += 1
        if item.started_s is None:
            item.started_s = time.monotonic()
        job_id = f"scan-{secrets.token_hex(6)}"
        spec = JobSpec(job_id, Path(item.path.name), self._request)  # the actor writes the bytes under this name
        gen = member.handle.run.remote(spec, item.upload, self.pool.model)
        self.pool.add_job(member, job_id)
        with self._lock:
            self._running[gen] = _Run(item, member, member.handle, job_id)

    def _ready_generators(self) -> list[Any]:
        """The running generators whose next event (or end) is here, waiting up to TICK_S for one."""
        gens = list(self._running)
        ready, _ = ray.wait(gens, num_returns=len(gens), timeout=0)
        if not ready:
            ready, _ = ray.wait(gens, num_returns=1, timeout=TICK_S)
        return ready

    def _advance(self, gen: Any) -> tuple[_File | None, ScanOutcome | None]:
        """Take one event of ``gen``: (a file to run again, an outcome), either or both None."""
        run = self._running[gen]
        item = run.file
        try:
            event = ray.get(next(gen))
        except StopIteration:
            return None, self._end(gen, ScanFailed(item.path, "internal", _NO_END, item.seconds()))
        except LOST_ERRORS as err:
            self.pool.lost(run.member, run.handle, err)
            self._end(gen, None)
            where = f"the worker running it ({run.member.name}) was lost: {first_line(err)}"
            if item.attempts >= MAX_ATTEMPTS:
                log.error("%s: %s; not retried", item.path, where)
                message = f"{where} (it was already retried once)"
                return None, ScanFailed(item.path, WORKER_LOST, message, item.seconds())
            log.warning("%s: %s; retrying it on another worker", item.path, where)
            return item, None
        except (RayTaskError, TaskCancelledError) as err:  # run() itself raised: a bug, in the actor's log
            log.error("%s: the actor's run failed: %s", item.path, err)
            message = f"internal error on the worker: {first_line(err)}"
            return None, self._end(gen, ScanFailed(item.path, "internal", message, item.seconds()))
        if isinstance(event, Finished):
            return None, self._end(gen, Scanned(item.path, event.report, item.seconds(), item.attempts))
        if isinstance(event, Failed):
            return None, self._end(gen, ScanFailed(item.path, event.code, event.message, item.seconds()))
        if isinstance(event, Stopped):  # nobody cancelled it: the actor stopped it
            message = f"stopped on the worker ({event.reason})"
            return None, self._end(gen, ScanFailed(item.path, "internal", message, item.seconds()))
        if isinstance(event, p.FrameResult):
            run.frames += 1
        return None, None

    def _end(self, gen: Any, outcome: ScanOutcome | None) -> ScanOutcome | None:
        """``gen``'s run is over: off its actor, and its bytes out of the object store unless it runs again."""
        with self._lock:
            run = self._running.pop(gen)
        self.pool.remove_job(run.member, run.job_id)
        if outcome is not None:
            run.file.upload = None
        return outcome

    def _cancel_running(self) -> None:
        """Cancel every running file and wait (at most CANCEL_GRACE_S) until their actors let go."""
        gens = list(self._running)
        for gen in gens:
            ray.cancel(gen)
        deadline = time.monotonic() + CANCEL_GRACE_S
        try:
            while gens and (left := deadline - time.monotonic()) > 0:
                ready, _ = ray.wait(gens, num_returns=len(gens), timeout=min(left, TICK_S))
                for gen in ready:
                    try:
                        ray.get(next(gen))
                    except StopIteration:
                        gens.remove(gen)
                    except Exception:  # TaskCancelledError (the usual end), or the actor died meanwhile
                        gens.remove(gen)
        finally:
            for gen in list(self._running):
                self._end(gen, None)
            if gens:
                log.warning("%d cancelled files did not stop within %.0f s", len(gens), CANCEL_GRACE_S)


_NO_END = "internal error: the worker's stream ended without a result"
