"""The real server on port 0 in the test process (uvicorn in a thread), composed as ``dff serve`` does:
``create_app`` (+ ``mount_web_ui`` for the page) + ``make_server``. Shared by tests/stream and tests/ui."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from stream.server import GracefulServer, create_app, make_server


@dataclass
class Served:
    """A running server: ``url`` is the page, ``ws`` the websocket API, ``http`` the HTTP API's base."""

    server: GracefulServer
    settings: Settings
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/analyze"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self):
        return self.server.service

    def stop(self, timeout_s: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "server did not stop"


def make_settings(data_dir: Path, models_dir: Path, **kw: Any) -> Settings:
    """Small and quick: every 0.5 s, tiny classify batches, one frame of latency."""
    values: dict[str, Any] = dict(
        data_dir=data_dir,
        models_dir=models_dir,
        device="cpu",
        every_s=0.5,
        classify_batch=4,
        max_pending_frames=1,
        host="127.0.0.1",
        port=0,
        shutdown_grace_s=10.0,
    )
    values.update(kw)
    return Settings(**values)


def start_server(
    settings: Settings, *, allow_untrained: bool = False, web_ui: bool = False, start_timeout_s: float = 120.0
) -> Served:
    """Start it and wait until it listens. ``web_ui``: mount the Gradio page too (imports gradio)."""
    app = create_app(settings, allow_untrained=allow_untrained)
    if web_ui:
        from ui.cmd_serve import mount_web_ui

        assert mount_web_ui(app, settings) == "/"
    server = make_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert thread.is_alive(), "server failed to start (see log)"
        assert time.monotonic() < deadline, "server did not start in time"
        time.sleep(0.02)
    return Served(server, settings, thread, server.port)


@contextmanager
def serving(settings: Settings, **kw: Any) -> Iterator[Served]:
    served = start_server(settings, **kw)
    try:
        yield served
    finally:
        if served.thread.is_alive():
            served.stop()


# the service as `dff serve` composes it, minus the web page, for tests that need it in a process of its own
SERVE_SCRIPT = (
    "from pipeline.config import Settings; from stream.server import create_app, make_server; "
    "s = Settings.from_env(); make_server(create_app(s), s, log_level='warning').run()"
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(env: dict[str, str], port: int, script: str = SERVE_SCRIPT) -> Iterator[subprocess.Popen[bytes]]:
    """``script`` (the server) in a child process with ``env`` added to ours; yields once ``/healthz`` on
    ``port`` says ok (120 s at most), stops it with SIGTERM (then SIGKILL) at the end if it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the server did not become ready in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def bound_port(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> tuple[int, list[str]]:
    """The port a ``dff serve`` process started with ``DFF_PORT=0`` bound, read from its stderr (text
    mode), and the stderr lines read so far; fails the test if it exits or says nothing in time."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line, "dff serve exited early:\n" + "".join(lines)
        lines.append(line)
        found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1)), lines
    raise AssertionError(f"dff serve bound no port in {timeout_s:g} s:\n" + "".join(lines))
