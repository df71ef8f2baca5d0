"""The service behind the ASGI app: the store, the backend, the job table, the current model, and each
job's program.

The program (``analysis_events``) runs on the backend's side of the seam (stream/backend.py): it is where
analysis events become wire-ready records (overlays rendered to base64 JPEG there) and where the
pipeline's error tree becomes the protocol's ``error`` codes (``err.code``). No traceback ever reaches a
client: a program that raises anything else is logged by the backend and ends as ``internal``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import ConfigError, ModelError, NoModel
from pipeline.models import find_checkpoint
from pipeline.sources.live_open import check_url
from pipeline.types import (
    SampleMode,
    SamplingPolicy,
    Strategy,
)
from stream import protocol as p
from stream.backend import AnalysisBackend
from stream.jobs import Job, JobTable
from stream.live_program import LiveRequest
from stream.programs import NO_MODEL_MESSAGE, JobRequest, job_program, model_summary
from stream.store import Store
from stream.stores import open_store
from stream.worker import LocalBackend

log = logging.getLogger("dff.service")

__all__ = ["NO_MODEL_MESSAGE", "JobRequest", "Service", "job_program", "resolve_live", "resolve_options"]

ACTIVE_MODEL_KEY = "active_model"
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:]")
MAX_NAME_BYTES = 200  # UTF-8 bytes of a stored file name (the disk limit is 255 bytes, not characters)
MAX_SUFFIX_BYTES = 16  # a longer "extension" is not one: it is cut with the rest
MAX_COUNT = 100_000  # sample_count a request may ask for when the server has no frame cap (a list per target)


def _check_bounds(options: p.Options, settings: Settings) -> None:
    """A request may lower the server's frame cap, never lift it: ConfigError naming the limit."""
    cap = settings.max_frames
    if cap is not None and options.max_frames is not None and options.max_frames > cap:
        raise ConfigError(f"max_frames {options.max_frames} is over this server's limit of {cap} (DFF_MAX_FRAMES)")
    count_cap = cap if cap is not None else MAX_COUNT
    if options.count is not None and options.count > count_cap:
        raise ConfigError(f"count {options.count} is over this server's limit of {count_cap} frames")


def resolve_options(options: p.Options, settings: Settings) -> JobRequest:
    """Protocol options + Settings defaults -> JobRequest. Raises ConfigError for an invalid combination or
    one that asks for more frames than the server's ``max_frames`` (an omitted max_frames is the server's)."""
    _check_bounds(options, settings)
    try:
        policy = SamplingPolicy(
            SampleMode(options.sample_mode) if options.sample_mode else settings.sample_mode,
            options.every_s if options.every_s is not None else settings.every_s,
            options.count if options.count is not None else settings.sample_count,
            options.max_frames if options.max_frames is not None else settings.max_frames,
        )
    except ValueError as err:
        raise ConfigError(f"invalid sampling options: {err}") from None
    return JobRequest(
        policy=policy,
        strategy=Strategy(options.strategy) if options.strategy else settings.strategy,
        threshold=options.threshold,
        overlays=options.overlays,
    )


def resolve_live(options: p.Options, settings: Settings, url: str | None, name: str) -> JobRequest:
    """A ``watch`` (``url``) or ``push`` (``url`` None) request resolved against the Settings. Raises
    UnsupportedSource for a URL that will never be opened, ConfigError for invalid options."""
    if options.sample_mode is not None or options.every_s is not None or options.count is not None:
        raise ConfigError("a live session samples by rate_hz (frames per second), not by sample_mode/every_s/count")
    if options.max_frames is not None:
        raise ConfigError("a live session has no frame cap; send stop (or close the connection) to end it")
    try:
        live_options = settings.live_options(options.rate_hz)
    except ValueError as err:
        raise ConfigError(f"invalid live options: {err}") from None
    if url is not None:
        checked = check_url(url)
        live = LiveRequest(checked.url, checked.name, live_options)
    else:
        live = LiveRequest(None, safe_file_name(name), live_options)
    return JobRequest(
        policy=SamplingPolicy(SampleMode.EVERY_S, live_options.every_s, 1, None),
        strategy=Strategy(options.strategy) if options.strategy else settings.strategy,
        threshold=options.threshold,
        overlays=options.overlays,
        live=live,
    )


def _cut_utf8(text: str, limit_bytes: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit_bytes`` of UTF-8, never inside a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit_bytes:
        return text
    raw = raw[len(raw) - limit_bytes :] if keep_end else raw[:limit_bytes]
    return raw.decode("utf-8", errors="ignore")  # drops the partial character at the cut


def safe_file_name(name: str) -> str:
    """The client's file name reduced to a harmless base name (no directories, no control characters),
    at most MAX_NAME_BYTES of UTF-8 with its extension kept (file systems count bytes, not characters)."""
    base = _UNSAFE_NAME_CHARS.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    # lone surrogates (legal in JSON text, not in UTF-8) cannot be a file name: replace them
    base = base.encode("utf-8", errors="replace").decode("utf-8")
    if base in ("", ".", ".."):
        return "upload"
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem or len(suffix.encode("utf-8")) > MAX_SUFFIX_BYTES:
        stem, suffix = base, ""
    else:
        suffix = "." + suffix
    return _cut_utf8(stem, MAX_NAME_BYTES - len(suffix.encode("utf-8"))).rstrip() + suffix


class Service:
    """Everything the routes share. ``start()``/``stop()`` run in the app's lifespan."""

    def __init__(self, settings: Settings, *, allow_untrained: bool = False) -> None:
        self.settings = settings
        self.allow_untrained = allow_untrained
        self.uploads_dir = settings.data_dir / "uploads"
        self.incoming_dir = settings.resolved_models_dir / ".incoming"  # model uploads until validated
        self.status: p.ServerStatus = "no_model"
        self.model: p.ModelSummary | None = None
        self.model_lock = asyncio.Lock()
        self._store: Store | None = None
        self._local: AnalysisBackend | None = None  # LocalBackend, or RayBackend with DFF_BACKEND=ray
        self._jobs: JobTable | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the service is not started")
        return self._store

    @property
    def backend(self) -> AnalysisBackend:
        if self._local is None:
            raise RuntimeError("the service is not started")
        return self._local

    @property
    def jobs(self) -> JobTable:
        if self._jobs is None:
            raise RuntimeError("the service is not started")
        return self._jobs

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1024 * 1024)

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (marking jobs a dead process left as interrupted), load the model, start the backend."""
        self._store = await asyncio.to_thread(open_store, self.settings)
        recovered = await asyncio.to_thread(self.store.recover)
        if recovered:
            log.warning("%d job(s) from a previous run were marked interrupted", recovered)
        if not self.settings.keep_uploads:  # files of a process that died mid-job: privacy first
            await asyncio.to_thread(shutil.rmtree, self.uploads_dir, True)
        # half-received model uploads of a process that died mid-PUT (never a usable checkpoint)
        await asyncio.to_thread(shutil.rmtree, self.incoming_dir, True)
        engine = await asyncio.to_thread(self._open_startup_engine)
        self._local = await asyncio.to_thread(self._make_backend, engine)
        self._jobs = JobTable(self._local, self._store, watch_queue_bytes=self.settings.watch_queue_kib * 1024)
        self._set_model(engine)

    def _make_backend(self, engine: Engine | None) -> AnalysisBackend:
        """``DFF_BACKEND``: the in-process worker (the default), or actors on a Ray cluster (imported only then)."""
        caps = dict(
            max_jobs=self.settings.max_jobs,
            max_queue=self.settings.max_queue,
            max_per_client=self.settings.max_jobs_per_client,
            max_live=self.settings.max_live_jobs,
        )
        if self.settings.backend == "ray":
            try:
                from stream.ray_backend import RayBackend
            except ImportError as err:
                raise ConfigError(f"DFF_BACKEND=ray needs Ray: pip install 'deepfake-forensics[ray]' ({err})") from None
            return RayBackend(self.settings, engine, **caps)
        return LocalBackend(engine, partial(job_program, settings=self.settings), **caps)

    def _open_startup_engine(self) -> Engine | None:
        """Explicit checkpoint, else the model activated last time, else the newest file, else untrained
        (only when allowed), else None: the server runs and answers ``no_model``."""
        settings = self.settings
        models_dir = settings.resolved_models_dir
        try:
            if settings.checkpoint is None:
                active = self.store.get_meta(ACTIVE_MODEL_KEY)
                path = models_dir / active if active and (models_dir / active).is_file() else None
                settings = dataclasses.replace(settings, checkpoint=path or find_checkpoint(None, models_dir))
            return Engine.open(settings)
        except NoModel as err:
            if self.allow_untrained:
                log.warning("no checkpoint; scoring with RANDOM weights (--allow-untrained)")
                return Engine.open(dataclasses.replace(self.settings, checkpoint=None), allow_untrained=True)
            log.warning("starting without a model: %s", err)
            return None
        except ModelError as err:  # a broken file must not keep the server (and its model admin API) down
            log.error("starting without a model: %s", err)
            return None

    def _set_model(self, engine: Engine | None) -> None:
        self.model = None if engine is None else model_summary(engine.info, engine.detector_infos)
        if self.status != "shutting_down":
            self.status = "ready" if engine is not None else "no_model"

    async def drain(self, grace_s: float, abort: Callable[[], bool] = lambda: False) -> None:
        """Graceful shutdown: take no new jobs, end live sessions (each with its report), let running jobs
        finish for up to ``grace_s``, then stop the rest as ``interrupted`` (stored as such, clients told),
        and let clients receive their last message."""
        self.status = "shutting_down"
        if self._local is None:
            return
        backend = self.backend
        backend.stop_accepting()
        for job in self.jobs.all():  # a live session never ends by itself: end it now, with its report
            job.finish()
        deadline = time.monotonic() + grace_s
        while not await backend.drain(0.2):
            if time.monotonic() >= deadline or abort():
                cancelled = backend.cancel_all("interrupted")
                log.warning("shutdown: %d job(s) interrupted after %.1f s", cancelled, grace_s)
                await backend.drain(5.0)
                break
        await self.jobs.idle(5.0)  # every job's end stored and published
        for _ in range(40):  # up to 2 s for the connections to send their final message and detach
            if not any(job.watchers for job in self.jobs.all()):
                break
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._local is not None:
            await self._local.aclose()
        if self._jobs is not None:
            await self._jobs.idle(5.0)
        if self._store is not None:
            await asyncio.to_thread(self.store.close)

    # -- jobs ----------------------------------------------------------------------------------------------

    def new_job(self, name: str, request: JobRequest, client: str | None = None, feed: object = None) -> Job:
        """``client``: the uploader's IP address (the per-client cap's key); ``feed``: a push job's source."""
        job_id = secrets.token_urlsafe(16)  # 128 random bits: not guessable, not a path
        return self.jobs.new(
            job_id,
            name if request.live is not None else safe_file_name(name),
            self.uploads_dir / job_id,
            request,
            keep_upload=self.settings.keep_uploads,
            client=client,
            feed=feed,
        )

    # -- models --------------------------------------------------------------------------------------------

    def open_engine(self, path: Path) -> Engine:
        """Load ``path`` into a new Engine (blocking; call in a thread). Raises the pipeline's ModelError."""
        return Engine.open(dataclasses.replace(self.settings, checkpoint=path, ensemble=()))

    async def activate(self, name: str, path: Path) -> p.ModelSummary:
        """Load and switch to ``path``; jobs already running finish on the engine they started with."""
        async with self.model_lock:
            engine = await asyncio.to_thread(self.open_engine, path)
            assert self._local is not None
            await asyncio.to_thread(self._local.set_engine, engine)  # a Ray backend reloads its actors
            await asyncio.to_thread(self.store.set_meta, ACTIVE_MODEL_KEY, name)
            self._set_model(engine)
            log.info("model %s is active (sha256 %s)", name, engine.info.sha256)
            assert self.model is not None
            return self.model
