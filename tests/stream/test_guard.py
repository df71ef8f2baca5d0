"""Host and Origin checks (stream/guard.py) on every route of the real server: DNS rebinding and cross-site
requests never reach model management, the report API, the websocket, or anything mounted on the app."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pipeline.config import Settings
from stream.guard import HostPolicy
from stream.server import create_app, make_server
from tests.servers import Served
from tests.stream.conftest import make_settings, wait_for

EVIL_HOST = "rebind.evil.example"
EVIL_ORIGIN = "http://rebind.evil.example"


def _raw(server: Served, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    """One HTTP request with exactly these Host/Origin headers; (status, JSON body or {})."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=b"" if method in ("PUT", "POST") else None, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.getheader("content-type", "").startswith("application/json") and body:
            return response.status, json.loads(body)
        return response.status, {}
    finally:
        conn.close()


def _ws_handshake(server: Served, host: str, origin: str | None) -> tuple[int, dict]:
    """A websocket upgrade with exactly this Host (and Origin); (status, JSON body of a refusal or {})."""
    lines = [
        "GET /v1/analyze HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            return status, {}
        length = int(
            next(v for k, v in (h.split(b":", 1) for h in head.split(b"\r\n")[1:]) if k.lower() == b"content-length")
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        return status, json.loads(rest[:length])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, models_dir) -> Iterator[Served]:
    """Loopback, no token (model admin open to loopback), one extra allowed host and origin, and a plain
    Starlette app mounted at /ui after create_app, the way the CLI mounts the Gradio page."""
    settings = make_settings(
        tmp_path_factory.mktemp("guard"),
        models_dir,
        allowed_hosts="dff.internal.example",
        allowed_origins="http://ok.example",
    )
    app = create_app(settings)
    app.mount("/ui", Starlette(routes=[Route("/", lambda request: PlainTextResponse("page"))]))
    server = make_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, name="guard-server", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout_s=60)
    assert server.started
    served = Served(server, settings, thread, server.port)
    try:
        yield served
    finally:
        served.stop()


def _own(server: Served) -> str:
    return f"127.0.0.1:{server.port}"


ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/v1/reports"),
    ("GET", "/v1/reports/" + "A" * 22),
    ("DELETE", "/v1/reports/" + "A" * 22),
    ("GET", "/v1/models"),
    ("PUT", "/v1/models/x.pth"),
    ("POST", "/v1/models/x.pth/activate"),
    ("GET", "/ui/"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_foreign_host_is_refused_on_every_route(guarded, method, path):
    for headers in ({"Host": EVIL_HOST}, {"Host": f"{EVIL_HOST}:{guarded.port}", "Origin": EVIL_ORIGIN}):
        status, body = _raw(guarded, method, path, headers)
        assert status == 421, (headers, status, body)
        assert body["error"]["code"] == "forbidden_host" and EVIL_HOST in body["error"]["message"]


def test_the_rebinding_attack_of_the_finding_no_longer_installs_or_activates(guarded):
    headers = {"Host": f"{EVIL_HOST}:{guarded.port}", "Origin": EVIL_ORIGIN}
    assert _raw(guarded, "PUT", "/v1/models/x.pth", headers)[0] == 421
    assert _raw(guarded, "POST", "/v1/models/random.pth/activate", headers)[0] == 421
    assert not (guarded.settings.resolved_models_dir / "x.pth").exists()


@pytest.mark.parametrize("method, path", [r for r in ROUTES if r[0] in ("PUT", "POST", "DELETE")])
def test_a_foreign_origin_is_refused_on_state_changing_routes(guarded, method, path):
    status, body = _raw(guarded, method, path, {"Host": _own(guarded), "Origin": EVIL_ORIGIN})
    assert status == 403 and body["error"]["code"] == "forbidden_origin"


@pytest.mark.parametrize(
    "origin",
    [None, "own", "http://ok.example", "http://localhost:{port}"],
    ids=["no origin", "own origin", "allowed origin", "localhost origin on localhost"],
)
def test_good_origins_and_hosts_pass(guarded, origin):
    host = f"localhost:{guarded.port}" if origin and "localhost" in origin else _own(guarded)
    headers = {"Host": host}
    if origin == "own":
        headers["Origin"] = f"http://{host}"
    elif origin is not None:
        headers["Origin"] = origin.format(port=guarded.port)
    status, body = _raw(guarded, "POST", "/v1/models/missing.pth/activate", headers)
    assert status == 404 and body["error"]["code"] == "unknown_model"  # reached the route
    assert _raw(guarded, "GET", "/v1/reports", {"Host": host, "Origin": EVIL_ORIGIN})[0] == 200  # reads: no Origin rule
    assert _raw(guarded, "GET", "/ui/", {"Host": host})[0] == 200


def test_listed_hosts_pass(guarded):
    assert _raw(guarded, "GET", "/healthz", {"Host": f"dff.internal.example:{guarded.port}"})[0] == 200
    assert _raw(guarded, "GET", "/healthz", {"Host": f"[::1]:{guarded.port}"})[0] == 200


def test_websocket_handshake_checks_host_and_origin(guarded):
    own = _own(guarded)
    status, body = _ws_handshake(guarded, EVIL_HOST, EVIL_ORIGIN)
    assert status == 421 and body["error"]["code"] == "forbidden_host"
    status, body = _ws_handshake(guarded, own, EVIL_ORIGIN)
    assert status == 403 and body["error"]["code"] == "forbidden_origin"
    assert _ws_handshake(guarded, own, f"http://{own}")[0] == 101
    assert _ws_handshake(guarded, own, None)[0] == 101


def _settings(**kw) -> Settings:
    return Settings(**kw)


POLICY_CASES = [
    # bound host, allowed_hosts, Host header, allowed?
    ("127.0.0.1", "", "127.0.0.1:7860", True),
    ("127.0.0.1", "", "localhost:7860", True),
    ("127.0.0.1", "", "LOCALHOST.:7860", True),
    ("127.0.0.1", "", "[::1]:7860", True),
    ("127.0.0.1", "", "rebind.evil.example:7860", False),
    ("127.0.0.1", "", "10.0.0.5:7860", False),  # an IP that is not ours
    ("127.0.0.1", "", "[::1:7860", False),  # malformed
    ("127.0.0.1", "", "127.0.0.1:notaport", False),
    ("127.0.0.1", "", "", False),
    ("127.0.0.1", "a.example, B.example", "b.example:80", True),
    ("127.0.0.1", "*", "anything.example", True),
    ("0.0.0.0", "", "192.168.1.20:7860", True),  # bound everywhere: any IP literal is us
    ("0.0.0.0", "", "[fe80::1]:7860", True),
    ("0.0.0.0", "", "rebind.evil.example", False),
    ("192.168.1.20", "", "192.168.1.20", True),
    ("192.168.1.20", "", "192.168.1.21", False),
    ("myhost.lan", "", "myhost.lan:7860", True),
]


@pytest.mark.parametrize("bound, listed, header, ok", POLICY_CASES)
def test_host_policy(bound, listed, header, ok):
    assert HostPolicy(_settings(host=bound, allowed_hosts=listed)).allows(header) is ok


def test_host_policy_accepts_the_address_a_connection_arrived_on():
    policy = HostPolicy(_settings(host="myhost.lan"))
    assert not policy.allows("10.1.2.3:7860") and policy.allows("10.1.2.3:7860", local_ip="10.1.2.3")
    assert policy.allows(None)  # no Host (HTTP/1.0): not a browser
