"""Pure view of one live session on the Live tab: its messages folded into a bounded rolling state
(:class:`LiveView`), and that state drawn as HTML/SVG strings. No Gradio, no I/O, no clock.

Memory stays bounded however long a session runs: per person at most ``MAX_POINTS`` points, and only those
of the last ``window_s`` seconds of stream time; at most ``MAX_PEOPLE`` people lines (the least recently
seen leave first); a few notices and recent lags; the current verdicts are what the latest ``live``
message says. No message is kept.

Element classes and attributes the browser test reads: ``svg.dff-live-timeline`` with ``g.person[data-track]``
per person line (``polyline`` per stretch seen, ``circle.last`` at their newest point), ``rect.nf`` per
frame without a face; ``.dff-live-person[data-track][data-label]`` per current verdict;
``.dff-live-counters[data-analysed][data-dropped][data-reconnects]``; ``.dff-live-notice[data-kind]``;
``.dff-live-report[data-label][data-end]`` with ``.dff-session-facts`` at the end; ``.dff-status[data-stage]``.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from stream import protocol as p
from ui import cards
from ui import timeline as tl
from ui.svg import FAKE_RED, GRID, INK

WINDOW_S = 180.0  # the rolling timeline shows the last three minutes of stream time
MIN_SPAN_S = 30.0  # a young session's timeline spans this much (it grows to WINDOW_S, then rolls)
MAX_POINTS = 720  # per person: three minutes at 4 samples a second (a faster rate shows a shorter stretch)
MAX_PEOPLE = 12  # people lines kept; the least recently seen is dropped first
MAX_NOTICES = 5
MAX_LAGS = 120  # recent capture-to-verdict lags, for the median shown
WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 20, 12, 40

Stage = Literal["connecting", "queued", "connected", "reconnecting", "live", "stopping", "ended", "failed"]
# Live-session errors: what happened and what to do (file errors keep ui/cards.py's hints).
LIVE_HINTS: dict[str, tuple[str, str]] = {
    "unsupported_source": (
        "This URL cannot be watched",
        "Use rtsp://, rtsps://, http(s)://…/index.m3u8, http://…/stream.ts, udp://@:PORT, rtp:// or srt://.",
    ),
    "source_unavailable": (
        "The stream could not be opened",
        "Check the URL and that the camera or server is up; the server retried before giving up.",
    ),
    "source_timeout": ("The stream sent nothing in time", "The source connected but stalled; check it and retry."),
    "busy": ("The server is busy", "Every live session slot is taken; stop another session or try again later."),
    "bad_config": ("Invalid live options", "Check the rate (frames analysed per second, up to 60)."),
    "no_url": ("No stream URL", "Type the URL of a live stream, then press Start."),
}


@dataclass(frozen=True, slots=True)
class LivePoint:
    """One face of one person: stream time (s), P(fake), and the stretch (run) of frames it belongs to."""

    time_s: float
    fake_prob: float
    run: int


@dataclass(slots=True)
class LiveView:
    """One live session as the page shows it (mutable: ``apply`` folds each message in; ``version`` counts
    changes so a renderer can skip an unchanged view). ``kind``: "url" (watch) or "webcam" (push)."""

    kind: str
    name: str
    window_s: float = WINDOW_S
    stage: Stage = "connecting"
    job_id: str | None = None
    threshold: float = 0.5
    band: float = 0.05
    rate_hz: float | None = None
    untrained: bool = False
    lines: dict[int, deque[LivePoint]] = field(default_factory=dict)
    no_face: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    overlays: dict[int, str] = field(default_factory=dict)  # track id -> their newest face overlay (base64 JPEG)
    people: tuple[p.Person, ...] = ()
    stats: p.LiveCounters | None = None
    lag_s: float | None = None
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_LAGS))
    frames_analysed: int = 0
    first_time_s: float | None = None
    latest_time_s: float | None = None
    notices: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=MAX_NOTICES))
    report: p.Report | None = None
    error: tuple[str, str] | None = None
    version: int = 0
    _runs: dict[int, int] = field(default_factory=dict)
    _seen_at: dict[int, int] = field(default_factory=dict)  # track id -> seq of the last frame they were in
    _last_seq: int | None = None

    @property
    def finished(self) -> bool:
        return self.stage in ("ended", "failed")

    def apply(self, message: p.Message) -> None:
        """Fold one server message into the view."""
        if isinstance(message, p.Hello):
            self.untrained = bool(message.model and message.model.untrained)
        elif isinstance(message, p.Progress):
            self.job_id = message.job_id
            if message.stage == "queued" and self.stage == "connecting":
                self.stage = "queued"
        elif isinstance(message, p.Accepted):
            self.job_id, self.threshold, self.band = message.job_id, message.threshold, message.inconclusive_band
            self.rate_hz = 1.0 / message.policy.every_s if message.policy.every_s else None
            self.untrained = message.model.untrained
            self.stage = "live"
        elif isinstance(message, p.Notice):
            self.notices.append((message.kind, notice_text(message)))
            if message.kind == "reconnecting":
                self.stage = "reconnecting"
            elif message.kind == "connected":
                self.stage = "live" if self.rate_hz is not None else "connected"
        elif isinstance(message, p.FrameResult):
            self._add_frame(message)
        elif isinstance(message, p.LiveStatus):
            self.people, self.stats, self.lag_s = message.people, message.stats, message.lag_s
            self.lags.append(message.lag_s)
        elif isinstance(message, p.Done):
            self.report, self.job_id, self.stage = message.report, message.job_id, "ended"
        elif isinstance(message, p.Error):
            self.fail(message.code, message.message)
            return
        self.version += 1

    def fail(self, code: str, message: str) -> None:
        """The session failed (a server ``error``, or the client could not talk to the server)."""
        self.error, self.stage = (code, message), "failed"
        self.version += 1

    def stopping(self) -> None:
        if not self.finished:
            self.stage = "stopping"
            self.version += 1

    def _add_frame(self, frame: p.FrameResult) -> None:
        self.frames_analysed += 1
        self.first_time_s = frame.time_s if self.first_time_s is None else self.first_time_s
        self.latest_time_s = frame.time_s
        if self.stage in ("connecting", "queued", "connected", "reconnecting"):
            self.stage = "live"
        if not frame.faces:
            self.no_face.append(frame.time_s)
        for face in frame.faces:
            track = face.track_id
            if track not in self.lines:
                self.lines[track] = deque(maxlen=MAX_POINTS)
            if track not in self._runs or self._seen_at[track] != self._last_seq:  # absent before: a new stretch
                self._runs[track] = self._runs.get(track, -1) + 1
            self._seen_at[track] = frame.seq
            self.lines[track].append(LivePoint(frame.time_s, face.fake_prob, self._runs[track]))
            if face.overlay_jpeg_b64:
                self.overlays[track] = face.overlay_jpeg_b64
        self._last_seq = frame.seq
        self._prune(frame.time_s - self.window_s)

    def _prune(self, oldest_s: float) -> None:
        """Forget what left the window, and the least recently seen people beyond ``MAX_PEOPLE``."""
        while self.no_face and self.no_face[0] < oldest_s:
            self.no_face.popleft()
        for track, points in list(self.lines.items()):
            while points and points[0].time_s < oldest_s:
                points.popleft()
            if not points:
                self._forget(track)
        while len(self.lines) > MAX_PEOPLE:
            self._forget(min(self.lines, key=lambda t: self.lines[t][-1].time_s))

    def _forget(self, track: int) -> None:
        for table in (self.lines, self.overlays, self._runs, self._seen_at):
            table.pop(track, None)

    def x_range(self) -> tuple[float, float]:
        """The timeline's stream-time span: from the first frame, at least ``MIN_SPAN_S`` wide, growing with
        the session up to ``window_s``, then rolling: it ends at the newest frame."""
        first = self.first_time_s or 0.0
        end = max(self.latest_time_s or first, first + min(MIN_SPAN_S, self.window_s))
        return max(first, end - self.window_s), end


def notice_text(n: p.Notice) -> str:
    """``Reconnecting: attempt 2 of 5 in 1.0 s — <reason>`` / ``Connected — ...`` / ``Frame refused — ...``."""
    if n.kind == "reconnecting":
        limit = f" of {n.limit}" if n.limit is not None else ""
        delay = f" in {n.delay_s:.1f} s" if n.delay_s is not None else ""
        return f"Reconnecting: attempt {n.attempt}{limit}{delay} — {n.message}"
    if n.kind == "connected":
        again = f" (after {n.attempt} reconnect{'s' if n.attempt != 1 else ''})" if n.attempt else ""
        return f"Connected{again} — {n.message}"
    return f"Frame refused — {n.message}"


def clock(seconds: float) -> str:
    """Stream seconds as ``m:ss`` (``h:mm:ss`` from an hour on)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def time_ticks(start_s: float, end_s: float, target: int = 6) -> list[float]:
    """Round stream times within [start_s, end_s]: multiples of 1, 2, 5, 10, 15, 30 s or whole minutes."""
    span = max(end_s - start_s, 1e-9)
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= target), 3600)
    first = -(-start_s // step) * step
    return [first + i * step for i in range(int((end_s - first) // step) + 1)]


def live_error_box(code: str, message: str) -> str:
    """The red box for a failed live session; live codes get their own hints, others cards.py's."""
    if code in LIVE_HINTS:
        title, hint = LIVE_HINTS[code]
        detail = f'<div class="dff-err-detail">{escape(message)}</div>' if message else ""
        return (
            f'<div class="dff-error" role="alert" data-code="{escape(code)}"><div class="dff-err-title">'
            f"{escape(title)}</div><div>{escape(hint)}</div>{detail}</div>"
        )
    return cards.error_box(code, message)


def status_html(view: LiveView) -> str:
    """The status line: an error box, or the stage with what is being watched and the stream time."""
    if view.error is not None:
        return live_error_box(*view.error)
    what = "Webcam" if view.kind == "webcam" else view.name
    detail = what
    if view.latest_time_s is not None:
        detail += f" · stream time {clock(view.latest_time_s)} · {view.frames_analysed} frames analysed"
    if view.rate_hz:
        detail += f" · {view.rate_hz:g}/s"
    if view.stage == "stopping":
        detail += " · waiting for the session report"
    return cards.status_html(view.stage.capitalize(), detail)


def timeline_svg(view: LiveView) -> str:
    """The rolling timeline: x = stream time over the last ``window_s``, y = P(fake), a line per person."""
    x0, x1 = view.x_range()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * min(max((t - x0) / (x1 - x0), 0.0), 1.0)

    def y(prob: float) -> float:
        return TOP + plot_h * (1.0 - min(max(prob, 0.0), 1.0))

    bottom = y(0.0)
    lo, hi = max(0.0, view.threshold - view.band), min(1.0, view.threshold + view.band)
    parts = [
        f'<svg class="dff-live-timeline" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        'aria-label="P(fake) over the last minutes, one line per person" xmlns="http://www.w3.org/2000/svg" '
        'font-family="system-ui, sans-serif" font-size="12">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#FFFFFF" stroke="{GRID}"/>',
        f'<rect class="band" x="{LEFT}" y="{y(hi):.1f}" width="{plot_w}" height="{y(lo) - y(hi):.1f}" '
        f'fill="#9CA3AF" fill-opacity="0.18"/>',
    ]
    for prob in (0.0, 0.5, 1.0):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(prob)}" y2="{y(prob)}" stroke="{GRID}"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y(prob) + 4}" text-anchor="end" fill="{INK}">{prob:.1f}</text>')
    for t in time_ticks(x0, x1):
        parts.append(f'<text x="{x(t):.1f}" y="{bottom + 18}" text-anchor="middle" fill="{INK}">{clock(t)}</text>')
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" text-anchor="middle" fill="{INK}">stream time '
        f"(the last {clock(view.window_s)} at most)</text>"
    )
    parts.append(
        f'<line class="thr" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(view.threshold):.1f}" '
        f'y2="{y(view.threshold):.1f}" stroke="{FAKE_RED}" stroke-dasharray="6 4" stroke-width="1.5"/>'
    )
    for t in view.no_face:
        parts.append(f'<rect class="nf" x="{x(t) - 2:.1f}" y="{bottom - 5}" width="4" height="5" fill="#9CA3AF"/>')
    for track, points in sorted(view.lines.items()):
        if not points:
            continue
        color, name = tl.person_color(track), escape(tl.person_name(track))
        parts.append(f'<g class="person" data-track="{track}" data-name="{name}">')
        runs: dict[int, list[LivePoint]] = {}
        for pt in points:
            runs.setdefault(pt.run, []).append(pt)
        for run in runs.values():
            coords = " ".join(f"{x(pt.time_s):.1f},{y(pt.fake_prob):.1f}" for pt in run)
            if len(run) > 1:
                parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        last = points[-1]
        parts.append(
            f'<circle class="last" cx="{x(last.time_s):.1f}" cy="{y(last.fake_prob):.1f}" r="4.5" fill="{color}" '
            f'stroke="#FFFFFF" stroke-width="1.5"><title>{name} · {clock(last.time_s)} · P(fake) '
            f"{last.fake_prob:.2f}</title></circle></g>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="lg-item"><span class="lg-swatch" style="background:{tl.person_color(t)}"></span>'
        f"{escape(tl.person_name(t))}</span>"
        for t in sorted(view.lines)
    )
    return f'<div class="dff-chart"><div class="dff-legend">{legend}</div>{"".join(parts)}</div>'


def people_html(view: LiveView) -> str:
    """The current verdict per person: label and score over their last window of faces."""
    if not view.people:
        return ""
    out = []
    for person in sorted(view.people, key=lambda q: q.track_id):
        b64 = view.overlays.get(person.track_id)
        color = tl.person_color(person.track_id)
        thumb = (
            f'<img class="dff-thumb" alt="" src="data:image/jpeg;base64,{b64}"/>'
            if b64
            else f'<div class="dff-thumb dff-thumb-none" style="background:{color}">{person.track_id + 1}</div>'
        )
        score = "—" if person.score is None else f"{person.score:.2f}"
        out.append(
            f'<div class="dff-person dff-live-person" data-track="{person.track_id}" data-label="{person.label}">'
            f'{thumb}<div><div class="dff-p-name"><span class="lg-swatch" style="background:{color}"></span>'
            f"{escape(tl.person_name(person.track_id))}</div>"
            f'<span class="dff-badge dff-{person.label}">{escape(tl.LABEL_TITLES[person.label])}</span> '
            f'<span class="dff-p-score">P(fake) {score}</span>'
            f'<div class="dff-p-meta">over their last {person.window_faces} face'
            f"{'' if person.window_faces == 1 else 's'} · seen {clock(person.first_s)}–{clock(person.last_s)}"
            "</div></div></div>"
        )
    grid = "".join(out)
    return f'<div class="dff-people"><div class="dff-h">Now, per person</div><div class="dff-p-grid">{grid}</div></div>'


def counters_html(view: LiveView) -> str:
    """Frames analysed and dropped, the verdict lag (now and the recent median), reconnects."""
    s = view.stats or p.LiveCounters(0, 0, 0, 0, 0)
    lag = "—" if view.lag_s is None else f"{view.lag_s:.2f} s"
    median = f" (median {statistics.median(view.lags):.2f} s)" if view.lags else ""
    items = [
        ("Frames analysed", str(view.frames_analysed)),
        ("Dropped (analysis behind)", str(s.dropped)),
        ("Verdict lag", lag + median),
        ("Reconnects", str(s.reconnects)),
        ("Decoded / sampled", f"{s.decoded} / {s.sampled}"),
    ]
    cells = "".join(f'<div class="dff-kv"><span>{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in items)
    return (
        f'<div class="dff-live-counters" data-analysed="{view.frames_analysed}" data-dropped="{s.dropped}" '
        f'data-reconnects="{s.reconnects}" data-lag="{"" if view.lag_s is None else f"{view.lag_s:.3f}"}">{cells}</div>'
    )


def notices_html(view: LiveView) -> str:
    """The latest few notices (connected, reconnecting, refused frames), newest last."""
    kinds = {"connected": "ok", "reconnecting": "warn", "refused": "warn"}
    return "".join(
        f'<div class="dff-note dff-note-{kinds.get(kind, "info")} dff-live-notice" data-kind="{escape(kind)}">'
        f"{escape(text)}</div>"
        for kind, text in view.notices
    )


def _wall(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


def report_html(report: p.Report, band: float, thumbs: Mapping[int, str] | None = None) -> str:
    """The session report: the verdict card, the session's facts (wall times, end, counters, lag
    percentiles) and every person with the label the server gave them (``thumbs``: track id -> their
    newest face overlay, base64 JPEG, where the view still has one)."""
    session = report.session
    facts = ""
    end = ""
    if session is not None:
        end = session.end
        s = session.stats
        lags = (
            "—" if session.lag_p50_s is None else f"p50 {session.lag_p50_s:.2f} s, p95 {(session.lag_p95_s or 0):.2f} s"
        )
        why = f" — {session.end_message}" if session.end_message else ""
        rows = [
            ("Started", _wall(session.started_s)),
            ("Stopped", f"{_wall(session.stopped_s)} ({clock(session.stopped_s - session.started_s)})"),
            ("End", f"{session.end}{why}"),
            ("Frames analysed", str(session.frames_analysed)),
            ("Dropped / sampled", f"{s.dropped} / {s.sampled}"),
            ("Reconnects", str(s.reconnects)),
            ("Verdict lag", lags),
        ]
        cells = "".join(f'<div class="dff-kv"><span>{escape(k)}</span><b>{escape(v)}</b></div>' for k, v in rows)
        facts = f'<div class="dff-session-facts">{cells}</div>'
    people = cards.people_cards(tl.person_summaries(report, ()), thumbs or {}, report.threshold)
    return (
        f'<div class="dff-live-report" data-label="{report.label}" data-end="{escape(end)}">'
        f'<div class="dff-h">Session report</div>{cards.verdict_card(tl.verdict(report), band)}{facts}{people}</div>'
    )
