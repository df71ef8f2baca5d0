"""The newest-first buffer and the pushed-frames source: drop rule, timeouts, typed refusals."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DecodeError, MediaTooLarge, SourceTimeout, UnsupportedMedia
from pipeline.live_types import LiveOptions, SourceConnected, SourceReconnecting
from pipeline.sources.newest import NewestFirst
from pipeline.sources.push import PushSource, decode_pushed
from pipeline.types import Frame, MediaKind
from tests.media import face_scene


def frame(i: int) -> Frame:
    return Frame(i, i * 0.5, np.zeros((4, 4, 3), np.uint8))


def jpeg(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt)
    return buf.getvalue()


def test_a_full_buffer_drops_the_oldest_frame_and_keeps_every_notice() -> None:
    buf: NewestFirst[SourceReconnecting] = NewestFirst(2)
    notice = SourceReconnecting(1, 3, 0.5, "gone", 0.0)
    buf.put(frame(0))
    buf.put(notice)
    for i in range(1, 5):
        buf.put(frame(i))
    buf.end()
    got = []
    while (item := buf.get(1.0)) is not None:
        got.append(item)
    assert got[0] is notice, "a notice is never dropped and keeps its place before later frames"
    assert [f.index for f in got[1:]] == [3, 4], "the newest frames are kept"
    assert (buf.dropped, buf.delivered) == (3, 2)
    assert buf.get(0.1) is None, "the end stays the end"


def test_the_end_error_comes_after_the_waiting_items_and_wake_is_called() -> None:
    woken = []
    buf: NewestFirst[SourceReconnecting] = NewestFirst(4, wake=lambda: woken.append(1))
    assert not buf.ready()
    buf.put(frame(0))
    assert buf.ready() and woken
    buf.end(SourceTimeout("silent"))
    assert buf.get(1.0).index == 0
    with pytest.raises(SourceTimeout, match="silent"):
        buf.get(1.0)
    with pytest.raises(TimeoutError):
        NewestFirst(1).get(0.05)


def test_abandon_wakes_a_blocked_consumer_at_once() -> None:
    buf: NewestFirst[SourceReconnecting] = NewestFirst(1)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(buf.get(10.0)))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    buf.abandon()
    t.join(2.0)
    assert got == [None] and time.monotonic() - t0 < 1.0


def test_pushed_frames_are_sampled_at_the_rate_by_their_own_times() -> None:
    source = PushSource("webcam", LiveOptions(rate_hz=2.0, queue_frames=64))
    image = face_scene(160, 120, [(40, 20, 80)])
    sampled = [source.push_image(image, i * 0.1) for i in range(20)]  # 10 fps for 2 s
    assert sum(sampled) == 4 and sampled[0] and sampled[5] and not sampled[4]
    source.finish()
    items = list(source.events())
    assert isinstance(items[0], SourceConnected)
    info = items[0].info
    assert (info.kind, info.width, info.height, info.size_bytes, info.sha256) == (MediaKind.LIVE, 160, 120, None, None)
    frames = items[1:]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert all(f.captured_s is not None and abs(f.captured_s - time.time()) < 60 for f in frames)
    stats = source.stats()
    assert (stats.decoded, stats.sampled, stats.delivered, stats.dropped) == (20, 4, 4, 0)


def test_a_slow_reader_gets_the_newest_frames_and_the_drops_are_counted() -> None:
    source = PushSource("webcam", LiveOptions(rate_hz=10.0, queue_frames=2))
    image = np.zeros((32, 32, 3), np.uint8)
    for i in range(10):
        source.push_image(image, i * 0.1)
    source.finish()
    frames = [f for f in source.events() if isinstance(f, Frame)]
    assert [f.index for f in frames] == [8, 9]
    assert source.stats().dropped == 8 and source.stats().dropped_fraction == pytest.approx(0.8)


@pytest.mark.timeout(10)
def test_a_client_that_stops_sending_is_a_timeout_and_ready_says_so_without_blocking() -> None:
    source = PushSource("webcam", LiveOptions(open_timeout_s=0.3, read_timeout_s=0.3))
    source.push_image(np.zeros((8, 8, 3), np.uint8), 0.0)
    events = source.events()
    assert isinstance(next(events), SourceConnected) and isinstance(next(events), Frame)
    assert not source.ready()
    time.sleep(0.35)
    assert source.ready(), "a passed timeout makes the next step return at once"
    t0 = time.monotonic()
    with pytest.raises(SourceTimeout, match="no frame came for 0.3 s"):
        next(events)
    assert time.monotonic() - t0 < 0.2
    never = PushSource("webcam", LiveOptions(open_timeout_s=0.2))
    with pytest.raises(SourceTimeout, match="no frame was pushed for 0.2 s"):
        next(never.events())


def test_bad_pushed_frames_are_refused_with_typed_errors_and_the_session_goes_on() -> None:
    source = PushSource("webcam", LiveOptions(rate_hz=10.0, queue_frames=8, max_pixels=64 * 64))
    good = np.zeros((48, 48, 3), np.uint8)
    noisy = jpeg(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    assert source.push_jpeg(jpeg(good), 0.0)
    assert source.push_jpeg(jpeg(good, "PNG"), 0.1)
    cases = [
        (lambda: source.push_jpeg(b"GIF89a" + b"\0" * 40, 0.2), UnsupportedMedia, "JPEG or PNG"),
        (lambda: source.push_jpeg(jpeg(good, "BMP"), 0.2), UnsupportedMedia, "got BMP"),
        (lambda: source.push_jpeg(jpeg(np.zeros((80, 80, 3), np.uint8)), 0.2), MediaTooLarge, "6,400 pixels"),
        (lambda: source.push_jpeg(noisy[: len(noisy) // 2], 0.2), DecodeError, "damaged or truncated"),
        (lambda: source.push_image(np.zeros((40, 48, 3), np.uint8), 0.2), DecodeError, "first frame's size 48×48"),
        (lambda: source.push_image(good, 0.05), DecodeError, "back in time"),
        (lambda: source.push_image(good, float("nan")), DecodeError, "seconds >= 0"),
        (lambda: source.push_image(good.astype(np.float32), 0.2), DecodeError, "uint8"),
    ]
    for push, error, message in cases:
        with pytest.raises(error, match=message):
            push()
    assert source.push_image(good, 0.3)
    source.finish()
    assert [f.index for f in source.events() if isinstance(f, Frame)] == [0, 1, 2]


def test_decode_pushed_reads_rgb() -> None:
    image = np.full((10, 12, 3), (200, 30, 40), np.uint8)
    out = decode_pushed(jpeg(image, "PNG"), 1000)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8 and (out == image).all()
