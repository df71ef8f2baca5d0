"""The pool of EngineActors (stream/ray_actor.py) on the front end: starting them, watching them, replacing
the dead, shipping them models. Used by ``RayBackend`` (stream/ray_backend.py).

    slot ──spawn──▶ starting ──ready()──▶ alive ──dies (a job's generator fails, or a ping)──▶ restarting
                       ▲                                                                          │
                       └───────────── a new actor, after BACKOFF_S[deaths in a row] ──────────────┘
                                      (BACKOFF_S exhausted: dead, given up)

Actors are made with ``max_restarts=0``: Ray does not restart them, the pool does, because a new actor must
load the *current* model (after ``set_model``), not the one the dead actor was created with. A thread
(``dff-ray-pool``) looks at every slot each ``TICK_S``: it creates replacements when due, sees
``ready()`` answer (the actor opened its model) and pings alive actors every ``HEALTH_PERIOD_S``, so an actor
that dies while idle is replaced too. Every read of Ray state there is ``ray.wait(..., timeout=0)``: the
thread never blocks on one actor. ``on_change`` tells the backend that an actor came up or died.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from pipeline.config import Settings
from pipeline.errors import ConfigError
from stream.ray_actor import LOST_ERRORS, ActorFacts, ShippedModel, actor_class, first_line, ship_model

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger("dff.ray_pool")

START_TIMEOUT_S = 120.0  # the backend's constructor waits this long for the pool's first actor
START_REST_S = 30.0  # ... and this much longer for the others (the pool brings up late ones anyway)
LOAD_TIMEOUT_S = 300.0  # set_engine waits this long for the actors to open the new model
TICK_S = 0.2  # how often the pool's thread looks at the actors
HEALTH_PERIOD_S = 2.0  # an alive actor is pinged this often
BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)  # before each replacement of a slot whose actors keep dying
STATES = ("starting", "alive", "restarting", "dead")  # dead: BACKOFF_S ran out, the slot is given up


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One actor of the pool, for /healthz: ``state`` one of ``STATES``; ``jobs`` running on it;
    ``restarts`` how often its slot got a new actor; where it runs (the last actor's, while restarting)."""

    name: str
    state: str
    jobs: int
    restarts: int
    node_id: str | None
    node_ip: str | None
    device: str | None
    pid: int | None
    error: str | None  # why the last actor died

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(eq=False)
class Member:
    """A slot of the pool and the actor in it (replaced when it dies). Guarded by the pool's lock."""

    index: int
    handle: Any  # ray.actor.ActorHandle
    ready: Any  # ObjectRef[ActorFacts] until the actor answered; None after (or while it waits to be replaced)
    state: str = "starting"
    facts: ActorFacts | None = None
    jobs: set[str] = dataclasses.field(default_factory=set)
    restarts: int = 0
    failures: int = 0  # actors of this slot that died in a row
    error: str | None = None
    replace_at: float | None = None
    ping: Any = None
    ping_sent_s: float = 0.0

    @property
    def name(self) -> str:
        return f"engine-{self.index}"


class Pool:
    """``settings.ray_actors`` EngineActors and a thread that watches them (see the module docstring).
    ``on_change()`` is called from that thread when an actor came up or died."""

    def __init__(self, settings: Settings, max_jobs: int, on_change: Callable[[], None]) -> None:
        self._settings = settings
        self._cls = actor_class(max_jobs)
        self._on_change = on_change
        self._cond = threading.Condition()
        self._members: list[Member] = []
        self._model: ShippedModel | None = None
        self._generation = 0
        self._options: dict[str, Any] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._watch, name="dff-ray-pool", daemon=True)

    @property
    def model(self) -> ShippedModel | None:
        """The model jobs admitted now run with."""
        return self._model

    def start(self, engine: Engine | None) -> None:
        """Ship the model, start the actors (one GPU each when the cluster has GPUs, else
        ``ray_actor_cpus`` CPUs; spread over the nodes), wait for the first. Blocking."""
        settings = self._settings
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1 and settings.device != "cpu"
        self._options = dict(
            num_cpus=settings.ray_actor_cpus,
            num_gpus=1 if use_gpu else 0,
            max_restarts=0,  # the pool replaces dead actors itself, with the current model
            scheduling_strategy="SPREAD",
        )
        self._model = None if engine is None else ship_model(engine, 0)
        with self._cond:
            self._members = [Member(i, *self._spawn()) for i in range(settings.ray_actors)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(m.state == "alive" for m in self._members):
            pending = [m.ready for m in self._members if m.ready is not None]
            left = deadline - time.monotonic()
            if not pending or left <= 0:  # every actor failed, or none found room
                per_actor = "1 GPU" if use_gpu else f"{settings.ray_actor_cpus:g} CPU (DFF_RAY_ACTOR_CPUS)"
                errors = sorted({m.error for m in self._members if m.error}) or [
                    f"none came up within {START_TIMEOUT_S:.0f} s; does the cluster have room for an actor with "
                    f"{per_actor}? Its resources: {ray.cluster_resources()}"
                ]
                raise ConfigError(f"no Ray actor for the analysis started: {'; '.join(errors)}")
            ray.wait(pending, num_returns=1, timeout=left)
            for member in list(self._members):
                self._tend(member, time.monotonic())
        pending = [m.ready for m in self._members if m.ready is not None]
        if pending:  # the others get a little longer; the pool's thread brings up late ones anyway
            ray.wait(pending, num_returns=len(pending), timeout=START_REST_S)
            for member in list(self._members):
                self._tend(member, time.monotonic())
        self._thread.start()

    def _spawn(self) -> tuple[Any, Any]:
        handle = self._cls.options(**self._options).remote(self._settings, self._model, self._settings.ray_actor_cpus)
        return handle, handle.ready.remote()

    # -- for the backend (event loop); each takes the lock briefly --------------------------------------------

    def pick(self) -> Member | None:
        """The alive actor with the fewest jobs, or None."""
        with self._cond:
            alive = [m for m in self._members if m.state == "alive"]
            return min(alive, key=lambda m: (len(m.jobs), m.index)) if alive else None

    def add_job(self, member: Member, job_id: str) -> None:
        with self._cond:
            member.jobs.add(job_id)

    def remove_job(self, member: Member, job_id: str) -> None:
        with self._cond:
            member.jobs.discard(job_id)

    def lost(self, member: Member, handle: Any, err: BaseException) -> None:
        """A job saw ``member``'s actor ``handle`` die: replace it (unless that is done already)."""
        self._died(member, handle, err)

    def states(self) -> tuple[WorkerState, ...]:
        with self._cond:
            return tuple(
                WorkerState(
                    m.name,
                    m.state,
                    len(m.jobs),
                    m.restarts,
                    m.facts.node_id if m.facts else None,
                    m.facts.node_ip if m.facts else None,
                    m.facts.device if m.facts else None,
                    m.facts.pid if m.facts else None,
                    m.error,
                )  # fmt: skip
                for m in self._members
            )

    # -- blocking, from a thread ----------------------------------------------------------------------------------

    def set_model(self, engine: Engine) -> None:
        """Ship ``engine``'s model, have every alive actor open it, then make it current."""
        with self._cond:
            self._generation += 1
            generation = self._generation
        shipped = ship_model(engine, generation)
        with self._cond:
            handles = [m.handle for m in self._members if m.state == "alive"]
        refs = [handle.load.remote(shipped) for handle in handles]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=LOAD_TIMEOUT_S) if refs else ([], [])
        for ref in done:
            try:
                ray.get(ref)
            except Exception as err:  # a dead actor is replaced (with this model); a job opens it lazily
                log.warning("an actor did not open the new model: %s", first_line(err))
        with self._cond:
            self._model = shipped

    def actor_jobs(self, timeout_s: float) -> list[list[str]]:
        with self._cond:
            handles = [m.handle for m in self._members if m.state == "alive"]
        return ray.get([h.jobs.remote() for h in handles], timeout=timeout_s)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            members = list(self._members)
        if self._thread.is_alive():
            self._thread.join(10.0)
        for member in members:
            try:
                ray.kill(member.handle, no_restart=True)
            except Exception as err:  # already gone
                log.debug("%s: kill: %s", member.name, first_line(err))

    # -- the pool's thread ---------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(TICK_S)
                if self._closing:
                    return
                members = list(self._members)
            now = time.monotonic()
            changed = False
            for member in members:
                try:
                    changed |= self._tend(member, now)
                except Exception:  # never let the watcher die: the pool would stop healing
                    log.exception("%s: looking after it failed", member.name)
            if changed:
                self._on_change()

    def _tend(self, m: Member, now: float) -> bool:
        """One look at ``m``: replace, see it come up, ping it. True when it came up or died."""
        with self._cond:
            state, handle, ready, ping = m.state, m.handle, m.ready, m.ping
            due = m.replace_at is not None and now >= m.replace_at
        if state == "restarting" and ready is None and due:
            handle, ready = self._spawn()
            with self._cond:
                m.handle, m.ready, m.replace_at, m.ping = handle, ready, None, None
                m.restarts += 1
            log.warning("%s: a new actor replaces the lost one (restart %d)", m.name, m.restarts)
            return False
        if ready is not None:
            if not ray.wait([ready], timeout=0)[0]:
                return False
            try:
                facts: ActorFacts = ray.get(ready)
            except Exception as err:
                return self._died(m, handle, err)
            with self._cond:
                if m.handle is handle:
                    m.facts, m.ready, m.state, m.failures = facts, None, "alive", 0
            log.info(
                "%s: alive on node %s (%s, pid %d, %s)",
                m.name,
                facts.node_id[:12],
                facts.node_ip,
                facts.pid,
                facts.device,
            )
            return True
        if state != "alive":
            return False
        if ping is None:
            if now - m.ping_sent_s >= HEALTH_PERIOD_S:
                with self._cond:
                    m.ping, m.ping_sent_s = handle.ping.remote(), now
            return False
        if not ray.wait([ping], timeout=0)[0]:
            return False
        with self._cond:
            m.ping = None
        try:
            ray.get(ping)
        except LOST_ERRORS as err:
            return self._died(m, handle, err)
        return False

    def _died(self, m: Member, handle: Any, err: BaseException) -> bool:
        """``m``'s actor ``handle`` is gone: kill it for sure, replace it after a backoff. False when that
        actor had been replaced already."""
        with self._cond:
            if m.handle is not handle or m.state in ("dead",) or (m.state == "restarting" and m.ready is None):
                return False
            m.failures += 1
            m.error = first_line(err)
            m.ready = m.ping = None
            if m.failures > len(BACKOFF_S):
                m.state, m.replace_at = "dead", None
            else:
                m.state, m.replace_at = "restarting", time.monotonic() + BACKOFF_S[m.failures - 1]
            self._cond.notify_all()
        log.error("%s: its actor died (%s); %s", m.name, m.error, "replacing it" if m.state != "dead" else "giving up")
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # it is gone already
            pass
        return True
