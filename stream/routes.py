"""The HTTP API on the same port as the websocket: health, reports, models. JSON in and out.

    GET    /healthz                      model loaded?, device, queue depth (no auth: for orchestrators)
    GET    /v1/reports?limit=&before=    newest first; ``next`` is the cursor for the following page
    GET    /v1/reports/{id}              the report (schema dff.report/1), exactly what ``done`` carried
    GET    /v1/reports/{id}.csv          one row per face
    GET    /v1/reports/{id}/frames       per-frame scores (also for interrupted/cancelled jobs)
    DELETE /v1/reports/{id}              204; 409 while the job runs
    GET    /v1/models                    checkpoint files and the active model
    PUT    /v1/models/{name}             upload a checkpoint (validated by loading it); admin
    POST   /v1/models/{name}/activate    switch to it; running jobs finish on their model; admin

Errors are ``{"error": {"code", "message"}}`` with a fitting status; never a traceback. Every request has
passed stream/guard.py first (Host, and Origin on PUT/POST/DELETE).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import __version__
from pipeline.cards import list_models as model_entries
from pipeline.device import pick_device
from pipeline.errors import ModelError
from pipeline.models import CHECKPOINT_SUFFIXES, file_sha256, load_model
from pipeline.report import report_from_dict, report_to_csv
from stream import protocol as p
from stream.auth import admin_ok, token_ok
from stream.service import Service

log = logging.getLogger("dff.routes")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_JOB_ID = re.compile(p.JOB_ID_PATTERN)
PAGE_DEFAULT, PAGE_MAX = 20, 100
MAX_CURSOR = 2**63 - 1  # cursors are SQLite rowids (signed 64-bit); a larger one is not a cursor
Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers or None)


def _service(request: Request) -> Service:
    return request.app.state.service


def authorized(handler: Handler) -> Handler:
    """401 unless the bearer token (when configured) is present."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        if not token_ok(request.headers, _service(request).settings.token):
            return error(401, "unauthorized", "a valid bearer token is required", **{"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return wrapper


def admin(handler: Handler) -> Handler:
    """403 unless this request may manage models (see stream/auth.py)."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        settings = _service(request).settings
        client = request.client.host if request.client else None
        ok, why = admin_ok(request.headers, client, settings)
        if not ok:
            status = 401 if settings.token else 403
            return error(status, "unauthorized" if settings.token else "forbidden", why)
        return await handler(request)

    return wrapper


async def healthz(request: Request) -> Response:
    service = _service(request)
    depth = service.backend.depth()
    body: dict[str, Any] = {
        "status": "ok" if service.status == "ready" else service.status,
        "model": None if service.model is None else service.model.to_json(),
        "device": service.settings.device if service.model is None else service.model.device,
        "queue": depth.to_json(),
        "version": __version__,
        "protocol": p.PROTOCOL_VERSION,
    }
    workers = getattr(depth, "workers", None)  # a scale-out backend's actors (stream/ray_backend.py's RayDepth)
    if workers is not None:
        body["backend"] = service.settings.backend
        body["workers"] = [worker.to_json() for worker in workers]
    return JSONResponse(body, status_code=503 if service.status == "shutting_down" else 200)


def _query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    """A decimal integer query parameter in ``low..high`` (or ``default`` when absent); ValueError if not."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:  # no sign, space, "_", "1e3", NaN or bigint
        raise ValueError(name)
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(name)
    return value


def _job_id(request: Request) -> str | None:
    job_id = request.path_params["job_id"]
    return job_id if _JOB_ID.match(job_id) else None


def _not_found(job_id: str | None) -> JSONResponse:
    return error(404, "unknown_job", f"no report with id {job_id!r}" if job_id else "not a report id")


@authorized
async def list_reports(request: Request) -> Response:
    try:
        limit = _query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        cursor = _query_int(request, "before", None, 1, MAX_CURSOR)
    except ValueError:
        return error(400, "bad_request", f"limit must be 1..{PAGE_MAX} and before a cursor from a previous page")
    assert limit is not None
    rows, following = await asyncio.to_thread(_service(request).store.list_jobs, limit, cursor)
    return JSONResponse({"reports": [r.to_json() for r in rows], "next": None if following is None else str(following)})


async def _report_or_error(request: Request) -> dict[str, Any] | JSONResponse:
    job_id = _job_id(request)
    service = _service(request)
    row = await asyncio.to_thread(service.store.job, job_id) if job_id else None
    if row is None:
        return _not_found(job_id)
    if row.status != "done":
        return error(409, "not_done", f"job {job_id} is {row.status}; it has no report (see /frames)")
    report = await asyncio.to_thread(service.store.report, row.id)
    return report if report is not None else _not_found(job_id)


@authorized
async def get_report(request: Request) -> Response:
    if request.method == "DELETE":
        return await _delete_report(request)
    report = await _report_or_error(request)
    return report if isinstance(report, JSONResponse) else JSONResponse(report)


@authorized
async def get_report_csv(request: Request) -> Response:
    report = await _report_or_error(request)
    if isinstance(report, JSONResponse):
        return report
    parsed = report_from_dict(report)
    if parsed.session is not None:  # a live report keeps no frame rows: they are in the store, as they came
        rows = await asyncio.to_thread(_service(request).store.frame_page, request.path_params["job_id"], 0, 1 << 62)
        parsed = dataclasses.replace(parsed, frames=tuple(rows))
    text = report_to_csv(parsed)
    disposition = f'attachment; filename="{request.path_params["job_id"]}.csv"'
    return Response(text, media_type="text/csv", headers={"Content-Disposition": disposition})


@authorized
async def get_frames(request: Request) -> Response:
    job_id = _job_id(request)
    store = _service(request).store
    row = await asyncio.to_thread(store.job, job_id) if job_id else None
    if row is None:
        return _not_found(job_id)
    frames = await asyncio.to_thread(store.frames, row.id)
    return JSONResponse({"id": row.id, "status": row.status, "frames": frames})


async def _delete_report(request: Request) -> Response:
    job_id = _job_id(request)
    service = _service(request)
    live = service.jobs.get(job_id) if job_id else None
    if live is not None and not live.finished:
        return error(409, "running", f"job {job_id} is still running; it can be deleted once it ends")
    if not job_id or not await asyncio.to_thread(service.store.delete, job_id):
        return _not_found(job_id)
    return Response(status_code=204)


def _model_path(request: Request) -> tuple[str, Path] | JSONResponse:
    name = request.path_params["name"]
    if not MODEL_NAME.match(name) or not name.lower().endswith(CHECKPOINT_SUFFIXES) or ".." in name:
        return error(400, "bad_name", "a model name is letters, digits, '.', '_', '-', ending in .pth, .pt or .h5")
    return name, _service(request).settings.resolved_models_dir / name


@authorized
async def list_models(request: Request) -> Response:
    service = _service(request)
    # hashes every file (to tell whether its card still describes it): off the event loop
    entries = await asyncio.to_thread(model_entries, service.settings.resolved_models_dir)
    active = service.model.sha256 if service.model else None
    return JSONResponse(
        {
            "active": None if service.model is None else service.model.to_json(),
            "models": [
                {
                    "name": e.path.name,
                    "size_bytes": e.size_bytes,
                    "sha256": e.sha256,
                    "active": service.model is not None and e.path.name == service.model.name and e.sha256 == active,
                    "card": e.card_facts(),
                    "card_status": e.card_status,
                }
                for e in sorted(entries, key=lambda e: e.path.name)
            ],
        }
    )


async def _drained(request: Request, cap: int, response: Response) -> Response:
    """Read (and drop) the body before answering: a client still sending when the server answers and
    closes sees a connection reset instead of the answer. Only for authorised requests, up to ``cap``."""
    size = 0
    with contextlib.suppress(ClientDisconnect):
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                break
    return response


@admin
async def put_model(request: Request) -> Response:
    """Stream the body to a temporary file, load it with ``load_model`` (the validation), then move it in."""
    service = _service(request)
    checked = _model_path(request)
    if isinstance(checked, JSONResponse):
        return await _drained(request, service.max_upload_bytes, checked)
    name, final = checked
    if final.exists():
        return await _drained(request, service.max_upload_bytes, error(409, "exists", f"model {name} exists"))
    incoming = service.incoming_dir / secrets.token_hex(8)  # not scanned by find_checkpoint; cleaned at start
    incoming.mkdir(parents=True)
    tmp = incoming / name
    cap = service.max_upload_bytes
    try:
        size = 0
        with tmp.open("wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    return error(413, "too_large", f"a checkpoint may be at most {cap} bytes (DFF_MAX_UPLOAD_MB)")
                fh.write(chunk)
        if size == 0:
            return error(400, "empty_file", "the request body is empty")
        try:
            await asyncio.to_thread(load_model, tmp, pick_device("cpu"))
        except ModelError as err:
            return error(422, err.code, str(err))
        sha = await asyncio.to_thread(file_sha256, tmp)
        if final.exists():
            return error(409, "exists", f"model {name} exists; upload under a new name")
        tmp.replace(final)
        log.info("model %s installed (%d bytes, sha256 %s)", name, size, sha)
        return JSONResponse({"name": name, "size_bytes": size, "sha256": sha}, status_code=201)
    except ClientDisconnect:
        return Response(status_code=400)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


@admin
async def activate_model(request: Request) -> Response:
    service = _service(request)
    checked = _model_path(request)
    if isinstance(checked, JSONResponse):
        return checked
    name, path = checked
    if not path.is_file():
        return error(404, "unknown_model", f"no model named {name}; upload it with PUT /v1/models/{name}")
    if service.status == "shutting_down":
        return error(503, "shutting_down", "the server is shutting down")
    try:
        summary = await service.activate(name, path)
    except ModelError as err:
        return error(422, err.code, str(err))
    return JSONResponse({"active": summary.to_json()})


def http_routes() -> list[BaseRoute]:
    """The HTTP routes, ``.csv`` before the plain id (``{job_id}`` alone would match ``x.csv`` too)."""
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/reports", list_reports, methods=["GET"]),
        Route("/v1/reports/{job_id}.csv", get_report_csv, methods=["GET"]),
        Route("/v1/reports/{job_id}/frames", get_frames, methods=["GET"]),
        Route("/v1/reports/{job_id}", get_report, methods=["GET", "DELETE"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{name}", put_model, methods=["PUT"]),
        Route("/v1/models/{name}/activate", activate_model, methods=["POST"]),
    ]
