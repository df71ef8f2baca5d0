"""Real servers on port 0 in this process (uvicorn in a thread), a tiny random checkpoint, small clips,
and small clients: ``ui.client`` (the real websockets client) and stdlib HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.config import Settings
from pipeline.models import build_model, save_checkpoint
from stream import protocol as p
from tests import servers
from tests.media import encode_video, face_scene
from tests.servers import Served, serving
from ui.client import analyze_file

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def make_settings(root: Path, models_dir: Path, **kw: Any) -> Settings:
    """The shared small settings (tests/servers.py) with the data directory under ``root``."""
    return servers.make_settings(root / "data", models_dir, **kw)


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
