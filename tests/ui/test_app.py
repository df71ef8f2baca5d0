"""The web page without a browser: what it imports, its config, the start options, its own-address rule,
and how streamed messages are batched into page updates."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from pipeline.config import Settings
from stream import protocol as p
from ui import address, app, live
from ui.client import ClientError

JOB = "job-0123456789"


def test_the_web_page_imports_no_torch_and_no_pipeline():
    code = (
        "import sys, ui.app, ui.client, ui.timeline, ui.svg, ui.cards, ui.live, ui.address;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pipeline', 'facenet_pytorch'));"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("every_s", 0.4, 16, 300, "per_person", 0.5), {"sample_mode": "every_s", "every_s": 0.4, "count": None}),
        (("count", 0.4, 16, 300, "mean", 0.6), {"sample_mode": "count", "every_s": None, "count": 16}),
        (("keyframes", 1.0, 16, None, "max_frame", 0.5), {"every_s": None, "count": None, "max_frames": None}),
        (("all", 1.0, 16, 50.0, "confident", 0.3), {"sample_mode": "all", "max_frames": 50, "threshold": 0.3}),
    ],
)
def test_build_options_sends_only_what_the_mode_uses(args, expected):
    options = live.build_options(*args)
    assert options.overlays is True  # the page always shows heatmaps
    assert {k: getattr(options, k) for k in expected} == expected


def test_build_options_refuses_an_impossible_threshold():
    with pytest.raises(p.ProtocolError):
        live.build_options("every_s", 1.0, 16, 300, "per_person", 1.0)


def test_options_summary_says_what_the_next_analysis_uses():
    line = live.options_summary("every_s", 0.4, 16, 300, "per_person", 0.5)
    assert 'data-every-s="0.4"' in line and "one frame every 0.4 s, at most 300" in line and "P ≥ 0.50" in line
    assert "12 frames spread evenly" in live.options_summary("count", 0.4, 12, None, "mean", 0.6)
    assert "the server's operating point" in live.options_summary("keyframes", 1.0, 16, None, "mean", 0.6, True)
    assert live.build_options("keyframes", 1.0, 16, None, "mean", 0.6, True).threshold is None
    bad = live.options_summary("every_s", -1.0, 16, 300, "per_person", 0.5)
    assert 'data-invalid="1"' in bad and "every_s" in bad


@pytest.mark.parametrize(
    ("server", "base"),
    [
        (("127.0.0.1", 7860), "http://127.0.0.1:7860"),
        (("192.168.1.5", 80), "http://192.168.1.5:80"),
        (("::1", 8000), "http://[::1]:8000"),
        (("0.0.0.0", 7860), "http://127.0.0.1:7860"),
        (None, None),
        (("127.0.0.1", None), None),
    ],
)
def test_base_of_a_scope_server(server, base):
    assert address._base_of(server) == base


def test_record_address_learns_the_server_from_requests():
    where = address.ServerAddress()
    with pytest.raises(ClientError):
        where.get()
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    middleware = address.RecordAddress(inner, where)
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    assert where.base is None
    asyncio.run(middleware({"type": "http", "server": ("127.0.0.1", 43210)}, None, None))
    assert where.get() == "http://127.0.0.1:43210" and seen == ["lifespan", "http"]


@pytest.mark.parametrize(
    ("token", "loopback", "phrase"),
    [("s3cret", True, "access token"), (None, True, "only on this machine"), (None, False, "disabled")],
)
def test_ui_config_from_settings_and_admin_note(tmp_path, token, loopback, phrase):
    settings = Settings(data_dir=tmp_path, every_s=0.5, threshold=0.6, token=token, max_upload_mb=2)
    cfg = app.UiConfig.from_settings(settings, host_is_loopback=loopback)
    assert (cfg.sample_mode, cfg.every_s, cfg.threshold, cfg.strategy) == ("every_s", 0.5, 0.6, "per_person")
    assert cfg.max_upload_bytes == 2 * 1024 * 1024 and cfg.token_required == bool(token)
    assert phrase in cfg.admin_note()


def _frame(seq: int) -> p.FrameResult:
    return p.FrameResult(job_id=JOB, seq=seq, index=seq, time_s=seq / 10, score=None, faces=())


async def _stream(items: list[tuple[float, p.Message]]) -> AsyncIterator[p.Message]:
    for delay_s, message in items:
        await asyncio.sleep(delay_s)
        yield message


def test_coalesced_batches_fast_frames_and_flushes_the_last_message_at_once(monkeypatch):
    monkeypatch.setattr(live, "MIN_UPDATE_S", 0.2)
    done = p.Error(code="cancelled", message="x", job_id=JOB)
    items: list[tuple[float, p.Message]] = [(0, _frame(0)), *[(0.01, _frame(i)) for i in range(1, 10)], (0, done)]

    async def run() -> list[list[str]]:
        return [[m.TYPE + str(getattr(m, "seq", "")) for m in batch] async for batch in live.coalesced(_stream(items))]

    batches = asyncio.run(run())
    assert sum(len(b) for b in batches) == 11, "nothing is dropped"
    assert len(batches) < 6, "frames arriving 10 ms apart are batched"
    assert batches[-1][-1] == "error"


def test_coalesced_hands_on_a_broken_connection():
    async def broken() -> AsyncIterator[p.Message]:
        yield _frame(0)
        raise ClientError("connection_lost", "gone")

    async def run() -> list[list[p.Message]]:
        return [batch async for batch in live.coalesced(broken())]

    with pytest.raises(ClientError):
        asyncio.run(run())


def test_coalesced_reads_ahead_at_most_a_bounded_number_of_messages(monkeypatch):
    """A page that renders slowly stops reading its websocket, so the server's drop rule applies to it."""
    monkeypatch.setattr(live, "PAGE_QUEUE_MESSAGES", 4)
    read = []

    async def source() -> AsyncIterator[p.Message]:
        for i in range(100):
            read.append(i)
            yield _frame(i)
        yield p.Error(code="cancelled", message="x", job_id=JOB)

    async def run() -> int:
        batches = live.coalesced(source())
        await batches.__anext__()  # the page takes one batch, then renders for a long while
        await asyncio.sleep(0.3)
        ahead = len(read)
        await batches.aclose()
        return ahead

    assert asyncio.run(run()) <= 4 + 2 + live.PAGE_QUEUE_MESSAGES  # not all 100
