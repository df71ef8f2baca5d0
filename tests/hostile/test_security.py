"""Security checks against the real server (and ``dff scan``): pickle-payload checkpoints never execute
(``dff scan --checkpoint``, ``PUT /v1/models/{name}``, server start); with ``DFF_TOKEN`` set every route but
``/healthz`` needs it (routes enumerated from the app); report ids are not paths; a foreign Host on any
route, and a foreign Origin on any state-changing route, is refused."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import pickle
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.routing import Mount, WebSocketRoute

from stream import protocol as p
from tests.hostile.security_kit import (
    AUTH,
    JOB_ID,
    STATE_CHANGING,
    TOKEN,
    error_code,
    fill,
    handshake,
    http_calls,
    own_routes,
    request,
)
from tests.servers import Served, make_settings, serving
from ui.cli import main as dff

# ------------------------------------------------------------------------------------------ pickle payloads


class Payload:
    """Unpickling this creates ``marker``: proof that a checkpoint's pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "the checkpoint ran code")


def evil_checkpoint(path: Path, marker: Path, layout: str) -> Path:
    """A ``.pth`` whose unpickling would create ``marker``: the payload alone, or beside a state dict, in
    torch's zip format or its legacy one."""
    obj: Any = Payload(marker)
    if layout.startswith("nested"):
        obj = {"model_state_dict": {"logits.bias": torch.zeros(1)}, "epoch": 1, "extra": [obj]}
    torch.save(obj, path, _use_new_zipfile_serialization=not layout.endswith("legacy"))
    return path


LAYOUTS = ["top", "nested", "top-legacy", "nested-legacy"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_payload_is_live(tmp_path, layout):
    """The control: the file really runs code when unpickled without ``weights_only``."""
    marker = tmp_path / "ran"
    torch.load(evil_checkpoint(tmp_path / "evil.pth", marker, layout), weights_only=False)
    assert marker.read_text() == "the checkpoint ran code"
    marker.unlink()
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pickle_checkpoint_never_runs_through_dff_scan(tmp_path, layout, face_clip):
    marker = tmp_path / "ran"
    checkpoint = evil_checkpoint(tmp_path / "evil.pth", marker, layout)
    out, err = io.StringIO(), io.StringIO()
    code = dff(["scan", "--checkpoint", str(checkpoint), "--device", "cpu", str(face_clip)], out=out, err=err)
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert code != 0 and out.getvalue() == ""
    message = err.getvalue()
    assert "evil.pth" in message and "refuses to load arbitrary pickled objects" in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pickle_checkpoint_never_runs_through_put_models(tmp_path, layout, open_server):
    marker = tmp_path / "ran"
    body = evil_checkpoint(tmp_path / "evil.pth", marker, layout).read_bytes()
    name = f"evil-{layout}.pth"
    status, _, answer = request(open_server, "PUT", f"/v1/models/{name}", body)
    assert not marker.exists(), "unpickling the uploaded checkpoint ran code"
    assert status == 422 and error_code(answer) == "bad_checkpoint"
    assert "refuses to load arbitrary pickled objects" in json.loads(answer)["error"]["message"]
    models = open_server.settings.resolved_models_dir
    assert not (models / name).exists()
    assert not [f for f in (models / ".incoming").rglob("*") if f.is_file()], "the refused upload was left behind"
    # the refused file cannot be activated either (it was never installed)
    status, _, answer = request(open_server, "POST", f"/v1/models/{name}/activate")
    assert status == 404 and error_code(answer) == "unknown_model" and not marker.exists()


def test_pickle_checkpoint_never_runs_at_server_start_or_activation(tmp_path):
    """A payload that reached the models folder some other way: named by DFF_CHECKPOINT, or the newest
    file there, or activated by name. The server starts without a model and never runs it."""
    marker = tmp_path / "ran"
    models = tmp_path / "models"
    models.mkdir()
    evil = evil_checkpoint(models / "evil.pth", marker, "nested")
    for checkpoint in (evil, None):
        with serving(make_settings(tmp_path / "data", models, checkpoint=checkpoint)) as served:
            status, _, body = request(served, "GET", "/healthz")
            assert status == 200 and json.loads(body)["status"] == "no_model"
            status, _, body = request(served, "POST", "/v1/models/evil.pth/activate")
            assert status == 422 and error_code(body) == "bad_checkpoint"
            assert not marker.exists(), "unpickling the checkpoint ran code"


# ------------------------------------------------------------------------------------------ the token


def test_every_http_route_but_healthz_needs_the_token(token_server):
    calls = http_calls(token_server)
    assert {m for m, _ in calls} >= {"GET", "PUT", "POST", "DELETE"}, calls
    for method, path in calls:
        body = b"not a checkpoint" if method == "PUT" else None
        if path == "/healthz":
            assert request(token_server, method, path)[0] == 200, method
            continue
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
            status, response_headers, answer = request(token_server, method, path, body, headers)
            assert status == 401, f"{method} {path} with {headers} gave {status}"
            assert response_headers.get("www-authenticate", "").startswith("Bearer") or method != "GET"
            if method != "HEAD":
                assert error_code(answer) == "unauthorized"
        status, _, answer = request(token_server, method, path, body, AUTH)
        assert status not in (401, 403) and status < 500, (
            f"{method} {path} with the token gave {status}: {answer!r:.200}"
        )


def test_the_websocket_needs_the_token(token_server):
    for route in own_routes(token_server):
        if not isinstance(route, WebSocketRoute):
            continue
        path = fill(route)
        assert asyncio.run(handshake(token_server, path)) == 401
        assert asyncio.run(handshake(token_server, path, {"Authorization": "Bearer wrong"})) == 401
        hello = asyncio.run(handshake(token_server, path, AUTH))
        assert isinstance(hello, p.Hello) and hello.status == "ready"


def test_the_mounted_page_is_a_client_that_holds_no_data(token_server):
    """The one mount is the web page at "/": served without the token by design (it asks for the token,
    README), because it is only a client of the routes above. What it serves must not include the
    server's data: its file route refuses the database and the uploads folder."""
    mounts = [r for r in token_server.server.config.app.routes if isinstance(r, Mount)]
    assert [m.path for m in mounts] == [""], "a new mount: decide whether it needs the token"
    status, headers, page = request(token_server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert TOKEN.encode() not in page
    data = token_server.settings.data_dir
    targets = [data / "dff.sqlite3", data / "uploads", data / "models" / "random.pth", Path("/etc/passwd")]
    for target in targets:
        for prefix in ("/gradio_api/file=", "/file="):
            for headers in ({}, AUTH):
                status, _, body = request(token_server, "GET", f"{prefix}{target}", headers=headers)
                assert status in (403, 404), f"{prefix}{target}: {status}"
                assert b"SQLite format" not in body and b"root:" not in body


# ------------------------------------------------------------------------------------------ report ids


REPORT_IDS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "%2Fetc%2Fpasswd",
    "....%2F%2F....%2F%2Fetc%2Fpasswd",
    "..%5C..%5Cetc%5Cpasswd",
    "abc%00def",
    "%00",
    "AbCdEfGh%00",
    "A" * 65,
    "A" * 10_000,
    "dff.sqlite3",
    "..",
    "%2e%2e",
]


@pytest.mark.parametrize("suffix", ["", ".csv", "/frames"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("which", ["token_server", "open_server"])
def test_report_ids_are_not_paths(request_fixture, which, method, suffix):
    """404 with a JSON body, never a file's contents, never a 500. An id whose escapes decode to a slash
    matches no report route at all: then any JSON 404 will do (with the page mounted, the page's own)."""
    served: Served = request_fixture.getfixturevalue(which)
    for job_id in REPORT_IDS:
        if method == "DELETE" and suffix:
            continue  # DELETE is on the report itself only
        path = f"/v1/reports/{job_id}{suffix}"
        status, headers, body = request(served, method, path, headers=AUTH)
        where = f"{method} {path[:80]}: {status} {headers.get('content-type')} {body[:120]!r}"
        assert status == 404 and headers.get("content-type", "").startswith("application/json"), where
        assert b"root:" not in body and b"SQLite" not in body, where
        answer = json.loads(body)
        if "/" in urllib.parse.unquote(job_id):
            assert isinstance(answer, dict) and ("error" in answer or "detail" in answer), where
        else:
            assert answer["error"]["code"] == "unknown_job", where


# ------------------------------------------------------------------------------------------ Host and Origin


@pytest.mark.parametrize("which", ["token_server", "open_server"])
def test_foreign_origin_on_state_changing_routes_is_refused(request_fixture, which):
    served: Served = request_fixture.getfixturevalue(which)
    calls = [(m, path) for m, path in http_calls(served) if m in STATE_CHANGING]
    assert {m for m, _ in calls} >= {"PUT", "POST", "DELETE"}, calls
    for method, path in calls:
        headers = {**AUTH, "Origin": "http://evil.example"}
        status, _, body = request(served, method, path, b"x" if method == "PUT" else None, headers)
        assert status == 403 and error_code(body) == "forbidden_origin", f"{method} {path}: {status}"
    for route in own_routes(served):
        if isinstance(route, WebSocketRoute):
            assert asyncio.run(handshake(served, fill(route), {**AUTH, "Origin": "http://evil.example"})) == 403
    # not a blanket refusal: the server's own origin passes
    own = {**AUTH, "Origin": f"http://127.0.0.1:{served.port}"}
    assert request(served, "DELETE", f"/v1/reports/{JOB_ID}", headers=own)[0] == 404


@pytest.mark.parametrize("which", ["token_server", "open_server"])
def test_a_foreign_host_is_refused_on_every_route(request_fixture, which):
    """Issue 9 finding 4 (DNS rebinding): every route, the websocket and the page."""
    served: Served = request_fixture.getfixturevalue(which)
    calls = [*http_calls(served), ("GET", "/"), ("GET", "/v1/no-such-route")]
    for host in ("rebind.evil.example", f"rebind.evil.example:{served.port}", "127.0.0.1.evil.example"):
        for method, path in calls:
            headers = {**AUTH, "Host": host}
            status, _, body = request(served, method, path, b"x" if method == "PUT" else None, headers)
            assert status in (403, 421), f"{method} {path} with Host {host}: {status}"
            if method != "HEAD":
                assert error_code(body) == "forbidden_host"
        for route in own_routes(served):
            if isinstance(route, WebSocketRoute):
                assert asyncio.run(handshake(served, fill(route), AUTH, host=host)) in (403, 421)
    assert request(served, "GET", "/healthz", headers={"Host": f"localhost:{served.port}"})[0] == 200
