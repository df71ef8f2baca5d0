"""Hostile requests that once crashed a route or left files behind: long names in bytes, deeply nested JSON,
huge or odd paging cursors, any route's unexpected exception, and model uploads cut off mid-body."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.client import connect

from stream import protocol as p
from stream.service import MAX_NAME_BYTES, safe_file_name
from tests.stream.conftest import analyze_sync, get_json, http, make_settings, serving, wait_for

CJK_200 = "视" * 200 + ".mp4"  # 604 bytes of UTF-8: over the 255-byte disk limit in 200 characters
BYTES_255 = "n" * 251 + ".mp4"  # a legal name on disk, exactly 255 bytes
EMOJI = "👩‍👩‍👧‍👦" * 9 + ".mp4"  # 4-byte characters and zero-width joiners: 63 characters, 229 bytes


@pytest.mark.parametrize(
    "name, kept_end",
    [
        (CJK_200, "视.mp4"),
        (BYTES_255, "n.mp4"),
        (EMOJI, ".mp4"),
        ("a" * 240 + "." + "b" * 20, "a"),
        ("plain.png", None),
    ],
)
def test_safe_file_name_cuts_by_utf8_bytes_and_keeps_the_extension(name, kept_end):
    safe = safe_file_name(name)
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    if kept_end is None:
        assert safe == name
    else:
        assert safe.endswith(kept_end) and name.startswith(safe[: -len(kept_end)] if kept_end != "a" else safe)
    assert safe.encode("utf-8").decode("utf-8") == safe  # no half character


@pytest.mark.parametrize("name", [CJK_200, BYTES_255, EMOJI], ids=["200 CJK characters", "255 bytes", "emoji"])
def test_long_names_are_analysed_under_a_shortened_name(server, media, name):
    messages = analyze_sync(server.ws, media["short"], name=name)
    done = messages[-1]
    assert isinstance(done, p.Done), done
    stored = done.report.media.name
    assert stored == safe_file_name(name) and stored.endswith(".mp4") and len(stored.encode()) <= MAX_NAME_BYTES


def test_a_name_with_a_lone_surrogate_is_a_protocol_error(server):
    text = '{"type":"start","v":2,"name":"\\ud800.mp4","size_bytes":10}'

    async def converse():
        async with connect(server.ws) as ws:
            await ws.send(text)
            return [p.decode(m) async for m in ws]

    error = asyncio.run(converse())[-1]
    assert isinstance(error, p.Error) and error.code == "bad_message" and "surrogate" in error.message


@pytest.mark.parametrize("opener, closer", [('{"a":', "}"), ("[", "]")])
def test_deeply_nested_json_is_bad_json(server, media, opener, closer):
    depth = 100_000
    nested = opener * depth + "1" + closer * depth
    text = '{"type":"start","v":2,"name":"x.mp4","size_bytes":1,"options":' + nested + "}"
    with pytest.raises(p.ProtocolError) as info:
        p.decode(text)
    assert info.value.code == "bad_json"

    async def converse():
        async with connect(server.ws, max_size=None) as ws:
            await ws.send(text)
            return [p.decode(m) async for m in ws]

    error = asyncio.run(converse())[-1]
    assert isinstance(error, p.Error) and error.code == "bad_json" and "nested" in error.message
    assert isinstance(analyze_sync(server.ws, media["image"])[-1], p.Done)  # and it still serves


BAD_QUERIES = [
    "before=99999999999999999999999999",
    "before=9223372036854775808",  # one past SQLite's largest rowid
    "before=-1",
    "before=0",
    "before=nan",
    "before=1e3",
    "before=%201",
    "before=1_000",
    "before=",
    "before=%D9%A1",  # an Arabic-Indic digit: str.isdigit() says yes, a cursor it is not
    "limit=0",
    "limit=101",
    "limit=99999999999999999999999999",
    "limit=-5",
    "limit=inf",
    f"limit={'9' * 5000}",  # past int()'s digit limit
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_paging_parameters_are_400_with_the_json_error(server, query):
    status, headers, body = http("GET", f"{server.http}/v1/reports?{query}")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_the_largest_cursor_is_still_a_cursor(server):
    status, body = get_json(f"{server.http}/v1/reports?before=9223372036854775807&limit=100")
    assert status == 200 and isinstance(body["reports"], list)


def test_an_unexpected_exception_in_a_route_is_a_json_500(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.service.store, "list_jobs", broken)
    status, headers, body = http("GET", f"{server.http}/v1/reports")
    assert status == 500 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "internal" and "secret" not in error["message"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/reports/..%2F..%2Fetc%2Fpasswd"),  # %2F decodes to "/": no report route matches
        ("GET", "/v1/reports/%2e%2e%2f"),  # "/v1/reports/../": no redirect to "/v1/reports/.."
        ("GET", "/v1/reports/"),
        ("GET", "/v1/reports/a/b/c"),
        ("GET", "/etc/passwd"),
        ("DELETE", "/nothing/here"),
    ],
)
def test_a_path_no_route_matches_is_a_json_404(server, method, path):
    status, headers, body = http(method, f"{server.http}{path}")
    assert status == 404 and headers["content-type"] == "application/json", (status, headers, body[:100])
    error = json.loads(body)["error"]
    assert error["code"] == "not_found" and method in error["message"]
    assert b"root:" not in body


@pytest.mark.parametrize(
    "method, path, allowed",
    [("POST", "/healthz", "GET"), ("DELETE", "/v1/models", "GET"), ("GET", "/v1/models/x/activate", "POST")],
)
def test_a_method_a_route_does_not_take_is_a_json_405_with_allow(server, method, path, allowed):
    status, headers, body = http(method, f"{server.http}{path}")
    assert status == 405 and headers["content-type"] == "application/json", (status, headers, body[:100])
    assert allowed in headers["allow"]
    error = json.loads(body)["error"]
    assert error["code"] == "method_not_allowed" and allowed in error["message"]


def test_incoming_model_leftovers_are_removed_at_start(tmp_path, models_dir):
    settings = make_settings(tmp_path, tmp_path / "models")
    leftover = settings.resolved_models_dir / ".incoming" / "0123456789abcdef" / "half.pth"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\x80" * 4096)
    with serving(settings):
        assert not (settings.resolved_models_dir / ".incoming").exists()


def test_a_model_upload_cut_off_mid_body_leaves_nothing(tmp_path, models_dir):
    settings = make_settings(tmp_path, tmp_path / "models")
    incoming = settings.resolved_models_dir / ".incoming"
    with serving(settings) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"PUT /v1/models/cut.pth HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\x00" * 300_000)
        # the partial file really exists on the server before the client goes away
        wait_for(lambda: any(f.is_file() and f.stat().st_size > 0 for f in incoming.rglob("*")), timeout_s=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        sock.close()
        wait_for(lambda: not any(incoming.rglob("*")), timeout_s=10)
        assert not [f for f in settings.resolved_models_dir.rglob("*") if f.is_file()]  # no partial, no model
        assert get_json(f"{server.http}/healthz")[0] == 200  # and the server is fine
