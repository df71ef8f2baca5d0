"""Token, origin and model-admin rules as pure functions (parameter tables)."""

from __future__ import annotations

import pytest

from pipeline.config import Settings
from stream.auth import WS_SUBPROTOCOL, admin_ok, bearer_subprotocol, is_loopback, origin_ok, token_ok, ws_token_ok


@pytest.mark.parametrize(
    "headers, token, ok",
    [
        ({}, None, True),
        ({}, "", True),
        ({}, "s3cret", False),
        ({"authorization": "Bearer s3cret"}, "s3cret", True),
        ({"authorization": "bearer s3cret"}, "s3cret", True),
        ({"authorization": "Bearer s3cre"}, "s3cret", False),
        ({"authorization": "Basic s3cret"}, "s3cret", False),
        ({"authorization": "s3cret"}, "s3cret", False),
    ],
)
def test_token(headers, token, ok):
    assert token_ok(headers, token) is ok


@pytest.mark.parametrize(
    "origin, host, allowed, ok",
    [
        (None, "example.com:7860", "", True),  # not a browser
        ("http://example.com:7860", "example.com:7860", "", True),  # same origin
        ("http://EXAMPLE.com:7860", "example.com:7860", "", True),
        ("https://example.com", "example.com", "", True),
        ("http://example.com:7861", "example.com:7860", "", False),
        ("http://evil.example", "example.com:7860", "", False),
        ("http://evil.example", "example.com:7860", "http://evil.example", True),
        ("http://evil.example/", "example.com:7860", " http://other , http://evil.example", True),
        ("http://evil.example", "example.com:7860", "*", True),
        ("null", "example.com:7860", "", False),
        ("http://example.com:7860", "", "", False),
    ],
)
def test_origin(origin, host, allowed, ok):
    headers = {"host": host} if host else {}
    if origin is not None:
        headers["origin"] = origin
    assert origin_ok(headers, allowed) is ok


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.2", False),
        ("example.com", False),
        (None, False),
        ("", False),
    ],
)
def test_loopback(host, ok):
    assert is_loopback(host) is ok


@pytest.mark.parametrize(
    "token, bind, client, headers, ok",
    [
        (None, "127.0.0.1", "127.0.0.1", {}, True),  # a local operator on a local server
        (None, "127.0.0.1", "10.0.0.5", {}, False),
        (None, "0.0.0.0", "127.0.0.1", {}, False),  # reachable from outside: needs a token
        ("t", "0.0.0.0", "10.0.0.5", {"authorization": "Bearer t"}, True),
        ("t", "127.0.0.1", "127.0.0.1", {}, False),  # a configured token always applies
    ],
)
def test_model_admin(tmp_path, token, bind, client, headers, ok):
    settings = Settings(data_dir=tmp_path, token=token, host=bind)
    allowed, why = admin_ok(headers, client, settings)
    assert allowed is ok and (why == "") is ok


@pytest.mark.parametrize(
    ("protocols", "ok"),
    [
        (f"{WS_SUBPROTOCOL}, {bearer_subprotocol('s3/cr+t=')}", True),  # not token characters: base64url
        (bearer_subprotocol("s3/cr+t="), True),
        (f"{WS_SUBPROTOCOL}, {bearer_subprotocol('wrong')}", False),
        (f"{WS_SUBPROTOCOL}, dff.bearer.%%%", False),
        (WS_SUBPROTOCOL, False),
        ("", False),
    ],
)
def test_websocket_token_as_a_subprotocol(protocols, ok):
    """Browsers cannot set an Authorization header on a websocket; they can offer subprotocols."""
    assert ws_token_ok({"sec-websocket-protocol": protocols}, "s3/cr+t=") is ok
    assert ws_token_ok({"authorization": "Bearer s3/cr+t="}, "s3/cr+t=") and ws_token_ok({}, None)
