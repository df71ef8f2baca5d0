"""What the security tests share: the token, plausible path values, HTTP and websocket helpers that
speak to a real server, and the app's own routes enumerated from it (never listed by hand)."""

from __future__ import annotations

import asyncio
import http.client
import json
from pathlib import Path
from typing import Any

from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream import protocol as p
from tests.servers import Served

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB_ID = "AbCdEfGh12345678_-xyzQ"  # the form of a job id, for no job that exists
PATH_VALUES = {"job_id": JOB_ID, "name": "m.pth"}  # a plausible value for every path parameter
STATE_CHANGING = {"PUT", "POST", "DELETE", "PATCH"}


# ------------------------------------------------------------------------------------------ helpers


def request(
    served: Served, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request: the path goes on the wire exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def error_code(body: bytes) -> str:
    """The ``{"error": {"code"}}`` of a JSON error body (fails the test when the body is not one)."""
    return json.loads(body)["error"]["code"]


def own_routes(served: Served) -> list[Route | WebSocketRoute]:
    """The app's own HTTP and websocket routes, as the app lists them (mounts are checked apart)."""
    routes = [r for r in served.server.config.app.routes if isinstance(r, (Route, WebSocketRoute))]
    assert routes, "no routes found on the app"
    return routes


def fill(route: Route | WebSocketRoute) -> str:
    """The route's path with a plausible value in every path parameter."""
    missing = set(route.param_convertors) - set(PATH_VALUES)
    assert not missing, f"{route.path} has path parameters {missing}: add plausible values to PATH_VALUES"
    return route.path_format.format(**PATH_VALUES)


def http_calls(served: Served) -> list[tuple[str, str]]:
    """(method, path) for every method of every HTTP route."""
    return [(m, fill(r)) for r in own_routes(served) if isinstance(r, Route) for m in sorted(r.methods or ())]


async def handshake(
    served: Served, path: str, headers: dict[str, str] | None = None, host: str | None = None
) -> int | p.Message:
    """The HTTP status of a refused websocket handshake, or the first message of an accepted one.
    ``host``: the Host header to send (the connection still goes to the test server)."""
    url = f"ws://{host or f'127.0.0.1:{served.port}'}{path}"
    try:
        async with connect(
            url, additional_headers=headers, open_timeout=30, proxy=None, host="127.0.0.1", port=served.port
        ) as ws:
            return p.decode(await ws.recv(), p.SERVER_MESSAGES)
    except InvalidStatus as err:
        return err.response.status_code


async def converse(url: str, start: p.Start | str, data: bytes = b"", headers: dict[str, str] | None = None):
    """Send ``start`` (then ``data`` once the server says ``uploading``); every message until the server closes."""
    received: list[p.Message] = []
    async with connect(url, additional_headers=headers, max_size=None, open_timeout=30, proxy=None) as ws:
        received.append(p.decode(await ws.recv(), p.SERVER_MESSAGES))
        await ws.send(start if isinstance(start, str) else p.encode(start))
        try:
            while True:
                message = p.decode(await asyncio.wait_for(ws.recv(), 120), p.SERVER_MESSAGES)
                received.append(message)
                if isinstance(message, p.Progress) and message.stage == "uploading":
                    for i in range(0, len(data), p.CHUNK_BYTES):
                        await ws.send(data[i : i + p.CHUNK_BYTES])
        except ConnectionClosed:
            pass
    return received


def upload(served: Served, path: Path, **options: Any) -> list[p.Message]:
    start = p.Start(name=path.name, size_bytes=path.stat().st_size, options=p.Options(**options))
    return asyncio.run(converse(served.ws, start, path.read_bytes(), AUTH if served.settings.token else None))


def final(messages: list[p.Message]) -> p.Message:
    assert isinstance(messages[-1], (p.Done, p.Error)), messages[-1]
    return messages[-1]


def leftover_uploads(served: Served) -> list[Path]:
    return [f for f in (served.settings.data_dir / "uploads").rglob("*") if f.is_file()]
