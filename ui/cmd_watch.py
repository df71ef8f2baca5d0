"""``dff watch URL``: analyse a live stream (RTSP, HLS, MPEG-TS over HTTP, UDP, ...) while it plays.

    URL ─open_live─▶ LiveSource ─pipeline.run.watch()─▶ events ─ui.cmd_watch_lines─▶ lines on stdout
                                                           └─▶ PATH.frames.jsonl (a row per frame, as it comes)
                                                           └─▶ Report (last) ─▶ session report, PATH (JSON)

Stopping: Ctrl-C (SIGINT) or ``--for`` sets the stop flag and closes the source; ``watch()`` then ends
the session (STOPPED) and yields its Report, which is printed and written. The source is closed from a
thread of its own, never from inside the signal handler (the handler may interrupt the main thread inside
the source's own lock). A second Ctrl-C aborts at once (exit 130): no session report.
Heavy imports (torch, the pipeline's stages) happen inside ``watch`` so ``dff --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, TextIO

from pipeline.config import PRECISIONS, Settings
from pipeline.live_types import LIVE_SCHEMES, LiveOptions
from ui.cmd_analyze import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, checkpoint_settings
from ui.cmd_flags import add_strategy_flag
from ui.cmd_watch_lines import (
    Summary,
    frame_row,
    gone_line,
    notice_line,
    parse_duration_s,
    session_lines,
    update_line,
)

DESCRIPTION = (
    "Analyse a live stream while it plays: a line per analysed frame (stream time, the people tracked now "
    "with P(fake) over their last DFF_LIVE_WINDOW_S seconds, lag from capture to verdict), a summary every "
    "few seconds, connection notices, and at the end (the stream ends, Ctrl-C, or --for elapses) the "
    "session report. Frames are sampled at --rate, newest first: when analysis falls behind, the oldest "
    "waiting frames are dropped and counted, so the lag stays bounded. Timeouts, reconnects and the queue "
    "come from DFF_LIVE_OPEN_TIMEOUT_S, DFF_LIVE_READ_TIMEOUT_S, DFF_LIVE_RECONNECTS, DFF_LIVE_BACKOFF_S, "
    "DFF_LIVE_QUEUE_FRAMES, DFF_LIVE_GONE_S."
)
EXIT_CODES = (
    "Exit codes: 0 the session ended cleanly (the stream ended) or was stopped (Ctrl-C, --for); "
    "1 the source could not be reached or sent nothing in time, or the session failed mid-way (after its "
    "reconnects; the report of what was analysed is still printed and written); 2 nothing could start "
    "(a URL scheme that is not allowed, no model, a bad option, --json not writable); 130 aborted by a "
    "second Ctrl-C. URL schemes: " + ", ".join(LIVE_SCHEMES) + " (never file:, concat: or other local ones)."
)

if TYPE_CHECKING:  # the engine imports torch: only for the type hints, never at --help
    from pipeline.engine import Engine
    from pipeline.sources.base import LiveInput
    from pipeline.types import Report

SUMMARY_EVERY_S = 5.0


def duration_text(seconds: float) -> str:
    """``600`` -> ``10m``, ``7200`` -> ``2h``, ``90`` -> ``90s`` (how ``--for`` is said back)."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``dff watch``'s arguments (registered by ui/cli.py)."""
    default = Settings.__dataclass_fields__
    rate = default["live_rate_hz"].default
    p.add_argument("url", help="rtsp://, http(s)://…/index.m3u8, http://…/stream.ts, udp://@:5000, ...")
    p.add_argument(
        "--rate",
        type=float,
        metavar="HZ",
        help=f"frames analysed per second of stream (default $DFF_LIVE_RATE_HZ, else {rate:g})",
    )
    p.add_argument("--for", dest="for_s", type=_duration, metavar="DURATION", help="stop after 90, 90s, 10m, 2h")
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="write the session report to PATH at the end, and a row per analysed frame to PATH with the "
        "suffix .frames.jsonl as they come",
    )
    p.add_argument(
        "--summary-every",
        type=_duration,
        default=SUMMARY_EVERY_S,
        metavar="DURATION",
        help=f"a summary line this often (default {SUMMARY_EVERY_S:g}s)",
    )
    p.add_argument("--debug", action="store_true", help="after an internal error's one-line reason, its traceback")
    m = p.add_argument_group("model")
    m.add_argument("--checkpoint", type=Path, help="checkpoint file (.pth/.pt/.h5); default as for `dff scan`")
    m.add_argument(
        "--allow-untrained", action="store_true", help="with no checkpoint, score with RANDOM weights (demos only)"
    )
    m.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    m.add_argument("--precision", choices=PRECISIONS, help="the classifier trunk's precision (default auto)")
    v = p.add_argument_group("verdict")
    add_strategy_flag(v, default=f"default {default['strategy'].default.value}")
    v.add_argument("--threshold", type=float, help="P(fake) at or above which a score means FAKE (default: as scan)")
    v.add_argument("--band", type=float, help="scores this close to the threshold are INCONCLUSIVE")
    v.add_argument("--min-face-px", type=int, help="smallest face to detect, in stream pixels (default 40)")
    v.add_argument("--detect-prob", type=float, help="detector confidence floor (default 0.9)")


def rows_path(json_path: Path) -> Path:
    """Where the per-frame rows go beside the report: ``out/session.json`` -> ``out/session.frames.jsonl``."""
    return json_path.with_suffix(".frames.jsonl")


class Stopper:
    """The stop flag, set by Ctrl-C or by ``--for``; setting it closes the source from its own thread.

    A context manager: installs the SIGINT handler (main thread only) and restores the old one on exit.
    The first SIGINT stops the session; a second one raises KeyboardInterrupt (abort)."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._flag = threading.Event()
        self.reason: str | None = None
        self._timer: threading.Timer | None = None
        self._old_handler: object = None
        self._installed = False
        # started now, so the signal handler only sets an Event (no thread start inside a handler)
        self._closer = threading.Thread(target=self._close_when_set, args=(close,), name="dff-watch-stop", daemon=True)
        self._closer.start()

    def _close_when_set(self, close: Callable[[], None]) -> None:
        self._flag.wait()
        close()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def stop(self, reason: str) -> None:
        if not self._flag.is_set():
            self.reason = reason
            self._flag.set()

    def stop_after(self, seconds: float, reason: str) -> None:
        """Stop once ``seconds`` have passed (wall time from now)."""
        self._timer = threading.Timer(seconds, self.stop, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._flag.is_set():
            raise KeyboardInterrupt
        self.stop("Ctrl-C")

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old_handler)  # type: ignore[arg-type]
        if self._timer is not None:
            self._timer.cancel()
        self.stop("session over")  # lets the closer thread finish (closing a closed source is allowed)
        self._closer.join(timeout=10)


def _say(line: str, out: TextIO) -> None:
    print(line, file=out, flush=True)


@dataclass(frozen=True)
class Session:
    """What one session's loop needs besides its source: parsed flags, settings, options, where lines go."""

    args: argparse.Namespace
    settings: Settings
    options: LiveOptions
    out: TextIO
    rows: TextIO | None  # PATH.frames.jsonl, or None without --json


def run_session(source: LiveInput, engine: Engine, s: Session, stopper: Stopper) -> Report:
    """One session of ``source`` through ``watch()``: every event becomes a line on ``s.out`` (and a row in
    ``s.rows``, flushed per line); returns the session Report. Raises what ``watch()`` raises before the
    source connects (SourceError, SourceTimeout)."""
    from pipeline.live_types import LiveUpdate, PersonGone, SourceConnected, SourceReconnecting
    from pipeline.run import watch
    from pipeline.types import AnalysisStart, Report, Strategy

    summary: Summary | None = None
    report: Report | None = None
    strategy = Strategy(s.args.strategy) if s.args.strategy else None
    events = watch(source, engine, s.settings, s.options, strategy=strategy, stopping=stopper.is_set)
    try:
        for event in events:
            if isinstance(event, AnalysisStart):
                summary = Summary(s.args.summary_every, time.time())
                if s.args.for_s is not None:
                    stopper.stop_after(s.args.for_s, f"--for {duration_text(s.args.for_s)} elapsed")
            elif isinstance(event, LiveUpdate):
                _say(update_line(event), s.out)
                if s.rows is not None:
                    s.rows.write(json.dumps(frame_row(event), allow_nan=False) + "\n")
                    s.rows.flush()
                if summary is not None:
                    summary.add(event)
                    now = time.time()
                    if summary.due(now):
                        _say(summary.line(event, now), s.out)
            elif isinstance(event, (SourceConnected, SourceReconnecting)):
                _say(notice_line(event), s.out)
            elif isinstance(event, PersonGone):
                _say(gone_line(event), s.out)
            elif isinstance(event, Report):
                report = event
    finally:
        events.close()
    if report is None:
        raise RuntimeError("watch() ended without a Report")
    return report


def _write_report(report: Report, path: Path) -> None:
    from pipeline.report import report_to_json

    tmp = path.with_name(path.name + ".part")
    tmp.write_text(report_to_json(report))
    tmp.replace(path)


def _error(err: TextIO, message: str, code: int) -> int:
    print(f"dff watch: error: {message}", file=err, flush=True)
    return code


def watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``dff watch``: see DESCRIPTION and EXIT_CODES."""
    from pipeline.errors import DffError, SourceError, UnsupportedSource
    from pipeline.sources.live_open import check_url

    try:
        check_url(args.url)  # before the model loads: a refused URL costs nothing
        settings = Settings.from_env(
            **checkpoint_settings(args.checkpoint),
            device=args.device,
            precision=args.precision,
            threshold=args.threshold,
            inconclusive_band=args.band,
            video_min_face_px=args.min_face_px,
            detect_prob_floor=args.detect_prob,
            live_rate_hz=args.rate,
        )
    except (DffError, ValueError) as e:
        return _error(err, str(e), EXIT_USAGE)
    rows: TextIO | None = None
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            rows = rows_path(args.json).open("w", encoding="utf-8")
        except OSError as e:
            return _error(err, f"cannot write {args.json}: {e.strerror or e}", EXIT_USAGE)
    session = Session(args, settings, settings.live_options(), out, rows)
    try:
        return _watch(session, err)
    except KeyboardInterrupt:
        print("dff watch: aborted (Ctrl-C); no session report", file=err, flush=True)
        return EXIT_INTERRUPTED
    except UnsupportedSource as e:
        return _error(err, str(e), EXIT_USAGE)
    except SourceError as e:  # before it connected (SourceTimeout too): nothing was analysed
        return _error(err, str(e), EXIT_SOME_FAILED)
    except DffError as e:  # no model, a bad checkpoint
        return _error(err, str(e), EXIT_USAGE)
    finally:
        if rows is not None:
            rows.close()
            path = rows_path(args.json)
            if path.is_file() and path.stat().st_size == 0 and not args.json.is_file():
                path.unlink()  # no session started: leave no empty file behind


def _watch(s: Session, err: TextIO) -> int:
    """Load the model, open the source, run the session, print (and write) its report; the exit code."""
    from pipeline.engine import Engine
    from pipeline.errors import DffError, SourceError
    from pipeline.session_types import EndReason
    from pipeline.sources.live import open_live

    with Engine.open(s.settings, allow_untrained=s.args.allow_untrained) as engine:
        if engine.info.untrained:
            print("dff watch: UNTRAINED MODEL — scores are random and mean nothing (--allow-untrained)", file=err)
        source = open_live(s.args.url, s.options)
        try:
            with Stopper(source.close) as stopper:
                try:
                    report = run_session(source, engine, s, stopper)
                except SourceError:
                    if stopper.is_set():  # Ctrl-C before the source connected: there is no session
                        print(f"dff watch: stopped before {source.name} connected", file=err, flush=True)
                        return EXIT_INTERRUPTED
                    raise
                except DffError:
                    raise
                except Exception as e:  # a bug: one line (the traceback with --debug)
                    if s.args.debug:
                        traceback.print_exception(e, file=err)
                    return _error(err, f"internal error: {type(e).__name__}: {e}", EXIT_SOME_FAILED)
        finally:
            source.close()
    live = report.session
    stopped_by = stopper.reason if live is not None and live.end is EndReason.STOPPED else None
    for line in session_lines(report, stopped_by):
        _say(line, s.out)
    if s.args.json is not None:
        try:
            _write_report(report, s.args.json)
        except OSError as e:
            return _error(err, f"cannot write {s.args.json}: {e.strerror or e}", EXIT_SOME_FAILED)
    if live is not None and live.end is EndReason.FAILED:
        return _error(err, f"the session failed: {live.end_message}", EXIT_SOME_FAILED)
    return EXIT_OK
