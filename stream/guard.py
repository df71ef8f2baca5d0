"""What every request must pass before any route (or the mounted web UI) sees it: its ``Host`` and, when it
changes state, its ``Origin``. A pure-ASGI middleware on the whole app, so mounts are covered too.

- DNS rebinding: a page on ``evil.example`` whose name the attacker re-points at 127.0.0.1 is, to the
  browser, same-origin with this server; only the ``Host`` header (``evil.example``) still tells. So a
  request whose Host is not one of ours is refused with 421 ``forbidden_host``. Ours: ``localhost``,
  ``127.0.0.1``, ``[::1]``, the bound address (``DFF_HOST``, and the IP a connection arrived on), the
  names in ``DFF_ALLOWED_HOSTS`` (comma-separated, ``*`` = any) and, when bound to every interface
  (``0.0.0.0``/``::``), any IP address and this machine's host name (an IP-literal Host cannot be a
  rebinding: its origin *is* that address).
  No Host at all (HTTP/1.0, not a browser) passes.
- Cross-site requests: a page may send a plain POST (no preflight) to any server; a state-changing HTTP
  request (anything but GET/HEAD/OPTIONS) or a websocket handshake that carries a foreign ``Origin`` is
  refused with 403 ``forbidden_origin`` (``stream.auth.origin_ok``: no Origin, the server's own origin, or
  one in ``DFF_ALLOWED_ORIGINS``).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.config import Settings
from stream.auth import origin_ok

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _host_name(host_header: str) -> str | None:
    """``example.org:80`` / ``[::1]:80`` -> ``example.org`` / ``::1`` (lowercase, no trailing dot); None if bad."""
    try:
        parts = urlsplit(f"//{host_header}")
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    return name or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which ``Host`` names this server answers to (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        listed = {h.strip().lower().strip("[]").rstrip(".") for h in settings.allowed_hosts.split(",") if h.strip()}
        self.any_host = "*" in listed
        bound = settings.host.strip().lower().strip("[]")
        self.any_ip = bound in _WILDCARD_HOSTS
        names = set(_LOOPBACK_NAMES) | listed | ({bound} if bound not in _WILDCARD_HOSTS else set())
        if self.any_ip:
            names.add(socket.gethostname().lower())
        self.names = frozenset(names)

    def allows(self, host_header: str | None, local_ip: str | None = None) -> bool:
        """``local_ip``: the address the connection arrived on (the bound IP, even when DFF_HOST is a name)."""
        if host_header is None or self.any_host:
            return True
        name = _host_name(host_header)
        if name is None:
            return False
        return name in self.names or name == local_ip or (self.any_ip and _is_ip(name))


class RequestGuard:
    """ASGI middleware: 421 ``forbidden_host`` for a foreign Host on any request; 403 ``forbidden_origin`` for
    a foreign Origin on a state-changing HTTP request or a websocket handshake. JSON error bodies as routes.py."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = HostPolicy(settings)
        self.allowed_origins = settings.allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal: tuple[int, str, str] | None = None
        local = scope.get("server")
        if not self.hosts.allows(headers.get("host"), str(local[0]).lower() if local else None):
            refusal = (421, "forbidden_host", f"this server does not answer to Host {headers.get('host')!r:.80}")
        elif (kind == "websocket" or scope["method"] not in SAFE_METHODS) and not origin_ok(
            headers, self.allowed_origins
        ):
            refusal = (403, "forbidden_origin", f"requests from origin {headers.get('origin')!r:.80} are not allowed")
        if refusal is None:
            return await self.app(scope, receive, send)
        status, code, message = refusal
        response = JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
        if kind == "http":
            return await response(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await receive()  # websocket.connect
            return await response(scope, receive, send)  # Starlette sends it as websocket.http.response.*
        await receive()
        await send({"type": "websocket.close", "code": 1008, "reason": code})
