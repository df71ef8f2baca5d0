"""The live source when things go wrong, and over RTSP and UDP: a server that accepts and never sends, a
stream that stalls, a server that stops (and comes back, or not), close() while the reader is blocked."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest

from pipeline.errors import SourceError, SourceTimeout
from pipeline.live_types import LiveOptions, SourceConnected, SourceReconnecting
from pipeline.sources.live import open_live
from pipeline.sources.live_open import container_options
from pipeline.types import Frame
from tests.livemedia import LiveClip, SilentServer, TsHttpServer, UdpTsSender, free_port
from tests.livertsp import RtspServer, rtsp_clip
from tests.pipeline.test_live_source import CLIP, check_frames, drain, frames_of

ROOT = Path(__file__).resolve().parents[2]
SLACK_S = 1.5
RTSP_CLIP_S = 4.0  # a timeout fires on FFmpeg's next interrupt check (every 0.1 s) plus thread scheduling


def quick(**kw: float) -> LiveOptions:
    # opening a live stream takes its probing time (about a second of stream): open_timeout_s > that
    values = dict(rate_hz=2.0, queue_frames=2, open_timeout_s=5.0, read_timeout_s=1.0, reconnects=0)
    return LiveOptions(**(values | kw))


def backoff(options: LiveOptions, attempt: int) -> float:
    return min(options.backoff_s * 2 ** (attempt - 1), options.backoff_max_s)


# --- silence ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("scheme", ["http", "rtsp", "tcp"])
def test_accept_and_never_send_is_a_timeout_within_the_open_timeout(scheme):
    options = quick(open_timeout_s=1.0, reconnects=3)  # a source that never connected is not retried
    with SilentServer() as server, open_live(server.url(scheme, "/cam"), options) as source:
        t0 = time.monotonic()
        with pytest.raises(SourceTimeout, match="no stream within 1 s"):
            next(source.events())
        took_s = time.monotonic() - t0
        assert server.connections == 1
        assert source.stats().reconnects == 0
    assert took_s < options.open_timeout_s + SLACK_S


@pytest.mark.timeout(30)
def test_a_stream_that_stalls_is_reconnected_then_times_out():
    options = quick(read_timeout_s=1.0, reconnects=1, backoff_s=0.2)
    with TsHttpServer(CLIP, stall_after_s=1.5) as server, open_live(server.url(), options) as source:
        events: list = []
        with pytest.raises(SourceTimeout, match=r"no packet for 1 s \(after 1 reconnect attempt\)"):
            for event in source.events():
                events.append((time.monotonic(), event))
        raised_at = time.monotonic()
        assert server.connections == 2
    kinds = [type(e).__name__ for _, e in events]
    assert kinds[0] == "SourceConnected" and "Frame" in kinds
    (notice,) = [e for _, e in events if isinstance(e, SourceReconnecting)]
    assert (notice.attempt, notice.limit, notice.delay_s) == (1, 1, 0.2)
    assert "no packet for 1 s" in notice.reason
    # the second connection stalled too: the error came within the read timeout of its last frame
    last_frame_at = max(t for t, e in events if isinstance(e, Frame))
    assert raised_at - last_frame_at < options.read_timeout_s + 1.0 / options.rate_hz + SLACK_S


def _open_in_thread(url: str, options: dict[str, str], wait_s: float) -> tuple[bool, float]:
    """av.open(url) WITHOUT PyAV's timeout (only FFmpeg's own options): (still blocked after wait_s, took_s)."""
    took: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        try:
            av.open(url, container_options=options).close()
        except (av.FFmpegError, OSError):
            pass
        took.append(time.monotonic() - t0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait_s)
    return thread.is_alive(), took[0] if took else wait_s


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("scheme", "option"), [("http", "rw_timeout"), ("rtsp", "timeout"), ("tcp", "timeout")])
def test_ffmpeg_socket_timeout_options_are_real_and_in_microseconds(scheme, option):
    """Each scheme's FFmpeg timeout option alone ends a silent open after ~0.5 s (so its name and unit
    are right: read as seconds it would wait days); without it the same open is still blocked later."""
    limit_s = 0.5
    options = container_options(scheme, quick(open_timeout_s=limit_s, read_timeout_s=limit_s))
    assert options[option] == "500000"
    with SilentServer() as server:
        url = server.url(scheme, "/cam")
        blocked, took_s = _open_in_thread(url, options, wait_s=limit_s + SLACK_S + 2.0)
        assert not blocked and took_s < limit_s + SLACK_S
        without = {k: v for k, v in options.items() if k != option}
        blocked, _ = _open_in_thread(url, without, wait_s=3 * limit_s)
        assert blocked  # the control: FFmpeg waits on (stop() below resets the connection and frees it)


@pytest.mark.timeout(30)
def test_ffmpeg_udp_timeout_option_ends_a_silent_udp_open():
    limit_s = 0.5
    port = free_port(socket.SOCK_DGRAM)
    options = container_options("udp", quick(open_timeout_s=limit_s, read_timeout_s=limit_s))
    blocked, took_s = _open_in_thread(f"udp://127.0.0.1:{port}?localaddr=127.0.0.1", options, wait_s=6.0)
    assert not blocked and took_s < 2 * limit_s + SLACK_S  # UDP probes twice before it gives up


# --- a server that stops ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_server_stops_mid_stream_and_comes_back_reconnects_and_time_goes_on():
    options = quick(read_timeout_s=2.0, reconnects=5, backoff_s=0.2, backoff_max_s=0.8)
    with TsHttpServer(CLIP) as server, open_live(server.url(), options) as source:
        events: list = []
        restarted = threading.Event()
        stopped = False
        for event in source.events():
            events.append(event)
            if len(frames_of(events)) == 3 and not stopped:
                server.stop()  # resets the connection: what a crash looks like
                stopped = True
                threading.Timer(0.5, lambda: (server.start(), restarted.set())).start()
            connected_again = [e for e in events if isinstance(e, SourceConnected) and e.attempt > 0]
            if connected_again and len(frames_of(events[events.index(connected_again[0]) :])) >= 3:
                break
        stats = source.stats()
    assert restarted.wait(5)
    notices = [e for e in events if isinstance(e, SourceReconnecting)]
    assert notices, "no reconnect was announced"
    assert [n.attempt for n in notices] == list(range(1, len(notices) + 1))
    assert all(n.limit == 5 and n.delay_s == backoff(options, n.attempt) and n.reason for n in notices)
    assert stats.reconnects == len(notices)
    again = next(e for e in events if isinstance(e, SourceConnected) and e.attempt > 0)
    assert again.attempt == notices[-1].attempt  # the attempt that succeeded
    assert events.index(notices[-1]) < events.index(again)
    before, after = frames_of(events[: events.index(again)]), frames_of(events[events.index(again) :])
    check_frames(before, options, dropped=stats.dropped)
    check_frames(after, options, dropped=stats.dropped, from_start=False)
    assert after[0].index > before[-1].index and after[0].time_s > before[-1].time_s  # time goes on


@pytest.mark.timeout(30)
def test_server_that_stays_down_fails_after_the_reconnect_limit_with_capped_backoff():
    options = quick(read_timeout_s=2.0, reconnects=4, backoff_s=0.1, backoff_max_s=0.3)
    with TsHttpServer(CLIP) as server, open_live(server.url(), options) as source:
        events: list = []
        with pytest.raises(SourceError) as caught:
            for event in source.events():
                events.append(event)
                if len(frames_of(events)) == 2 and server.connections == 1:
                    server.stop()
    assert not isinstance(caught.value, SourceTimeout)  # refused, not silent
    assert "after 4 reconnect attempts" in str(caught.value)
    notices = [e for e in events if isinstance(e, SourceReconnecting)]
    assert [n.delay_s for n in notices] == [0.1, 0.2, 0.3, 0.3]  # doubling, capped at backoff_max_s
    assert [n.attempt for n in notices] == [1, 2, 3, 4]
    # each attempt waited its delay before the next notice
    for a, b in zip(notices, notices[1:], strict=False):
        assert b.wall_s - a.wall_s >= a.delay_s - 0.02
    assert not [e for e in events if isinstance(e, SourceConnected) and e.attempt > 0]


# --- close() while blocked ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_close_while_blocked_in_open_returns_in_bounded_time():
    options = quick(open_timeout_s=1.0, read_timeout_s=1.0)
    with SilentServer() as server:
        source = open_live(server.url(), options)
        time.sleep(0.2)  # the reader is inside av.open, blocked on the silent server
        t0 = time.monotonic()
        source.close()
        took_s = time.monotonic() - t0
        assert took_s < options.open_timeout_s + SLACK_S
        assert not source._thread.is_alive()
        assert list(source.events()) == []  # closed: the iteration just ends
        source.close()  # idempotent
        quick_close = open_live(server.url(), options)
        t0 = time.monotonic()
        quick_close.close(timeout_s=0)  # does not wait: the reader stops by itself
        assert time.monotonic() - t0 < 0.5
        quick_close._thread.join(options.open_timeout_s + SLACK_S)
        assert not quick_close._thread.is_alive()


_CLOSE_WHILE_DEMUXING = """
import time
from pipeline.live_types import LiveOptions
from pipeline.sources.live import open_live
from pipeline.types import Frame
from tests.livemedia import LiveClip, TsHttpServer

options = LiveOptions(rate_hz=2.0, open_timeout_s=3.0, read_timeout_s=3.0, reconnects=0)
with TsHttpServer(LiveClip(), stall_after_s=1.5) as server:  # frames for 1.5 s, then a silent socket
    source = open_live(server.url(), options)
    events = source.events()
    assert any(isinstance(next(events), Frame) for _ in range(3))
    time.sleep(1.0)  # past the last packet, within the read timeout: the reader is blocked in demux ...
    decoded = source.stats().decoded
    time.sleep(0.3)
    assert source.stats().decoded == decoded and source._thread.is_alive()  # ... as this shows
    t0 = time.monotonic()
    source.close()
    took = time.monotonic() - t0
    assert took < options.read_timeout_s + 1.5, took
    assert not source._thread.is_alive()
print("survived")
"""


@pytest.mark.timeout(60)
def test_close_while_blocked_in_demux_returns_and_the_process_does_not_crash():
    """In a process of its own: closing a container under a blocked demux would kill it with SIGSEGV."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_WHILE_DEMUXING], cwd=ROOT, capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip().endswith("survived")


# --- RTSP (GStreamer's server, over TCP) and UDP ------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_media(tmp_path_factory) -> Path:
    return rtsp_clip(tmp_path_factory.mktemp("rtsp") / "cam.mkv", CLIP, RTSP_CLIP_S)


@pytest.mark.timeout(60)
def test_rtsp_over_tcp_yields_frames_at_rate_and_ends_cleanly_at_its_end(rtsp_media):
    options = quick(open_timeout_s=5.0, read_timeout_s=3.0, reconnects=2)
    with RtspServer(rtsp_media) as server, open_live(server.url, options) as source:
        events = drain(source, limit_s=30)
        stats = source.stats()
    assert isinstance(events[0], SourceConnected)
    assert events[0].info.container == "rtsp"
    assert events[0].info.duration_s == pytest.approx(RTSP_CLIP_S, abs=0.2)
    frames = frames_of(events)
    check_frames(frames, options, dropped=stats.dropped)
    assert abs(stats.sampled - RTSP_CLIP_S * options.rate_hz) <= 1
    assert stats.reconnects == 0  # the server's BYE at the clip's end: a clean end


@pytest.mark.timeout(60)
def test_rtsp_server_killed_mid_stream_and_restarted_reconnects(rtsp_media):
    options = quick(open_timeout_s=5.0, read_timeout_s=3.0, reconnects=5, backoff_s=0.3, backoff_max_s=1.0)
    with RtspServer(rtsp_media) as server, open_live(server.url, options) as source:
        events: list = []
        killed = False
        for event in source.events():
            events.append(event)
            if len(frames_of(events)) == 3 and not killed:
                server.stop()  # SIGKILL: the TCP connection just closes, no BYE
                server.start()  # on the same port
                killed = True
            if len(frames_of(events)) >= 6:
                break
        stats = source.stats()
    notices = [e for e in events if isinstance(e, SourceReconnecting)]
    again = [e for e in events if isinstance(e, SourceConnected) and e.attempt > 0]
    assert notices and again and stats.reconnects == len(notices)
    # the new connection's stream clock starts at 0 again; time_s goes on regardless
    cut = events.index(again[0])
    before, after = frames_of(events[:cut]), frames_of(events[cut:])
    check_frames(before, options, dropped=stats.dropped)
    check_frames(after, options, dropped=stats.dropped, from_start=False)
    assert after[0].index > before[-1].index and after[0].time_s > before[-1].time_s


@pytest.mark.timeout(30)
def test_udp_mpegts_yields_frames_then_times_out_when_the_sender_stops():
    port = free_port(socket.SOCK_DGRAM)
    options = quick(open_timeout_s=5.0, read_timeout_s=1.0)
    source = open_live(f"udp://127.0.0.1:{port}?localaddr=127.0.0.1", options)
    with source, UdpTsSender(LiveClip(), port, seconds=2.5) as sender:
        events: list = []
        with pytest.raises(SourceTimeout, match="no packet for 1 s"):  # UDP has no end: silence ends it
            for event in source.events():
                events.append((time.monotonic(), event))
        raised_at = time.monotonic()
        stats = source.stats()
        assert sender.sent > 0
    assert isinstance(events[0][1], SourceConnected) and events[0][1].info.container == "mpegts"
    frames = frames_of([e for _, e in events])
    check_frames(frames, options, dropped=stats.dropped)
    assert len(frames) >= 3
    assert raised_at - events[-1][0] < options.read_timeout_s + 1.0 / options.rate_hz + SLACK_S
