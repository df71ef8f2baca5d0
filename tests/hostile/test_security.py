"""Security checks against the real server (and ``dff scan``), as tests:

- pickle-payload checkpoints never execute, through ``dff scan --checkpoint`` and ``PUT /v1/models/{name}``;
- with ``DFF_TOKEN`` set every route but ``/healthz`` needs it (routes enumerated from the app);
- report ids are not paths;
- upload caps (bytes, pixels of stills and videos, seconds, frames per request) refuse before decoding;
- overlays come only from the uploaded bytes (playlists and concat lists naming local files are refused);
- a foreign Host on any route, and a foreign Origin on any state-changing route, is refused.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import pathlib
import pickle
import resource
import struct
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.routing import Mount, Route, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from tests.media import encode_video, face_scene
from tests.servers import Served, make_settings, serving
from ui.cli import main as dff

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


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("security_models")
    save_checkpoint(build_model(), directory / "random.pth")
    return directory


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, models_dir) -> Iterator[Served]:
    """Composed as ``dff serve`` composes it (the web page mounted), with a token."""
    root = tmp_path_factory.mktemp("token_server")
    with serving(make_settings(root / "data", models_dir, token=TOKEN), web_ui=True) as served:
        yield served


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[Served]:
    """No token, on loopback (model management allowed from loopback), small caps: 1 MiB uploads,
    100,000-pixel frames, 1.5-s videos, 300 frames per request."""
    root = tmp_path_factory.mktemp("open_server")
    save_checkpoint(build_model(), root / "models" / "random.pth")
    settings = make_settings(
        root / "data", root / "models", max_upload_mb=1.0, max_image_pixels=100_000, max_duration_s=1.5
    )
    with serving(settings) as served:
        yield served


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory) -> Path:
    """A 1-s 160×120 clip with one face: under every cap of ``open_server``."""
    d = tmp_path_factory.mktemp("security_media")
    return encode_video(d / "face.mp4", [face_scene(160, 120, [(20 + t, 10, 90)]) for t in range(10)], fps=10)


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


# ------------------------------------------------------------------------------------------ upload caps


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height RGB, with a few rows of data: decoding it whole would
    need width·height·3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 16, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_declared_size_over_the_cap_is_refused_before_any_byte(open_server):
    cap = open_server.service.max_upload_bytes
    start = p.Start(name="big.mp4", size_bytes=cap + 1)
    hello, *rest = asyncio.run(converse(open_server.ws, start, b"\0" * (cap + 1)))
    assert isinstance(hello, p.Hello) and hello.max_upload_bytes == cap
    assert len(rest) == 1 and isinstance(rest[0], p.Error) and rest[0].code == "too_large", rest  # no "uploading"
    assert not leftover_uploads(open_server)


@pytest.mark.parametrize("side", [400, 30_000])
def test_a_still_over_the_pixel_cap_is_refused_before_decoding(open_server, tmp_path, side):
    path = tmp_path / f"bomb-{side}.png"
    path.write_bytes(png_bomb(side, side))  # 160,000 px or 900 Mpx (2.7 GB decoded)
    assert path.stat().st_size < open_server.service.max_upload_bytes
    rss_before, t0 = _peak_rss_mb(), time.monotonic()
    messages = upload(open_server, path, overlays=True)
    elapsed_s, grew_mb = time.monotonic() - t0, _peak_rss_mb() - rss_before
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]
    assert elapsed_s < 5 and grew_mb < 200, (elapsed_s, grew_mb)


def test_a_video_over_the_pixel_cap_is_refused_before_decoding(open_server, tmp_path):
    """Issue 9 finding 6: the pixel cap applies to videos too, from the header."""
    path = encode_video(tmp_path / "wide.mp4", [face_scene(400, 300, [(100, 60, 150)])] * 5, fps=10)
    messages = upload(open_server, path, overlays=True)
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert "pixel" in error.message
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]


def test_a_video_over_the_duration_cap_is_refused_before_decoding(open_server, tmp_path):
    path = encode_video(tmp_path / "long.mp4", [face_scene(160, 120, [(20, 10, 90)])] * 30, fps=10)  # 3 s
    messages = upload(open_server, path, overlays=True)
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]


@pytest.mark.parametrize(
    "options",
    [{"sample_mode": "all", "max_frames": 10**9}, {"max_frames": 301}, {"sample_mode": "count", "count": 10**6}],
)
def test_a_request_cannot_lift_the_frame_cap(open_server, face_clip, options):
    """Issue 9 finding 5: refused at ``start``, before a byte is uploaded."""
    start = p.Start(name="clip.mp4", size_bytes=face_clip.stat().st_size, options=p.Options(**options))
    hello, *rest = asyncio.run(converse(open_server.ws, start, face_clip.read_bytes()))
    assert len(rest) == 1 and isinstance(rest[0], p.Error), rest
    assert rest[0].code in ("bad_config", "too_large") and "300" in rest[0].message


def test_the_good_clip_passes_every_cap(open_server, face_clip):
    """The caps above refused for their reason, not because this server refuses everything."""
    done = final(upload(open_server, face_clip, overlays=True, max_frames=300))
    assert isinstance(done, p.Done), done


# ------------------------------------------------------------------------------------------ references


def references(target: Path) -> dict[str, bytes]:
    """Files that name ``target`` instead of containing media: HLS playlists and FFmpeg concat lists."""
    hls = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n"
    concat = "ffconcat version 1.0\nfile '{}'\n"
    return {
        "innocent.m3u8": hls.format(target).encode(),
        "playlist-as.mp4": hls.format(target).encode(),
        "url.m3u8": hls.format(target.as_uri()).encode(),
        "list.ffconcat": concat.format(target).encode(),
        "concat-as.mov": concat.format(target).encode(),
        "relative.m3u8": hls.format(target.name).encode(),
    }


def test_overlays_come_only_from_the_uploaded_bytes(open_server, face_clip, tmp_path):
    """Issue 9 finding 1: a playlist or concat list naming a face video on the server is refused, and
    answers the same whether or not the file it names exists (no existence oracle)."""
    missing = tmp_path / "no-such-video.mp4"
    for name, data in references(face_clip).items():
        answers = []
        for payload in (data, references(missing)[name]):
            start = p.Start(name=name, size_bytes=len(payload), options=p.Options(overlays=True))
            messages = asyncio.run(converse(open_server.ws, start, payload))
            error = final(messages)
            assert isinstance(error, p.Error) and error.code == "unsupported_media", (name, error)
            assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))], name
            answers.append((error.code, error.message))
        assert answers[0] == answers[1], f"{name}: the answer tells whether the named file exists: {answers}"


def test_dff_scan_refuses_references_too(face_clip, tmp_path, models_dir):
    files = []
    for name, data in references(face_clip).items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    code = dff(["scan", "--checkpoint", str(models_dir / "random.pth"), "--device", "cpu", *map(str, files)], out, err)
    assert code != 0 and out.getvalue() == ""
    lines = [line for line in err.getvalue().splitlines() if ": error: " in line]
    assert len(lines) == len(files), err.getvalue()


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


@pytest.fixture
def request_fixture(request):
    """pytest's own ``request`` fixture under a name that does not shadow the HTTP helper above."""
    return request
