"""How the page's handlers reach their own server: the address the server was reached at.

The Gradio handlers run inside the server process and talk to it like any client (websocket + HTTP).
They dial the local end of the socket that accepted the browser's requests, which
:class:`RecordAddress` (a pure ASGI middleware on the stream app) notes on every request: right for
port 0, for any interface and behind a reverse proxy (whose public host the server may not reach).
"""

from __future__ import annotations

import re
from typing import Any

from ui.client import ClientError


def _base_of(server: Any) -> str | None:
    """``http://host:port`` from an ASGI ``scope["server"]`` pair, None when there is none."""
    if not server or not server[1]:
        return None
    host = str(server[0])
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{server[1]}"


class ServerAddress:
    """This server's own ``http://host:port``, as the page's handlers must dial it.

    Learnt from the ASGI scope of the requests that reach the server (:class:`RecordAddress`): the local
    end of the socket that accepted the browser's connection, so it is right for port 0, for any
    interface and behind a reverse proxy (whose public Host the server itself may not reach).
    """

    def __init__(self, base: str | None = None) -> None:
        self.base = base

    def get(self) -> str:
        if self.base is None:
            raise ClientError("connect", "this server's own address is not known yet; reload the page")
        return self.base


class RecordAddress:
    """Pure ASGI middleware for the stream app: notes each request's local address in a ServerAddress."""

    def __init__(self, app: Any, address: ServerAddress) -> None:
        self.app = app
        self.address = address

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            base = _base_of(scope.get("server"))
            if base is not None:
                self.address.base = base
        await self.app(scope, receive, send)


def ws_url(base: str) -> str:
    """The websocket API under an ``http(s)://`` base."""
    return re.sub(r"^http", "ws", base) + "/v1/analyze"
