"""Real servers on port 0 in this process (uvicorn in a thread), a tiny random checkpoint, small clips,
and small clients: ``ui.client`` (the real websockets client) and stdlib HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.config import Settings
from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from stream.server import GracefulServer, create_app, make_server
from tests.media import encode_video, face_scene
from ui.client import analyze_file

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Served:
    server: GracefulServer
    settings: Settings
    thread: threading.Thread
    port: int

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


def start_server(settings: Settings, *, allow_untrained: bool = False) -> Served:
    app = create_app(settings, allow_untrained=allow_untrained)
    server = make_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
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


def make_settings(root: Path, models_dir: Path, **kw: Any) -> Settings:
    """Small and quick: every 0.5 s, tiny classify batches, one frame of latency."""
    values: dict[str, Any] = dict(
        data_dir=root / "data",
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


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """(status, headers, body bytes); error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = http("GET", url, headers=headers)
    return status, json.loads(body)


async def collect(url: str, path: Path, **kw: Any) -> list[tuple[float, p.Message]]:
    """Every message of one analysis with its arrival time (time.monotonic())."""
    return [(time.monotonic(), m) async for m in analyze_file(path, url, **kw)]


def analyze_sync(url: str, path: Path, **kw: Any) -> list[p.Message]:
    return [m for _, m in asyncio.run(collect(url, path, **kw))]


def stable(report: dict) -> dict:
    """A report without what differs between runs of the same file (timings)."""
    return {k: v for k, v in report.items() if k != "timings"}


def wait_for(predicate, timeout_s: float = 10.0, step_s: float = 0.02) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "condition not met in time"
        time.sleep(step_s)
    return time.monotonic() - start


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    save_checkpoint(build_model(), directory / "random.pth")
    return directory


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("stream_media")
    one = [face_scene(320, 240, [(40 + 3 * t, 50, 120)]) for t in range(40)]
    two = [face_scene(320, 240, [(10 + 2 * t, 60, 110), (190, 50 + t, 110)]) for t in range(20)]
    files = {
        "short": encode_video(d / "short.mp4", one[:20], fps=10),  # 2 s: 4 frames at every 0.5 s
        "two": encode_video(d / "two.mp4", two, fps=10),  # 2 s, two people
        "long": encode_video(d / "long.mp4", one, fps=10),  # 4 s
        "image": d / "face.png",
        "text": d / "notes.mp4",
        "empty": d / "empty.mp4",
    }
    Image.fromarray(face_scene(320, 240, [(100, 60, 120)])).save(files["image"])
    files["text"].write_text("this is not a video at all\n" * 10)
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture(scope="session")
def server(tmp_path_factory, models_dir) -> Iterator[Served]:
    """The shared server for tests that do not change its settings."""
    with serving(make_settings(tmp_path_factory.mktemp("shared_server"), models_dir)) as served:
        yield served
