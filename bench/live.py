"""The live row: ``python -m bench.live [--quick] [--seconds 25] [--no-write]``.

Capture -> verdict lag (p50/p95) and the share of sampled frames dropped, with the real engine (the bench's
calibrated random weights) watching a real live stream: the bench's generated clip (720p30, 3 moving
faces; ``--quick``: the 360p one), looped and served as MPEG-TS over HTTP on 127.0.0.1, paced in real
time by its timestamps (``PacedStream``; nothing else is reached). Two runs:

1. **live**: ``--rate`` samples/s (default 2), the consumer as fast as analysis allows;
2. **slowed**: ``--slow-rate`` samples/s (default 4) with a consumer that also sleeps ``2 / slow_rate``
   seconds after each verdict, so it cannot keep up by construction: frames must be dropped (counted),
   and the lag must stay bounded by the queue, about ``(queue_frames + 2)`` consumer steps, not grow.

Each row says its own bound: ``(queue_frames + 2) × the slowest consumer step`` (a frame waits behind at
most ``queue_frames`` others plus the step in progress, then takes its own step). Prints a table and
writes ``bench/results/<date>-<host>-live.json`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.config import CLIP_720P, CLIP_QUICK, RESULTS_DIR, ClipSpec, bench_cache

STREAM_PATH = "/stream.ts"


class _ChunkedWriter:
    """The file-like object PyAV's muxer writes into: every write goes to the client at once, as one HTTP
    chunk. Chunked, because FFmpeg reads the end of a body of unknown length as a cut (EIO), while the
    last chunk (``end()``) tells it the body is complete: the stream's clean end."""

    def __init__(self, wfile: Any) -> None:
        self._wfile = wfile

    def write(self, data: bytes) -> int:
        if data:
            self._wfile.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
            self._wfile.flush()
        return len(data)

    def flush(self) -> None:
        self._wfile.flush()

    def end(self) -> None:
        self._wfile.write(b"0\r\n\r\n")
        self._wfile.flush()


class PacedStream:
    """Serve ``clip`` (H.264, closed GOPs, as ``bench.media.make_clip`` writes it) as MPEG-TS over HTTP
    on 127.0.0.1, each packet sent when its timestamp comes due in wall time (a real-time source), the
    clip looped (timestamps continued) for ``seconds`` of stream or until ``close()``. Then the body
    ends: a complete HTTP body, which a live reader takes as the stream's clean end.

    A context manager; ``url`` is ``http://127.0.0.1:PORT/stream.ts``. Each client gets its own copy
    from the start."""

    def __init__(self, clip: Path, seconds: float) -> None:
        import av

        self.seconds = seconds
        self._clip = clip
        self._stop = threading.Event()
        with av.open(str(clip)) as src:
            stream = src.streams.video[0]
            self.time_base: Fraction = stream.time_base
            self._packets = [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in src.demux(stream) if p.size > 0]
        pts = [p[1] for p in self._packets if p[1] is not None]
        step = (max(pts) - min(pts)) // max(1, len(pts) - 1)
        self._period = max(pts) - min(pts) + step  # one loop of the clip, in time_base units
        self._first_dts = min(p[2] for p in self._packets if p[2] is not None)
        stream_ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # for chunked transfer encoding

            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                if self.path != STREAM_PATH:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                import av

                try:
                    stream_ref._play(self.wfile)
                except (OSError, av.FFmpegError):
                    pass  # the reader went away (the session was stopped); the muxer's trailer cannot go

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-live-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{STREAM_PATH}"

    def _play(self, wfile: Any) -> None:
        import av

        writer = _ChunkedWriter(wfile)
        with av.open(str(self._clip)) as src, av.open(writer, "w", format="mpegts") as out:
            sout = out.add_stream_from_template(src.streams.video[0])
            for packet in self._paced(sout):
                out.mux(packet)
        if not self._stop.is_set():
            writer.end()  # after the muxer's last bytes: a complete body, the stream's clean end

    def _paced(self, sout: Any) -> Iterator[Any]:
        """The clip's packets, looped with continued timestamps, each yielded when it is due (wall time
        since the first one = its dts); ends after ``seconds`` of stream, or at once on ``close()``."""
        import av

        t0 = time.monotonic()
        loop = 0
        while True:
            for data, pts, dts, key in self._packets:
                shift = loop * self._period
                due_s = float(((dts if dts is not None else pts) + shift - self._first_dts) * self.time_base)
                if due_s >= self.seconds or self._stop.wait(max(0.0, t0 + due_s - time.monotonic())):
                    return
                q = av.Packet(data)
                q.pts = None if pts is None else pts + shift
                q.dts = None if dts is None else dts + shift
                q.is_keyframe = key
                q.time_base = self.time_base
                q.stream = sout
                yield q
            loop += 1

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> PacedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class LiveRun:
    """One watched session. Lags in seconds (capture wall time -> verdict wall time); ``max_step_s``: the
    slowest consumer step (wall time between two verdicts, the consumer's own delay included);
    ``lag_bound_s = (queue_frames + 2) × max_step_s``, what the newest-first queue promises."""

    run: str
    rate_hz: float
    queue_frames: int
    slow_s: float  # the consumer's extra sleep after each verdict
    watched_s: float
    end: str
    frames_analysed: int
    faces: int
    decoded: int
    sampled: int
    dropped: int
    delivered: int
    reconnects: int
    lag_p50_s: float | None
    lag_p95_s: float | None
    lag_max_s: float | None
    max_step_s: float | None

    @property
    def dropped_pct(self) -> float:
        return 100.0 * self.dropped / self.sampled if self.sampled else 0.0

    @property
    def lag_bound_s(self) -> float | None:
        return None if self.max_step_s is None else (self.queue_frames + 2) * self.max_step_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dropped_pct": self.dropped_pct, "lag_bound_s": self.lag_bound_s}


def watch_for(
    url: str, engine: Any, settings: Any, options: Any, *, seconds: float, slow_s: float, run: str
) -> LiveRun:
    """``pipeline.run.watch`` on ``url`` for ``seconds`` of wall time from the first connection (then the
    stop flag is set and the source closed, as ``dff watch --for`` does), or until the stream ends."""
    from pipeline.live_types import LiveUpdate
    from pipeline.run import watch
    from pipeline.sources.live import open_live
    from pipeline.types import AnalysisStart, Report

    stop = threading.Event()
    source = open_live(url, options)
    timer: threading.Timer | None = None

    def stop_now() -> None:
        stop.set()
        source.close()

    lags: list[float] = []
    steps: list[float] = []
    faces = 0
    report = None
    started = last = time.perf_counter()
    try:
        for event in watch(source, engine, settings, options, stopping=stop.is_set):
            if isinstance(event, AnalysisStart):
                started = last = time.perf_counter()
                timer = threading.Timer(seconds, stop_now)
                timer.daemon = True
                timer.start()
            elif isinstance(event, LiveUpdate):
                lags.append(event.lag_s)
                faces += len(event.verdict.faces)
                if slow_s:
                    time.sleep(slow_s)  # the deliberately slow consumer: it holds the next frame back
                now = time.perf_counter()
                steps.append(now - last)
                last = now
            elif isinstance(event, Report):
                report = event
    finally:
        if timer is not None:
            timer.cancel()
        source.close()
    if report is None or report.session is None:
        raise RuntimeError("watch() ended without a live report")
    s = report.session
    ordered = sorted(lags)
    return LiveRun(
        run=run,
        rate_hz=options.rate_hz,
        queue_frames=options.queue_frames,
        slow_s=slow_s,
        watched_s=time.perf_counter() - started,
        end=s.end.value,
        frames_analysed=s.frames_analysed,
        faces=faces,
        decoded=s.stats.decoded,
        sampled=s.stats.sampled,
        dropped=s.stats.dropped,
        delivered=s.stats.delivered,
        reconnects=s.stats.reconnects,
        lag_p50_s=s.lag_p50_s,
        lag_p95_s=s.lag_p95_s,
        lag_max_s=ordered[-1] if ordered else None,
        # the first step also holds the wait for the first frame after the connection: it can only loosen
        max_step_s=max(steps) if steps else None,
    )


@dataclass(frozen=True, slots=True)
class LiveResult:
    clip: str
    width: int
    height: int
    n_faces: int
    device: str
    precision: str
    runs: tuple[LiveRun, ...]

    def table(self) -> str:
        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}s"

        lines = [
            f"live: {self.clip} ({self.width}×{self.height}, {self.n_faces} faces) as real-time MPEG-TS over HTTP "
            f"on 127.0.0.1, {self.device} {self.precision}",
            f"{'run':<26} {'rate':>6} {'watched':>8} {'analysed':>8} {'sampled':>7} {'dropped':>9} "
            f"{'lag p50':>8} {'lag p95':>8} {'lag max':>8} {'bound':>7}",
        ]
        lines += [
            f"{r.run:<26} {r.rate_hz:>4g}/s {r.watched_s:>7.1f}s {r.frames_analysed:>8} {r.sampled:>7} "
            f"{r.dropped_pct:>8.1f}% {sec(r.lag_p50_s):>8} {sec(r.lag_p95_s):>8} {sec(r.lag_max_s):>8} "
            f"{sec(r.lag_bound_s):>7}"
            for r in self.runs
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "runs"}, "runs": [r.to_json() for r in self.runs]}


def _warm_up(engine: Any, settings: Any, clip: Path) -> None:
    """One untimed detect + classify on a frame of the clip: the first call builds kernels and pools."""
    import av

    from pipeline.detect import crop_faces
    from pipeline.types import Frame

    with av.open(str(clip)) as src:
        image = next(src.decode(video=0)).to_ndarray(format="rgb24")
    (boxes,) = engine.detector.detect([Frame(0, 0.0, image)], settings.video_min_face_px, settings.detect_max_side_px)
    crops = crop_faces(image, boxes, engine.info.profile)
    if crops:
        engine.classifier.score(crops, boxes)


def measure(
    spec: ClipSpec,
    clip: Path,
    checkpoint: Path,
    *,
    seconds: float,
    rate_hz: float = 2.0,
    slow_rate_hz: float = 4.0,
    queue_frames: int | None = None,
) -> LiveResult:
    """Both runs on a fresh paced stream each (so each starts from the clip's first frame)."""
    from pipeline.config import Settings
    from pipeline.engine import Engine

    settings = dataclasses.replace(Settings.from_env(), checkpoint=checkpoint)
    with Engine.open(settings) as engine:
        _warm_up(engine, settings, clip)
        runs = []
        for run, rate, slow_s in (
            (f"live {rate_hz:g}/s", rate_hz, 0.0),
            (f"slowed consumer {slow_rate_hz:g}/s", slow_rate_hz, 2.0 / slow_rate_hz),
        ):
            options = settings.live_options(rate)
            if queue_frames is not None:
                options = dataclasses.replace(options, queue_frames=queue_frames)
            # the stream outlasts the watch: the session ends by its stop flag, as a user's would
            with PacedStream(clip, seconds + options.open_timeout_s + 30) as served:
                runs.append(watch_for(served.url, engine, settings, options, seconds=seconds, slow_s=slow_s, run=run))
        info = engine.info
        return LiveResult(clip.name, spec.width, spec.height, spec.n_faces, info.device, info.precision, tuple(runs))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, help="wall seconds each run watches (default 25; quick 4)")
    ap.add_argument("--rate", type=float, default=2.0, help="samples/s of the live run (default 2)")
    ap.add_argument("--slow-rate", type=float, default=4.0, help="samples/s of the slowed-consumer run (default 4)")
    ap.add_argument("--queue-frames", type=int, help="frames the live queue holds (default $DFF_LIVE_QUEUE_FRAMES)")
    ap.add_argument("--quick", action="store_true", help="the 360p clip, 4 s per run (smoke test)")
    ap.add_argument("--cache", type=Path, metavar="DIR", help="clips and checkpoint (default DATA_DIR/bench-cache)")
    ap.add_argument("--out", type=Path, help=f"write the JSON here (default {RESULTS_DIR}/<date>-<host>-live.json)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from pipeline.threads import apply_entry_thread_environment

    apply_entry_thread_environment()  # the thread settings `dff` runs with (before torch loads)
    from bench.media import make_clip
    from bench.weights import calibrated_checkpoint

    cache = bench_cache(args.cache)
    spec = CLIP_QUICK if args.quick else CLIP_720P
    clip = make_clip(spec, cache)
    seconds = args.seconds or (4.0 if args.quick else 25.0)
    result = measure(
        spec,
        clip,
        calibrated_checkpoint(cache),
        seconds=seconds,
        rate_hz=args.rate,
        slow_rate_hz=args.slow_rate,
        queue_frames=args.queue_frames,
    )
    print(result.table())
    if not args.no_write:
        from bench.report import results_header, results_path, write_json

        out = write_json(
            args.out or results_path("live", args.quick), {**results_header(args.quick), **result.to_json()}
        )
        print(f"bench.live: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
