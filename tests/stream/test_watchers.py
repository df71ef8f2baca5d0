"""The watcher's drop rule (stream/watchers.py), rule by rule, on a small budget: progress and live are
coalesced, notices go first, then overlays oldest first, then frames (read back from the store, in
order, so every frame's scores still arrive), and the final message is never dropped."""

from __future__ import annotations

import asyncio
import base64
import json

from stream import protocol as p
from stream.watchers import Item, Watcher

JOB = "job_0001"
OVERLAY = base64.b64encode(b"\xff\xd8" + b"j" * 3000).decode()


def frame(seq: int, overlay: bool = True) -> p.FrameResult:
    face = p.Face(0, (1.0, 2.0, 30.0, 40.0), 0.99, 0.25, 0, OVERLAY if overlay else None)
    return p.FrameResult(JOB, seq, seq * 10, seq * 0.5, 0.25, (face,))


def live(seq: int) -> p.LiveStatus:
    return p.LiveStatus(JOB, seq, 0.1, (), p.LiveCounters(seq, seq, 0, seq, 0))


def drain(watcher: Watcher, store: dict[int, p.FrameResult]) -> list[dict]:
    async def fetch(job_id: str, first: int, limit: int) -> list[p.FrameResult]:
        return [store[s] for s in range(first, first + limit) if s in store]

    watcher._fetch = fetch

    async def run() -> list[dict]:
        return [json.loads(text) async for text, _ in watcher.texts()]

    return asyncio.run(run())


def test_progress_and_live_are_coalesced_to_the_newest():
    w = Watcher(JOB, None, budget_bytes=1 << 20)  # type: ignore[arg-type]
    for i in range(50):
        w.push(Item.of(p.Progress(JOB, "analyzing", i, 50)))
        w.push(Item.of(live(i)))
    w.push(Item.of(p.Error("internal", "stop", JOB)))
    got = drain(w, {})
    assert [(m["type"], m.get("frames_done", m.get("seq"))) for m in got] == [
        ("progress", 49),
        ("live", 49),
        ("error", None),
    ]


def test_notices_go_first_then_overlays_oldest_first_then_frames_read_back_in_order():
    n = 150  # with 4 frames' budget: past the overlays, the frames themselves must go
    store = {s: frame(s) for s in range(n)}
    one = Item.of(frame(0)).size
    w = Watcher(JOB, None, budget_bytes=4 * one)  # type: ignore[arg-type]
    w.push(Item.of(p.Notice(JOB, "reconnecting", "again", 1, 5, 0.5)))
    for s in range(n):
        w.push(Item.of(store[s]))
    assert w.dropped_notices == 1  # the notice went before any overlay
    assert w.queued_bytes <= 4 * one
    w.push(Item.of(p.Done(JOB, _report())))  # over budget, and queued all the same
    got = drain(w, {s: frame(s, overlay=False) for s in range(n)})
    frames = [m for m in got if m["type"] == "frame"]
    assert [m["seq"] for m in frames] == list(range(n))  # every frame's scores, in order
    assert all(m["faces"][0]["fake_prob"] == 0.25 for m in frames)
    assert w.dropped_overlays > 0 and w.read_back > 0
    assert got[-1]["type"] == "done" and "notice" not in [m["type"] for m in got]


def test_a_new_notice_that_cannot_fit_is_counted_not_queued():
    w = Watcher(JOB, None, budget_bytes=Item.of(frame(0, overlay=False)).size)  # type: ignore[arg-type]
    w.push(Item.of(frame(0, overlay=False)))
    w.push(Item.of(p.Notice(JOB, "refused", "x" * 500)))
    assert w.dropped_notices == 1
    assert [m["type"] for m in drain_until_empty(w)] == ["frame"]


def drain_until_empty(w: Watcher) -> list[dict]:
    w.push(Item.of(p.Error("internal", "end", JOB)))
    return [m for m in drain(w, {}) if m["type"] != "error"]


def test_sizes_are_utf8_bytes():
    item = Item.of(p.Notice(JOB, "refused", "é" * 100))
    assert item.size == len(item.text.encode("utf-8")) > len(item.text)


def _report() -> p.Report:
    from tests.stream.test_protocol import REPORT

    return REPORT


def test_overlays_go_oldest_first():
    one = Item.of(frame(0)).size
    w = Watcher(JOB, None, budget_bytes=4 * one + one // 2)  # type: ignore[arg-type]
    for s in range(5):
        w.push(Item.of(frame(s)))
    got = [m for m in drain_until_empty(w) if m["type"] == "frame"]
    assert [m["faces"][0]["overlay_jpeg_b64"] is not None for m in got] == [False, True, True, True, True]
    assert w.dropped_overlays == 1 and w.read_back == 0
