"""Live media for tests: face streams encoded with PyAV, and real loopback servers that play them.

    LiveClip            what a stream shows (size, rate, faces drifting across; MTCNN finds them)
    TsEncoder           RGB frames -> MPEG-TS bytes, incrementally; ts_bytes(): a finite TS in memory
    HttpDir             a loopback HTTP server for a folder (HLS); remembers every path asked for
    HlsWriter           writes a live HLS playlist into a folder, APPENDING segments at real time
    TsHttpServer        MPEG-TS over HTTP at real time: endless, finite (a clean end), or cut; stop()/start()
    UdpTsSender         MPEG-TS over UDP to 127.0.0.1:port at real time
    SilentServer        accepts TCP connections and never sends a byte

The RTSP server (GStreamer's, in a subprocess) is in tests/livertsp.py.

Everything binds 127.0.0.1 only, every thread is a daemon joined with a timeout, and every server is a
context manager (stopped on exit). Streams are paced at real time (a live source does not wait).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.media import face_scene

LOOPBACK = "127.0.0.1"
JOIN_S = 5.0
X264 = {"preset": "ultrafast", "tune": "zerolatency"}  # no lookahead: a packet per frame, at once


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default; socket.SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LiveClip:
    """What a test stream shows: ``n_faces`` faces of ``face_px`` drifting right 2 px a frame (and back).

    ``gop``: frames between keyframes (a client joining mid-stream waits for one); default one a second.
    """

    width: int = 320
    height: int = 240
    fps: int = 10
    n_faces: int = 1
    face_px: int = 120
    gop: int | None = None
    cycle: int = 20  # distinct frames, played in a loop: the drift goes back and forth

    @property
    def keyint(self) -> int:
        return self.gop or self.fps

    @functools.cached_property
    def _frames(self) -> list[np.ndarray]:
        y = max(0, (self.height - self.face_px) // 2)
        spots = [(10 + i * (self.face_px + 20), y) for i in range(self.n_faces)]
        half = self.cycle // 2
        out = []
        for t in range(self.cycle):
            dx = 2 * (t if t < half else self.cycle - t)
            out.append(face_scene(self.width, self.height, [(x + dx, y, self.face_px) for x, y in spots]))
        return out

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (H×W×3 uint8 RGB)."""
        return self._frames[i % self.cycle]


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += bytes(b)
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class TsEncoder:
    """H.264 in MPEG-TS, written as frames come: ``encode(i)`` returns the TS bytes frame ``i`` produced.

    ``first_pts``: the stream clock (in frames) of the first frame; a "camera" that a client reconnects
    to keeps its clock, so give later connections a later ``first_pts``.
    """

    def __init__(self, clip: LiveClip, first_pts: int = 0) -> None:
        self.clip = clip
        self._sink = _Sink()
        self._out = av.open(self._sink, "w", format="mpegts")
        stream = self._out.add_stream("libx264", rate=clip.fps, options=X264)
        stream.width, stream.height = clip.width, clip.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, clip.fps)
        stream.gop_size = clip.keyint
        self._stream = stream
        self._pts = first_pts

    def encode(self, i: int) -> bytes:
        frame = av.VideoFrame.from_ndarray(self.clip.frame(i), format="rgb24")
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.clip.fps)
        self._pts += 1
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder and the muxer; the last bytes."""
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
        return self._sink.take()


def ts_bytes(clip: LiveClip, seconds: float, first_pts: int = 0) -> bytes:
    """A finite MPEG-TS of ``seconds`` of ``clip``, in memory."""
    enc = TsEncoder(clip, first_pts)
    data = b"".join(enc.encode(i) for i in range(round(seconds * clip.fps)))
    return data + enc.close()


def paced(clip: LiveClip, stop: threading.Event, n_frames: int | None = None, start: int = 0) -> Iterator[int]:
    """Frame numbers from ``start`` at the clip's real-time rate until ``stop`` or ``n_frames``."""
    t0 = time.monotonic()
    i = 0
    while not stop.is_set() and (n_frames is None or i < n_frames):
        yield start + i
        i += 1
        if stop.wait(max(0.0, t0 + i / clip.fps - time.monotonic())):
            return


class _Threads:
    """Daemon threads joined with a timeout on close."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def start(self, target: Any, *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def join(self, timeout_s: float = JOIN_S) -> None:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]


# --- HLS -------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    asked: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self.asked.append(self.path)
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a live playlist changes under the same name
        super().end_headers()


class HttpDir:
    """A threaded HTTP server for ``folder`` on 127.0.0.1 (port 0 = a free one). ``asked``: every path
    requested, in order (a test can check which segments a client fetched)."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.asked: list[str] = []
        handler = type("Handler", (_QuietHandler,), {"asked": self.asked})
        self._server = http.server.ThreadingHTTPServer((LOOPBACK, port), functools.partial(handler, directory=folder))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="http-dir")
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(JOIN_S)

    def __enter__(self) -> HttpDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HlsWriter:
    """Writes ``seconds`` of ``clip`` as HLS into ``folder`` at real time with PyAV's hls muxer: the
    playlist gains a segment every ``segment_s`` while clients read it (segments are written to a temporary
    name and renamed, so a listed segment is complete). ``endlist``: finish with ``#EXT-X-ENDLIST`` (a
    clean end); without it the playlist just stops growing (a stalled live source). ``seconds=None``:
    until ``stop()``. ``playlist`` is the file name, ``ready`` is set once it lists ``min_segments``.
    """

    def __init__(
        self,
        folder: Path,
        clip: LiveClip,
        seconds: float | None,
        *,
        segment_s: float = 1.0,
        endlist: bool = True,
        min_segments: int = 1,
        realtime: bool = True,
    ) -> None:
        self.folder, self.clip, self.seconds = folder, clip, seconds
        self.playlist = "live.m3u8"
        self.ready = threading.Event()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._segment_s = segment_s
        self._endlist = endlist
        self._min_segments = min_segments
        self._realtime = realtime
        self.error: BaseException | None = None
        self._threads = _Threads()
        self._threads.start(self._write, name="hls-writer")

    def segments(self) -> int:
        """Segments listed in the playlist now."""
        path = self.folder / self.playlist
        return path.read_text().count("#EXTINF") if path.exists() else 0

    def _write(self) -> None:
        try:
            flags = "temp_file" + ("" if self._endlist else "+omit_endlist")
            options = {
                "hls_time": f"{self._segment_s:g}",
                "hls_list_size": "0",
                "hls_flags": flags,
                "hls_segment_filename": str(self.folder / "seg%05d.ts"),
            }
            clip = self.clip
            n = None if self.seconds is None else round(self.seconds * clip.fps)
            with av.open(str(self.folder / self.playlist), "w", format="hls", options=options) as out:
                stream = out.add_stream("libx264", rate=clip.fps, options=X264)
                stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
                stream.time_base = Fraction(1, clip.fps)
                stream.gop_size = clip.keyint
                frames = paced(clip, self._stop, n) if self._realtime else range(n or 0)
                for i in frames:
                    frame = av.VideoFrame.from_ndarray(clip.frame(i), format="rgb24")
                    frame.pts, frame.time_base = i, Fraction(1, clip.fps)
                    for packet in stream.encode(frame):
                        out.mux(packet)
                    if not self.ready.is_set() and self.segments() >= self._min_segments:
                        self.ready.set()
                for packet in stream.encode():
                    out.mux(packet)
        except BaseException as e:  # the test sees it through .error
            self.error = e
        finally:
            self.ready.set()
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._threads.join()

    def __enter__(self) -> HlsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- raw TCP servers ----------------------------------------------------------------------------------------


class LoopbackServer:
    """A TCP listener on 127.0.0.1 whose ``handle(conn)`` runs in a thread per connection.

    ``stop()`` closes the listener and resets every open connection (RST: what a crashed server looks
    like to a client); ``start()`` listens again on the same port. ``connections``: accepted so far.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.connections = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()  # open connections (for a subclass's curiosity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = _Threads()
        self.start()

    def start(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self._listener = s
        self._stop = threading.Event()
        self._threads.start(self._accept, s, self._stop, name=f"{type(self).__name__}-accept")

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                readable, _, _ = select.select([listener], [], [], 0.05)
            except (OSError, ValueError):  # stop() closed the listener under select()
                return
            if not readable or stop.is_set():
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
                self.connections += 1
            self._threads.start(self._serve, conn, stop, name=f"{type(self).__name__}-conn")

    def _serve(self, conn: socket.socket, stop: threading.Event) -> None:
        try:
            self.handle(conn, stop)
        except OSError:
            pass  # the client went away
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                if stop.is_set():  # stop(): reset, as a crash does (a FIN could pass for a clean end)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def handle(self, conn: socket.socket, stop: threading.Event) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Refuse new connections and reset the open ones (each handler sees the flag within a frame)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._threads.join()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentServer(LoopbackServer):
    """Accepts connections, reads what comes, and never sends a byte (a stalled camera or web server)."""

    def url(self, scheme: str = "http", path: str = "/live.ts") -> str:
        return f"{scheme}://{LOOPBACK}:{self.port}{path}"

    def handle(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(0.05)
        while not stop.is_set():
            try:
                if conn.recv(65536) == b"":
                    return
            except TimeoutError:
                continue


def _read_request(conn: socket.socket, stop: threading.Event) -> bool:
    """Read an HTTP request head; False when the client left first."""
    conn.settimeout(0.1)
    data = b""
    while b"\r\n\r\n" not in data:
        if stop.is_set():
            return False
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            return False
        data += chunk
    conn.settimeout(None)
    return True


class TsHttpServer(LoopbackServer):
    """MPEG-TS over HTTP at real time, a fresh encoder per connection (any path).

    ``seconds``: each connection gets this much as a body of stated length (Content-Length: a finite
    stream, whose end is clean); None = endless, chunked. ``cut_after_s``: instead, the server resets the
    connection after that long (a crash); ``stall_after_s``: instead, it keeps the connection open and
    sends nothing more (a stalled source). The stream clock goes on across connections, like a camera's.
    """

    def __init__(
        self,
        clip: LiveClip,
        *,
        seconds: float | None = None,
        cut_after_s: float | None = None,
        stall_after_s: float | None = None,
        port: int = 0,
    ) -> None:
        self.clip, self.seconds, self.cut_after_s, self.stall_after_s = clip, seconds, cut_after_s, stall_after_s
        self._t0 = time.monotonic()
        super().__init__(port)

    def url(self, path: str = "/live.ts") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def handle(self, conn: socket.socket, stop: threading.Event) -> None:
        if not _read_request(conn, stop):
            return
        clip = self.clip
        first_pts = round((time.monotonic() - self._t0) * clip.fps)
        if self.seconds is not None and self.cut_after_s is None and self.stall_after_s is None:
            self._finite(conn, stop, first_pts)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n")
        enc = TsEncoder(clip, first_pts)
        limit_s = self.cut_after_s if self.cut_after_s is not None else self.stall_after_s
        n = None if limit_s is None else round(limit_s * clip.fps)  # None: until stop()
        try:
            for i in paced(clip, stop, n):
                if data := enc.encode(i):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            if stop.is_set():
                return
            if self.cut_after_s is not None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                return
            stop.wait()  # stall: silent until the server stops
        finally:
            with contextlib.suppress(Exception):
                enc.close()

    def _finite(self, conn: socket.socket, stop: threading.Event, first_pts: int) -> None:
        enc = TsEncoder(self.clip, first_pts)
        n = round((self.seconds or 0.0) * self.clip.fps)
        parts = [enc.encode(i) for i in range(n)]
        parts[-1] += enc.close()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: %d\r\n\r\n" % sum(map(len, parts))
        )
        for i in paced(self.clip, stop, n):
            conn.sendall(parts[i])


class UdpTsSender:
    """Sends ``clip`` as MPEG-TS datagrams (7 TS packets each, as FFmpeg does) to 127.0.0.1:``port`` at
    real time, for ``seconds`` (None = until ``stop()``)."""

    def __init__(self, clip: LiveClip, port: int, seconds: float | None = None) -> None:
        self.clip, self.port, self.seconds = clip, port, seconds
        self.sent = 0
        self._stop = threading.Event()
        self._threads = _Threads()
        self._threads.start(self._send, name="udp-ts")

    def url(self) -> str:
        return f"udp://{LOOPBACK}:{self.port}"

    def _send(self) -> None:
        enc = TsEncoder(self.clip)
        n = None if self.seconds is None else round(self.seconds * self.clip.fps)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            pending = b""
            for i in paced(self.clip, self._stop, n):
                pending += enc.encode(i)
                while len(pending) >= 1316:
                    s.sendto(pending[:1316], (LOOPBACK, self.port))
                    pending = pending[1316:]
                    self.sent += 1
        with contextlib.suppress(Exception):
            enc.close()

    def stop(self) -> None:
        self._stop.set()
        self._threads.join()

    def __enter__(self) -> UdpTsSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
