"""What ``dff watch`` prints and writes, as pure functions of the records ``pipeline.run.watch()`` yields
(a ``cmd_`` module: the CLI's, so it may read pipeline records; the web UI never does).

    LiveUpdate         ─▶ update_line   "0:12.5  2 people  #1 real 0.12  #2 FAKE 0.87  lag 0.42 s"
                       ─▶ frame_row     one JSON Lines row (the session report keeps no frame rows)
    SourceNotice       ─▶ notice_line   "connected: ..." / "reconnecting: attempt 2/5 in 1.0 s: reason"
    PersonGone         ─▶ gone_line     "person #2 left: real 0.12 over 14 faces (0:01.0-0:08.5)"
    LiveUpdate (every few s) ─▶ Summary.line  counters, lag p50 so far, every person's current label
    Report (last)      ─▶ session_lines the verdict, each person, the counters, lag p50/p95

Nothing here reads a clock or a file: the caller passes wall times in, so every line is testable.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.live_types import (
    LiveStats,
    LiveUpdate,
    PersonGone,
    PersonNow,
    SourceConnected,
    SourceNotice,
    SourceReconnecting,
)
from pipeline.types import Label, Report, Track

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
LAG_WINDOW = 4096  # the summary's lag p50 is over the last this many frames (bounded memory for hours)


def parse_duration_s(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"2h"``, ``"1.5h"`` -> seconds (> 0). Raises ValueError otherwise."""
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()] if match else math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"a duration must be a positive number with an optional unit s, m or h (90, 90s, 10m, 2h), got {text!r}"
        )
    return seconds


def clock(seconds: float) -> str:
    """Stream or wall seconds as ``m:ss.s`` (``h:mm:ss.s`` from an hour on): ``12.5`` -> ``0:12.5``."""
    tenths = round(max(0.0, seconds) * 10)
    hours, rest = divmod(tenths, 36000)
    minutes, rest = divmod(rest, 600)
    secs = f"{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{minutes:02d}:{secs}" if hours else f"{minutes}:{secs}"


def label_text(label: Label) -> str:
    """``real``, ``FAKE`` (capitals: the one a person must not miss), ``inconclusive``, ``no face``."""
    return "FAKE" if label is Label.FAKE else label.value.replace("_", " ")


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


def _person(p: PersonNow) -> str:
    return f"#{p.track_id} {label_text(p.label)} {_score(p.score)}"


def _people(n: int) -> str:
    return f"{n} {'person' if n == 1 else 'people'}"


def update_line(update: LiveUpdate) -> str:
    """One analysed frame: stream time, the people tracked now with their current (window) verdict, lag."""
    v = update.verdict
    people = "  ".join(_person(p) for p in update.people)
    faces = "no face" if not v.faces else _people(len(update.people))
    parts = [clock(v.time_s), faces] + ([people] if people else []) + [f"lag {update.lag_s:.2f} s"]
    return "  ".join(parts)


def notice_line(notice: SourceNotice) -> str:
    """A source notice for people: a (re)connection with what the stream is, or a reconnect attempt."""
    if isinstance(notice, SourceConnected):
        i = notice.info
        what = ", ".join(
            x
            for x in (
                f"{i.width}×{i.height}",
                i.codec,
                f"{i.fps:g} fps" if i.fps else None,
            )
            if x
        )
        again = f" again (after attempt {notice.attempt})" if notice.attempt else ""
        return f"connected{again}: {i.name} ({what})"
    if isinstance(notice, SourceReconnecting):
        return f"reconnecting: attempt {notice.attempt}/{notice.limit} in {notice.delay_s:.1f} s: {notice.reason}"
    raise TypeError(f"not a source notice: {type(notice).__name__}")


def gone_line(gone: PersonGone) -> str:
    """A person closed after ``gone_s`` unseen, with their whole-life verdict."""
    p = gone.person
    return (
        f"person #{p.track_id} left: {label_text(p.label)} {_score(p.score)} over {p.n_faces} faces "
        f"({clock(p.first_s)}-{clock(p.last_s)})"
    )


def counters(stats: LiveStats, analysed: int) -> str:
    """``58 analysed, 3 dropped of 61 sampled (4.9%), 0 reconnects``."""
    return (
        f"{analysed} analysed, {stats.dropped} dropped of {stats.sampled} sampled "
        f"({100 * stats.dropped_fraction:.1f}%), {stats.reconnects} reconnect{'' if stats.reconnects == 1 else 's'}"
    )


class Summary:
    """The every-few-seconds summary: counts analysed frames and keeps their last ``LAG_WINDOW`` lags."""

    def __init__(self, every_s: float, started_wall_s: float) -> None:
        self.every_s = every_s
        self.analysed = 0
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._started = started_wall_s
        self._next = started_wall_s + every_s

    def add(self, update: LiveUpdate) -> None:
        self.analysed += 1
        self._lags.append(update.lag_s)

    def due(self, wall_s: float) -> bool:
        """Whether a summary is due at ``wall_s``; the next one is then ``every_s`` later."""
        if wall_s < self._next:
            return False
        self._next = wall_s + self.every_s
        return True

    def line(self, update: LiveUpdate, wall_s: float) -> str:
        """``summary 0:30: 58 analysed, 3 dropped of 61 sampled (4.9%), 0 reconnects, lag p50 0.41 s, ...``."""
        p50 = float(np.percentile(self._lags, 50)) if self._lags else None
        lag = "-" if p50 is None else f"{p50:.2f} s"
        people = ", ".join(f"#{p.track_id} {label_text(p.label)}" for p in update.people) or "nobody"
        return (
            f"summary {clock(wall_s - self._started)}: {counters(update.stats, self.analysed)}, lag p50 {lag}, "
            f"{_people(len(update.people))}: {people}"
        )


def frame_row(update: LiveUpdate) -> dict[str, Any]:
    """One JSON Lines row per analysed frame (plain JSON types): the frame's faces with their track ids,
    the capture wall time and lag, and every person's current verdict."""
    v = update.verdict
    return {
        "index": v.index,
        "time_s": v.time_s,
        "captured_s": update.captured_s,
        "lag_s": update.lag_s,
        "score": v.score,
        "faces": [
            {
                "face_index": f.box.face_index,
                "xyxy": [float(x) for x in f.box.xyxy],
                "detector_prob": float(f.box.detector_prob),
                "fake_prob": float(f.fake_prob),
                "track_id": f.track_id,
            }
            for f in v.faces
        ],
        "people": [
            {"track_id": p.track_id, "score": p.score, "label": p.label.value, "window_faces": p.window_faces}
            for p in update.people
        ],
        "dropped": update.stats.dropped,
    }


def _track_line(t: Track) -> str:
    confident = ", confident fake" if t.confident_fake else ""
    return (
        f"  person #{t.track_id}: {label_text(t.label)} {_score(t.score)} over {t.n_faces} faces "
        f"({clock(t.first_time_s)}-{clock(t.last_time_s)}){confident}"
    )


def session_lines(report: Report, stopped_by: str | None = None) -> Sequence[str]:
    """The session report: how it ended, the verdict over every person's whole life, each person, the
    counters and the lag percentiles. ``stopped_by`` says who stopped it (``Ctrl-C``, ``--for 10m``)."""
    s = report.session
    if s is None:
        raise ValueError("not a live report: Report.session is None")
    why = s.end_message or stopped_by
    head = f"session {s.end.value} after {clock(s.stopped_s - s.started_s)}" + (f" ({why})" if why else "")
    n = len(report.tracks)
    segments = sum(1 for seg in report.segments if seg.track_id is None)
    verdict = (
        f"verdict: {label_text(report.label)} {_score(report.score)} ({_people(n)}, "
        f"{segments} suspicious segment{'' if segments == 1 else 's'}, threshold {report.threshold:.2f})"
    )
    if report.model.untrained:
        verdict = "UNTRAINED MODEL — " + verdict
    lag = (
        "lag: -"
        if s.lag_p50_s is None or s.lag_p95_s is None
        else f"lag: p50 {s.lag_p50_s:.2f} s, p95 {s.lag_p95_s:.2f} s"
    )
    return [
        f"{report.media.name}: {head}",
        verdict,
        *(_track_line(t) for t in report.tracks),
        f"frames: {counters(s.stats, s.frames_analysed)}, {s.stats.decoded} decoded",
        lag,
    ]
