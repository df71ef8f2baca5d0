"""The live URL source against real loopback servers: HLS that grows while it is read, MPEG-TS over HTTP,
the URL allow-list and a hostile playlist; newest-first dropping for a slow consumer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.errors import MediaTooLarge, SourceError, UnsupportedSource
from pipeline.live_types import LiveOptions, SourceConnected, SourceReconnecting
from pipeline.sources import live_open
from pipeline.sources.base import Source
from pipeline.sources.live import LiveSource, open_live
from pipeline.sources.live_open import check_url
from pipeline.types import Frame, MediaKind, SampleMode
from tests.livemedia import HlsWriter, HttpDir, LiveClip, SilentServer, TsHttpServer, ts_bytes

CLIP = LiveClip()  # 320×240, 10 fps, a keyframe a second, one face
FAST = LiveOptions(rate_hz=2.0, queue_frames=2, open_timeout_s=5.0, read_timeout_s=3.0, reconnects=0)


def drain(source: LiveSource, limit_s: float = 20.0) -> list[Frame | SourceConnected | SourceReconnecting]:
    """Every event until the source ends (a bounded wait: the test fails rather than hangs)."""
    out: list[Frame | SourceConnected | SourceReconnecting] = []
    deadline = time.monotonic() + limit_s
    for event in source.events():
        out.append(event)
        assert time.monotonic() < deadline, f"the source did not end within {limit_s} s"
    return out


def frames_of(events: list) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def check_frames(
    frames: list[Frame], options: LiveOptions, clip: LiveClip = CLIP, *, dropped: int, from_start: bool = True
) -> None:
    """Increasing index, non-decreasing time on the rate_hz grid, captured_s set, RGB images. Frames are
    one sampling step apart except where the queue dropped some (at most ``dropped`` of them: a burst
    of frames buffered while the stream was probed can meet a consumer that is not yet reading); the
    first is at time 0 unless dropped, when ``from_start``."""
    assert frames, "no frame came"
    step_s, frame_s = options.every_s, 1.0 / clip.fps
    skipped = round(frames[0].time_s / step_s) if from_start else 0
    for a, b in zip(frames, frames[1:], strict=False):
        assert b.index > a.index
        gap_s = b.time_s - a.time_s
        steps = max(1, round(gap_s / step_s))
        assert abs(gap_s - steps * step_s) <= frame_s + 1e-6, (a.time_s, b.time_s)
        skipped += steps - 1
        assert b.captured_s >= a.captured_s
    assert skipped <= dropped, (skipped, dropped, [f.time_s for f in frames])
    for f in frames:
        assert f.image.shape == (clip.height, clip.width, 3) and f.image.dtype == np.uint8
        assert f.captured_s is not None and abs(time.time() - f.captured_s) < 60


# --- URLs -----------------------------------------------------------------------------------------------


@pytest.fixture
def silent():
    with SilentServer() as server:
        yield server


REFUSED = [
    "file:///etc/passwd",
    "/etc/passwd",
    "concat:http://127.0.0.1:{port}/a.ts|http://127.0.0.1:{port}/b.ts",
    "subfile,,start,0,end,0,,:http://127.0.0.1:{port}/x",
    "pipe:0",
    "fd:0",
    "data:video/mp2t;base64,AAAA",
    "ftp://127.0.0.1:{port}/x.ts",
    "gopher://127.0.0.1:{port}/x",
    "rtmp://127.0.0.1:{port}/live",
    "crypto+http://127.0.0.1:{port}/x.ts",
    "http+file://127.0.0.1:{port}/x",
    "rtsp://",
    "http://",
    "http:///live.ts",
    "http:127.0.0.1:{port}/live.ts",
    "udp://:{port}",
    "tcp://@:{port}",
    "http://127.0.0.1:99999/live.ts",
    "http://127.0.0.1:{port}/a b.ts",
    "http://127.0.0.1:{port}/x\n.ts",
    "",
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("template", REFUSED)
def test_refused_urls_raise_before_any_connection(template, silent):
    url = template.format(port=silent.port)
    before = threading.active_count()
    with pytest.raises(UnsupportedSource):
        open_live(url, FAST)
    time.sleep(0.05)
    assert silent.connections == 0  # nothing was opened: the URL was refused on the caller's thread
    assert threading.active_count() == before  # and no reader thread was started


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("rtsp://user:secret@127.0.0.1:8554/cam1", "rtsp://127.0.0.1:8554/cam1"),
        ("http://u:p@127.0.0.1/live.m3u8?token=abc#x", "http://127.0.0.1/live.m3u8"),
        ("HTTPS://example.org/a/b.m3u8", "https://example.org/a/b.m3u8"),
        ("udp://@:5000", "udp://@:5000"),
        ("udp://127.0.0.1:5000?fifo_size=100", "udp://127.0.0.1:5000"),
        ("rtp://[::1]:5004", "rtp://[::1]:5004"),
        ("srt://127.0.0.1:9000", "srt://127.0.0.1:9000"),
        ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
    ],
)
def test_accepted_urls_and_their_names_without_credentials(url, name):
    checked = check_url(url)
    assert checked.name == name
    assert checked.url.split("://", 1)[1] == url.split("://", 1)[1]  # credentials still go to FFmpeg
    assert "secret" not in checked.name and "token" not in checked.name


def test_every_scheme_has_a_protocol_whitelist_without_local_protocols():
    for scheme, allowed in live_open.PROTOCOL_WHITELISTS.items():
        protocols = set(allowed.split(","))
        assert not protocols & {"file", "pipe", "fd", "data", "concat", "concatf", "subfile", "cache"}, scheme


@pytest.mark.timeout(30)
def test_credentials_never_reach_a_message(silent):
    url = f"http://user:hunter2@127.0.0.1:{silent.port}/live.ts"
    with open_live(url, LiveOptions(open_timeout_s=0.5, read_timeout_s=0.5, reconnects=0)) as source:
        assert source.name == f"http://127.0.0.1:{silent.port}/live.ts"
        with pytest.raises(SourceError) as caught:
            drain(source)
    assert "hunter2" not in str(caught.value) and "user" not in str(caught.value)


# --- HLS --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_hls_read_while_segments_are_appended_ends_cleanly_at_endlist(tmp_path):
    seconds = 4.0
    with HttpDir(tmp_path) as web, HlsWriter(tmp_path, CLIP, seconds, segment_s=1.0, min_segments=2) as hls:
        assert hls.ready.wait(15) and hls.error is None
        listed_at_open = hls.segments()
        with open_live(web.url(hls.playlist), FAST) as source:
            assert source.policy.mode is SampleMode.EVERY_S and source.policy.every_s == FAST.every_s
            assert source.policy.max_frames is None and source.planned_frames is None
            events = drain(source)
            stats = source.stats()
            info = source.info
            assert isinstance(source, Source)  # the protocol's members (info exists once connected)
        assert hls.done.is_set() and hls.error is None
    assert isinstance(events[0], SourceConnected) and events[0].attempt == 0
    assert not any(isinstance(e, SourceReconnecting) for e in events)  # ENDLIST: a clean end, no reconnect
    frames = frames_of(events)
    check_frames(frames, FAST, dropped=stats.dropped)
    assert listed_at_open < hls.segments()  # the playlist grew while the source read it ...
    assert web.asked.count("/" + hls.playlist) >= 3  # ... and the source reloaded it to follow
    # the whole stream came, sampled at rate_hz of stream time (what was dropped was counted)
    assert abs(stats.sampled - seconds * FAST.rate_hz) <= 1
    assert frames[-1].time_s >= seconds - FAST.every_s - 1.0 / CLIP.fps
    assert stats.reconnects == 0 and stats.delivered == len(frames) == stats.sampled - stats.dropped
    assert stats.decoded >= seconds * CLIP.fps - 1
    assert info.kind is MediaKind.LIVE and info.container == "hls" and info.codec == "h264"
    assert (info.width, info.height, info.sha256, info.size_bytes) == (CLIP.width, CLIP.height, None, None)


@pytest.mark.timeout(30)
def test_hostile_hls_playlist_naming_a_local_file_is_refused_and_never_read(tmp_path):
    secret = tmp_path / "private" / "secret.ts"
    secret.parent.mkdir()
    secret.write_bytes(ts_bytes(LiveClip(width=96, height=64), 2.0))  # valid media: opened, it would play
    served = tmp_path / "www"
    served.mkdir()
    refs = {
        "abs.m3u8": f"file://{secret}",
        "missing.m3u8": f"file://{secret.parent}/nothing.ts",
        "bare.m3u8": str(secret),
        "etc.m3u8": "file:///etc/passwd",
    }
    for name, ref in refs.items():
        body = f"#EXTINF:2.0,\n{ref}\n" * 2
        (served / name).write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n{body}#EXT-X-ENDLIST\n")
    messages = {}
    with HttpDir(served) as web:
        for name in refs:
            events: list = []
            with open_live(web.url(name), FAST) as source, pytest.raises(SourceError) as caught:
                for event in source.events():
                    events.append(event)
            assert not frames_of(events), name
            messages[name] = str(caught.value).replace(name, "<playlist>")
    # refused alike whether the named file exists or not: the error tells nothing about the disk
    assert messages["abs.m3u8"] == messages["missing.m3u8"]
    assert "may not be opened" in messages["abs.m3u8"]
    # a bare path is resolved against the playlist's URL: asked of the web server, never read from disk
    assert str(secret) in web.asked


@pytest.mark.timeout(30)
def test_the_hostile_playlist_test_would_see_a_leak(tmp_path, monkeypatch):
    """The control: with ``file`` allowed, the same playlist plays the local file. So the test above
    fails if the protocol whitelist stops holding."""
    secret = tmp_path / "secret.ts"
    secret.write_bytes(ts_bytes(LiveClip(width=96, height=64), 2.0))
    (tmp_path / "abs.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    )
    monkeypatch.setitem(live_open.PROTOCOL_WHITELISTS, "http", live_open.PROTOCOL_WHITELISTS["http"] + ",file")
    with HttpDir(tmp_path) as web, open_live(web.url("abs.m3u8"), FAST) as source:
        frames = frames_of(drain(source))
    assert frames and frames[0].image.shape == (64, 96, 3)


# --- MPEG-TS over HTTP -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_http_ts_finite_stream_yields_frames_at_rate_then_ends_cleanly():
    seconds = 4.0
    with TsHttpServer(CLIP, seconds=seconds) as server, open_live(server.url(), FAST) as source:
        opened_s = time.time()
        events = drain(source)
        stats = source.stats()
        assert server.connections == 1  # a clean end is not reconnected
    assert isinstance(events[0], SourceConnected) and events[0].info.container == "mpegts"
    frames = frames_of(events)
    check_frames(frames, FAST, dropped=stats.dropped)
    assert abs(stats.sampled - seconds * FAST.rate_hz) <= 1
    assert stats.reconnects == 0 and stats.delivered == len(frames) == stats.sampled - stats.dropped
    # live: frames came as the stream played (paced by the server), not all at once
    assert frames[-1].captured_s - opened_s >= seconds - 1.0


@pytest.mark.timeout(30)
def test_slow_consumer_gets_the_newest_frames_drops_counted_and_lag_bounded():
    options = LiveOptions(rate_hz=5.0, queue_frames=2, open_timeout_s=5.0, read_timeout_s=3.0, reconnects=0)
    consume_s = 3.0 / options.rate_hz  # analysis three times slower than sampling
    ages: list[float] = []
    with TsHttpServer(CLIP) as server, open_live(server.url(), options) as source:
        frames = source.frames()
        first = next(frames)
        for frame in frames:
            ages.append(time.time() - frame.captured_s)  # capture -> delivery
            time.sleep(consume_s)
            if len(ages) >= 5:
                break
        stats = source.stats()
    assert first.index == 0
    assert stats.dropped > 0  # the consumer fell behind, so frames were dropped ...
    assert stats.sampled - stats.dropped - stats.delivered <= options.queue_frames  # ... the rest delivered or queued
    # ... oldest first: what is delivered is never older than the queue's span plus the frame being sampled
    bound_s = (options.queue_frames + 1) / options.rate_hz + 1.0 / CLIP.fps
    assert max(ages) < bound_s, (ages, bound_s)
    assert stats.dropped_fraction > 0.3  # 3× too slow: about two thirds dropped


@pytest.mark.timeout(30)
def test_frames_over_the_pixel_cap_raise_media_too_large():
    options = LiveOptions(max_pixels=CLIP.width * CLIP.height - 1, open_timeout_s=5.0, read_timeout_s=3.0, reconnects=2)
    with TsHttpServer(CLIP) as server, open_live(server.url(), options) as source:
        with pytest.raises(MediaTooLarge, match="pixels"):
            drain(source)
        assert source.stats().reconnects == 0  # too large is final: reconnecting cannot help


@pytest.mark.timeout(30)
def test_wake_is_called_whenever_ready_may_have_become_true():
    calls: list[bool] = []
    holder: dict[str, LiveSource] = {}

    def wake() -> None:
        if "source" in holder:
            calls.append(holder["source"].ready())

    with TsHttpServer(CLIP, seconds=2.0) as server:
        source = open_live(server.url(), FAST, wake=wake)
        holder["source"] = source
        with source:
            assert drain(source)
            assert source.ready()  # ended: next() would not block
    assert calls and all(calls)  # every wake came with something to take (an item, or the end)


def test_info_before_the_first_connection_is_an_error(silent):
    with open_live(silent.url(), LiveOptions(open_timeout_s=0.5, read_timeout_s=0.5)) as source:
        assert not source.ready()
        with pytest.raises(RuntimeError, match="not connected"):
            _ = source.info
