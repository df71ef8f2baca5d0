"""The Ray actor that holds one engine and runs jobs' programs on it, yielding their events as they come.

    RayBackend (front end, stream/ray_backend.py)            EngineActor (a Ray worker process, any node)
      ship_model(engine) ──ray.put(checkpoint bytes)──────▶  __init__ / load(): its own Engine from the bytes
      run.remote(spec, ray.put(upload), model) ──────────▶  run(): the upload into a temp file of its own,
                                                               job_program() (stream/programs.py) stepped,
      async for ref in gen: await ref  ◀──one object a step── each event yielded (a streaming generator)
      ray.cancel(gen) ─────────────────────────────────────▶  is_canceled() is checked every step (or the
                                                               generator is closed at its yield): the program
                                                               is closed and the temp file deleted
      finish.remote(job_id) ────────────(control group)───▶  a live program's stop(): it ends with its report

No disk is shared: the model travels as the bytes of a checkpoint (``save_checkpoint``'s format, made from
the front end's *loaded* weights, so a model card's temperature is already folded in and an untrained
model's random weights are the same), the upload as its bytes. ``ModelInfo`` travels with the model, so a
report names the checkpoint file and SHA-256 the front end loaded, not the actor's temporary copy.

Concurrency: a threaded actor with two concurrency groups. ``jobs`` (``max_jobs`` + spare threads) runs
several jobs at once, each in its own thread; their steps take turns on the one engine through a FIFO
lock (``pipeline.batching.Turns``), one step each, like LocalBackend's round robin: a short job is not stuck
behind a long one, and the engine (whose CAM hooks are not thread-safe) serves one step at a time. With
``ray_shared_batches`` ("auto": on accelerator actors; "on") a step that scores faces gives its turn up
while its faces wait for other jobs' and are scored in one shared call (``pipeline.batching.SharedBatches``,
rules S1-S4; at most ``ray_gather_ms`` of waiting). ``control`` answers
ping/load/finish/jobs at once even while every job thread is busy. A Ray generator with
``_generator_backpressure_num_objects`` pauses a job whose consumer lags (it blocks in ``yield``), which
holds no lock, so the other jobs go on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

from pipeline.batching import SharedBatches, Turns
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import ConfigError, DffError
from pipeline.models import LoadedModel, load_model, save_checkpoint
from pipeline.types import ModelInfo
from stream.backend import EVENT_QUEUE_SIZE, FINAL_EVENTS, BackendEvent, Failed, JobSpec

if TYPE_CHECKING:
    from ray.actor import ActorClass

log = logging.getLogger("dff.ray_actor")

# what a lost actor (or node) looks like from the caller: ActorDied/ActorUnavailable, a crash, OwnerDied
LOST_ERRORS = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)
LIVE_POLL_S = 0.25  # how often a live job's thread looks at its source without being woken
CONTROL_THREADS = 2  # ping/load/finish/jobs
SPARE_JOB_THREADS = 2  # a cancelled job may still finish its step while a new one starts


@dataclass(frozen=True, slots=True)
class ShippedModel:
    """A model on its way to the actors: ``blob`` is an ObjectRef to checkpoint bytes (about 110 MB for
    InceptionResnetV1 in fp32), ``info`` what the front end loaded; ``generation`` counts ``set_engine``s."""

    generation: int
    blob: Any  # ray.ObjectRef[bytes]; nested in this record, so an actor fetches it only when it needs it
    info: ModelInfo


@dataclass(frozen=True, slots=True)
class ActorFacts:
    """Where an actor runs, from its ``ready()``."""

    node_id: str  # Ray's node id (hex)
    node_ip: str
    pid: int
    device: str  # the torch device its engines run on


def ship_model(engine: Engine, generation: int) -> ShippedModel:
    """``engine``'s weights as checkpoint bytes in the object store (blocking: call in a thread). An
    ensemble is refused (ConfigError): an actor is shipped one checkpoint."""
    if engine.ensemble is not None:
        raise ConfigError("an ensemble runs on the local backend only (the Ray actors are shipped one checkpoint)")
    with tempfile.TemporaryDirectory(prefix="dff-ship-") as tmp:
        path = save_checkpoint(
            engine.model.module, Path(tmp) / "model.pth", engine.info.profile, detector_name=engine.info.detector
        )
        blob = path.read_bytes()
    return ShippedModel(generation, ray.put(blob), engine.info)


@dataclass(eq=False)
class _ActorJob:
    job_id: str
    finishing: bool  # finish() came: the program is stopped as soon as there is one
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    program: Iterator[BackendEvent] | None = None


def _ready(program: Iterator[BackendEvent]) -> bool:
    """Whether one step of ``program`` returns without waiting (a file job's always does)."""
    ready = getattr(program, "ready", None)
    return True if ready is None else bool(ready())


def _close(job_id: str, program: Iterator[BackendEvent] | None) -> None:
    if program is None:
        return
    try:
        program.close()  # type: ignore[attr-defined]
    except Exception:
        log.exception("job %s: error while closing its program", job_id)


class EngineActor:
    """One engine (per model generation) and the jobs running on it. Made a Ray actor by ``actor_class``."""

    def __init__(self, settings: Settings, model: ShippedModel | None, cpus: float) -> None:
        """``model`` None: no model yet (jobs end ``no_model``); ``cpus``: the CPUs Ray reserved for this
        actor, which is what torch may use (unless ``settings.torch_threads`` says otherwise)."""
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        import torch

        from pipeline.device import pick_device

        threads = settings.torch_threads or max(1, int(cpus))
        torch.set_num_threads(threads)
        self._settings = settings
        self._device = pick_device(settings.device)
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one model load at a time (each is ~110 MB and a few seconds)
        self._engines: dict[int, Engine] = {}
        self._users: Counter[int] = Counter()
        self._newest = -1
        self._turns = Turns()
        self._batches: dict[int, SharedBatches] = {}  # per generation, when settings.ray_shared_batches
        self._jobs: dict[str, _ActorJob] = {}
        self._finish_early: set[str] = set()  # finish() came before run() (a few ids at most)
        if model is not None:
            self._release(self._engine_for(model))

    # -- control (answered at once, even while every job thread is busy) -------------------------------------

    @ray.method(concurrency_group="control")
    def ready(self) -> ActorFacts:
        ctx = ray.get_runtime_context()
        return ActorFacts(ctx.get_node_id(), ray.util.get_node_ip_address(), os.getpid(), str(self._device))

    @ray.method(concurrency_group="control")
    def ping(self) -> int:
        """How many jobs run here (the health check)."""
        with self._lock:
            return len(self._jobs)

    @ray.method(concurrency_group="control")
    def jobs(self) -> list[str]:
        """The ids of the jobs running here."""
        with self._lock:
            return sorted(self._jobs)

    @ray.method(concurrency_group="control")
    def load(self, model: ShippedModel) -> None:
        """Open ``model`` now (``set_engine``), so the next job does not wait for it; older engines are
        closed once no job uses them."""
        self._release(self._engine_for(model))

    @ray.method(concurrency_group="control")
    def finish(self, job_id: str) -> None:
        """End a live job now (its program's ``stop()``): it then yields its report. A job whose ``run`` has
        not started (or has no program yet) is stopped as soon as it has one."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                self._finish_early.add(job_id)
                return
            job.finishing = True
            program = job.program
        stop = getattr(program, "stop", None)
        if stop is not None:
            stop()

    # -- jobs -------------------------------------------------------------------------------------------------

    @ray.method(concurrency_group="jobs", _generator_backpressure_num_objects=EVENT_QUEUE_SIZE)
    def run(
        self, spec: JobSpec, upload: bytes | None, model: ShippedModel | None, finish: bool = False
    ) -> Iterator[BackendEvent]:
        """The job's events, one per step, ending with its final event. ``spec.path`` is the upload's bare
        name (None for a live job) and ``upload`` its bytes; the program is ``stream.programs.job_program``.
        ``finish``: a live job's ``finish`` came before it ran: it stops at once (and reports)."""
        from stream.programs import job_program

        ctx = ray.get_runtime_context()
        job = _ActorJob(spec.job_id, finish)
        with self._lock:
            job.finishing |= spec.job_id in self._finish_early
            self._finish_early.discard(spec.job_id)
            self._jobs[spec.job_id] = job
        engine: Engine | None = None
        tmp: str | None = None
        try:
            try:
                engine = self._engine_for(model) if model is not None else None
            except DffError as err:  # a model that loads on the front end but not here (e.g. out of memory)
                yield Failed(err.code, f"this worker could not open the model: {err}")
                return
            if upload is not None:
                assert spec.path is not None, "an upload has its name"
                tmp = tempfile.mkdtemp(prefix="dff-job-")
                path = Path(tmp) / spec.path.name
                path.write_bytes(upload)
                spec = dataclasses.replace(spec, path=path)
            del upload  # the bytes are on disk now; a long job need not hold them
            step = self._stepper(model.generation if model is not None else None)
            program = job_program(spec, engine, job.wake.set, settings=self._settings)
            with self._lock:
                job.program, finishing = program, job.finishing
            stop = getattr(program, "stop", None)
            if finishing and stop is not None:
                stop()
            while True:
                while True:  # a live job waits here, holding no turn, until its next step will not block
                    job.wake.clear()
                    if ctx.is_canceled() or _ready(job.program):
                        break
                    job.wake.wait(LIVE_POLL_S)
                if ctx.is_canceled():
                    return  # the caller hears TaskCancelledError; ``finally`` cleans up
                with step():
                    event = self._step(spec.job_id, job.program)
                yield event
                if isinstance(event, FINAL_EVENTS):
                    return
        finally:
            _close(spec.job_id, job.program)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._jobs.pop(spec.job_id, None)
            if engine is not None:
                self._release(engine)

    @staticmethod
    def _step(job_id: str, program: Iterator[BackendEvent]) -> BackendEvent:
        """One event of ``program``; a program that ends without a final event or raises is a bug: it is
        logged here (the actor's log) and the job ends ``internal``, as on LocalBackend."""
        try:
            return next(program)
        except StopIteration:
            log.error("job %s: the program ended without a final event", job_id)
        except Exception:
            log.exception("job %s: the program raised", job_id)
        return Failed("internal", f"internal server error (logged as job {job_id})")

    # -- engines ----------------------------------------------------------------------------------------------

    def _stepper(self, generation: int | None) -> Callable[[], AbstractContextManager[None]]:
        """What a job's step holds: its engine's ``SharedBatches.step`` (the turn, counted for batching),
        else the bare turn."""
        with self._lock:
            shared = self._batches.get(generation) if generation is not None else None
        return shared.step if shared is not None else (lambda: self._turns)

    def _engine_for(self, model: ShippedModel) -> Engine:
        """The engine of ``model``'s generation, opened from its bytes the first time; counted as used (so
        ``_close_unused`` leaves it open: the look-up and the count are one step under the lock)."""
        generation = model.generation
        engine = self._use(generation)
        if engine is None:
            with self._load_lock:  # one load at a time; a second job of that generation finds it loaded
                engine = self._use(generation)
                if engine is None:
                    engine = self._open(model)
                    with self._lock:
                        self._engines[generation] = engine
                        self._users[generation] += 1
        with self._lock:
            self._newest = max(self._newest, generation)
        self._close_unused()
        return engine

    def _use(self, generation: int) -> Engine | None:
        with self._lock:
            engine = self._engines.get(generation)
            if engine is not None:
                self._users[generation] += 1
            return engine

    def _open(self, model: ShippedModel) -> Engine:
        blob: bytes = ray.get(model.blob)
        with tempfile.TemporaryDirectory(prefix="dff-model-") as tmp:
            path = Path(tmp) / "model.pth"
            path.write_bytes(blob)
            del blob
            loaded = load_model(path, self._device, apply_card=False)  # the card was folded in already
        info = dataclasses.replace(model.info, device=str(self._device))
        log.info("model %s (generation %d) open on %s", info.name, model.generation, info.device)
        engine = Engine.from_model(LoadedModel(loaded.module, info), self._settings)
        mode = self._settings.ray_shared_batches
        if mode == "off" or (mode == "auto" and self._device.type == "cpu"):
            return engine
        shared = SharedBatches(
            engine.classifier.score,
            self._turns,
            max_faces=self._settings.classify_batch,
            gather_s=self._settings.ray_gather_ms / 1000,
        )
        with self._lock:
            self._batches[model.generation] = shared
        return dataclasses.replace(engine, scorer=shared.score)

    def _release(self, engine: Engine) -> None:
        with self._lock:
            for generation, open_engine in self._engines.items():
                if open_engine is engine:
                    self._users[generation] -= 1
        self._close_unused()

    def _close_unused(self) -> None:
        with self._lock:
            old = [g for g in self._engines if g != self._newest and self._users[g] <= 0]
            closing = [self._engines.pop(g) for g in old]
            for g in old:
                self._batches.pop(g, None)
        for engine in closing:
            engine.close()


def actor_class(max_jobs: int) -> ActorClass:
    """``EngineActor`` as a Ray actor class whose ``jobs`` group has room for ``max_jobs`` jobs at once
    (concurrency groups cannot be set in ``.options()``, so the class is made per pool)."""
    groups = {"control": CONTROL_THREADS, "jobs": max_jobs + SPARE_JOB_THREADS}
    return ray.remote(concurrency_groups=groups)(EngineActor)


def first_line(err: BaseException) -> str:
    """An exception's first line, for logs and for people (Ray's messages run to many lines)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
