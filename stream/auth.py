"""Who may talk to the server: the optional bearer token, browser origins, loopback-only model admin.

- ``DFF_TOKEN`` set: every route except ``/healthz`` needs ``Authorization: Bearer <token>`` (websocket
  handshake included). A browser cannot set headers on a websocket, so there the token may come as a
  subprotocol instead: ``new WebSocket(url, ["dff.v1", "dff.bearer." + base64url(token)])`` (the server
  answers with ``dff.v1``, never echoing the token; a query string would leak it into access logs).
- Browsers always send ``Origin`` on a websocket handshake and any page may open one to any host, so a
  handshake with an ``Origin`` is accepted only from the server's own origin (same host and port as the
  ``Host`` header) or one listed in ``DFF_ALLOWED_ORIGINS`` ("*" = any). No ``Origin`` = not a browser.
- Model upload/activation changes what every user gets, so with no token configured it is allowed only
  when the server listens on loopback and the request comes from loopback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from pipeline.config import Settings


def token_ok(headers: Mapping[str, str], token: str | None) -> bool:
    """True when no token is configured or the request carries ``Authorization: Bearer <token>``."""
    if not token:
        return True
    scheme, _, value = headers.get("authorization", "").partition(" ")
    # compare_digest: the comparison takes as long for a near miss as for a wild guess
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


WS_SUBPROTOCOL = "dff.v1"
_BEARER_PROTOCOL = "dff.bearer."


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    """The ``Sec-WebSocket-Protocol`` values a handshake offers, in order."""
    return [v.strip() for v in headers.get("sec-websocket-protocol", "").split(",") if v.strip()]


def ws_token_ok(headers: Mapping[str, str], token: str | None) -> bool:
    """``token_ok`` for a websocket handshake: the Authorization header, or a ``dff.bearer.<base64url>``
    subprotocol (what a browser can send)."""
    if token_ok(headers, token):
        return True
    for offered in offered_subprotocols(headers):
        if offered.startswith(_BEARER_PROTOCOL):
            encoded = offered[len(_BEARER_PROTOCOL) :]
            try:
                value = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(value, token.encode())  # type: ignore[union-attr]  # token is set here
    return False


def bearer_subprotocol(token: str) -> str:
    """The subprotocol that carries ``token`` (for clients that cannot set headers)."""
    return _BEARER_PROTOCOL + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)


def origin_ok(headers: Mapping[str, str], allowed: str) -> bool:
    """True for non-browser clients (no Origin), the server's own origin, and ``allowed`` ones."""
    origin = headers.get("origin")
    if origin is None:
        return True
    allow = {o.strip().rstrip("/").lower() for o in allowed.split(",") if o.strip()}
    if "*" in allow or origin.rstrip("/").lower() in allow:
        return True
    parts = urlsplit(origin)
    host = headers.get("host", "")
    if not parts.hostname or not host:
        return False
    own = urlsplit(f"//{host}")
    origin_port = parts.port or _default_port(parts.scheme)
    host_port = own.port or origin_port  # a Host without a port means the scheme's default
    return parts.hostname.lower() == (own.hostname or "").lower() and origin_port == host_port


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def admin_ok(headers: Mapping[str, str], client_host: str | None, settings: Settings) -> tuple[bool, str]:
    """May this request install or switch models? (allowed, reason when not)."""
    if settings.token:
        if token_ok(headers, settings.token):
            return True, ""
        return False, "a valid bearer token is required"
    if is_loopback(settings.host) and is_loopback(client_host):
        return True, ""
    return False, "model management needs DFF_TOKEN when the server listens beyond loopback"
