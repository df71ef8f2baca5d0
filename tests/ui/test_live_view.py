"""The Live tab's pure view (ui/live_view.py): live messages folded into a bounded rolling state, and that
state drawn as HTML/SVG. No Gradio, no server."""

from __future__ import annotations

import re

import pytest

from stream import protocol as p
from tests.ui.test_timeline import report
from ui import live_view as lv

JOB = "job-0123456789"


def frame(seq: int, time_s: float, people: dict[int, float], overlay: str | None = None) -> p.FrameResult:
    """An analysed frame; ``people``: track id -> P(fake) (empty: a frame without a face)."""
    faces = tuple(
        p.Face(face_index=i, xyxy=(10.0, 10.0, 50.0, 50.0), detector_prob=0.99, fake_prob=prob, track_id=track,
               overlay_jpeg_b64=overlay)
        for i, (track, prob) in enumerate(people.items())
    )  # fmt: skip
    return p.FrameResult(
        job_id=JOB, seq=seq, index=seq, time_s=time_s, score=max(people.values()) if people else None, faces=faces
    )


def person(track: int, score: float | None, label: str = "real", window: int = 4) -> p.Person:
    return p.Person(
        track_id=track, first_s=0.0, last_s=12.0, n_faces=9, window_faces=window, score=score, label=label,
        confident_fake=label == "fake",
    )  # fmt: skip


def status(seq: int, lag_s: float, people: tuple[p.Person, ...] = (), dropped: int = 0) -> p.LiveStatus:
    stats = p.LiveCounters(decoded=10 * (seq + 1), sampled=seq + 1 + dropped, dropped=dropped, delivered=seq + 1,
                           reconnects=1)  # fmt: skip
    return p.LiveStatus(job_id=JOB, seq=seq, lag_s=lag_s, people=people, stats=stats)


def feed(view: lv.LiveView, frames: list[p.FrameResult]) -> lv.LiveView:
    for f in frames:
        view.apply(f)
    return view


def live_report(**session) -> p.Report:
    base = {
        "started_s": 1_700_000_000.0, "stopped_s": 1_700_000_075.0, "end": "stopped", "end_message": None,
        "stats": {"decoded": 900, "sampled": 150, "dropped": 3, "delivered": 147, "reconnects": 2},
        "frames_analysed": 147, "lag_p50_s": 0.42, "lag_p95_s": 0.93,
    }  # fmt: skip
    media = {"name": "rtsp://cam/1", "size_bytes": None, "sha256": None, "kind": "live", "duration_s": None}
    return p.decode_report({**report(media=media).to_json(), "session": {**base, **session}})


# ---------------------------------------------------------------------------------------------- folding


def test_each_person_gets_a_line_broken_where_they_were_absent() -> None:
    view = feed(
        lv.LiveView("url", "rtsp://cam"),
        [frame(0, 0.0, {0: 0.2}), frame(1, 0.5, {0: 0.3, 1: 0.8}), frame(2, 1.0, {1: 0.9}), frame(3, 1.5, {0: 0.4})],
    )
    assert sorted(view.lines) == [0, 1]
    assert [(pt.time_s, pt.fake_prob, pt.run) for pt in view.lines[0]] == [(0.0, 0.2, 0), (0.5, 0.3, 0), (1.5, 0.4, 1)]
    assert [pt.run for pt in view.lines[1]] == [0, 0]
    assert view.frames_analysed == 4 and view.latest_time_s == 1.5 and view.stage == "live"
    svg = lv.timeline_svg(view)
    assert svg.count('<g class="person"') == 2
    assert svg.count("<polyline") == 2, "person 1's two-point stretch and person 2's; a lone point is no line"
    assert svg.count('class="last"') == 2


def test_frames_without_faces_are_ticks_and_no_score_is_made_up() -> None:
    view = feed(lv.LiveView("webcam", "webcam"), [frame(0, 0.0, {}), frame(1, 0.5, {}), frame(2, 1.0, {0: 0.6})])
    assert list(view.no_face) == [0.0, 0.5] and [pt.fake_prob for pt in view.lines[0]] == [0.6]
    assert lv.timeline_svg(view).count('class="nf"') == 2


def test_only_the_last_window_of_stream_time_is_kept() -> None:
    view = lv.LiveView("url", "u", window_s=10.0)
    feed(view, [frame(i, i * 0.5, {0: 0.5} if i % 3 else {}) for i in range(100)])  # 0..49.5 s
    assert view.lines[0][0].time_s >= 49.5 - 10.0 and view.no_face[0] >= 39.5
    assert len(view.lines[0]) + len(view.no_face) <= 21


def test_memory_stays_bounded_for_hours_of_people_coming_and_going() -> None:
    """Two hours at 2 frames a second, a new person every 20 s and three in every frame: the view holds
    at most a window of points for at most MAX_PEOPLE people, whatever came before."""
    view = lv.LiveView("url", "u")
    for i in range(2 * 3600 * 2):
        t = i / 2
        view.apply(frame(i, t, {int(t // 20) + k: 0.5 for k in range(3)}, overlay="AAAA"))
        if i % 97 == 0:
            view.apply(status(i, 0.3, (person(0, 0.5),)))
    assert len(view.lines) <= lv.MAX_PEOPLE
    assert all(len(points) <= lv.MAX_POINTS for points in view.lines.values())
    assert all(points[0].time_s >= t - view.window_s for points in view.lines.values())
    assert len(view._runs) == len(view._seen_at) == len(view.lines) and len(view.overlays) <= len(view.lines)
    assert len(view.lags) <= lv.MAX_LAGS and view.frames_analysed == 2 * 3600 * 2


def test_a_faster_rate_than_the_cap_keeps_the_newest_points() -> None:
    view = feed(lv.LiveView("url", "u"), [frame(i, i / 60, {0: 0.1}) for i in range(lv.MAX_POINTS + 50)])
    points = view.lines[0]
    assert len(points) == lv.MAX_POINTS and points[-1].time_s == pytest.approx((lv.MAX_POINTS + 49) / 60)


def test_the_least_recently_seen_people_leave_first_beyond_the_cap() -> None:
    frames = [frame(i, float(i), {i: 0.5}) for i in range(lv.MAX_PEOPLE + 3)]
    view = feed(lv.LiveView("url", "u"), frames)
    assert sorted(view.lines) == list(range(3, lv.MAX_PEOPLE + 3))


@pytest.mark.parametrize(
    ("first", "latest", "expected"),
    [
        (None, None, (0.0, lv.MIN_SPAN_S)),  # nothing yet
        (5.0, 12.0, (5.0, 5.0 + lv.MIN_SPAN_S)),  # young: a fixed span from the first frame
        (0.0, 100.0, (0.0, 100.0)),  # growing with the session
        (0.0, 1000.0, (1000.0 - lv.WINDOW_S, 1000.0)),  # then rolling: the last window
    ],
)
def test_the_timeline_span_grows_then_rolls(first, latest, expected) -> None:
    view = lv.LiveView("url", "u", first_time_s=first, latest_time_s=latest)
    assert view.x_range() == pytest.approx(expected)


def test_messages_set_the_stage_the_threshold_and_the_counters() -> None:
    view = lv.LiveView("url", "http://cam/live.ts")
    assert view.stage == "connecting"
    view.apply(p.Progress(job_id=JOB, stage="queued", frames_done=0, frames_planned=None, queue_position=0))
    assert view.stage == "queued" and view.job_id == JOB
    view.apply(p.Notice(job_id=JOB, kind="reconnecting", message="connection reset", attempt=2, limit=5, delay_s=1.0))
    assert view.stage == "reconnecting"
    version = view.version
    view.apply(status(0, 0.25, (person(1, 0.7, "fake"), person(0, None, "no_face")), dropped=4))
    assert view.version > version and view.lag_s == 0.25 and view.stats.dropped == 4
    view.stopping()
    assert view.stage == "stopping"
    view.apply(p.Error(code="source_unavailable", message="gone", job_id=JOB))
    assert view.finished and view.stage == "failed" and view.error == ("source_unavailable", "gone")
    view.stopping()
    assert view.stage == "failed", "a finished session is not stopping"


# -------------------------------------------------------------------------------------------- drawing


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (9.6, "0:10"), (75, "1:15"), (3600, "1:00:00"), (3725, "1:02:05"), (-2, "0:00")]
)
def test_clock(seconds, text) -> None:
    assert lv.clock(seconds) == text


@pytest.mark.parametrize(
    ("start", "end", "ticks"),
    [
        (0.0, 30.0, [0, 5, 10, 15, 20, 25, 30]),
        (0.0, 180.0, [0, 30, 60, 90, 120, 150, 180]),
        (1000.0, 1180.0, [1020, 1050, 1080, 1110, 1140, 1170]),
        (12.3, 13.1, [13]),
    ],
)
def test_time_ticks_are_round_stream_times_inside_the_span(start, end, ticks) -> None:
    assert lv.time_ticks(start, end) == ticks


@pytest.mark.parametrize(
    ("notice", "text"),
    [
        (p.Notice(JOB, "connected", "h264 320×240"), "Connected — h264 320×240"),
        (p.Notice(JOB, "connected", "back", attempt=2), "Connected (after 2 reconnects) — back"),
        (p.Notice(JOB, "reconnecting", "reset", 1, 5, 0.5), "Reconnecting: attempt 1 of 5 in 0.5 s — reset"),
        (p.Notice(JOB, "refused", "not a JPEG or PNG"), "Frame refused — not a JPEG or PNG"),
    ],
)
def test_notices_in_words(notice, text) -> None:
    assert lv.notice_text(notice) == text


def test_current_verdicts_per_person_with_label_score_and_window() -> None:
    view = lv.LiveView("url", "u", overlays={1: "QUJD"})
    view.apply(status(3, 0.4, (person(1, 0.87, "fake", window=6), person(0, None, "no_face", window=1))))
    html = lv.people_html(view)
    cards = re.findall(r'class="dff-person dff-live-person" data-track="(\d)" data-label="(\w+)"', html)
    assert cards == [("0", "no_face"), ("1", "fake")], "ordered by person"
    assert "P(fake) 0.87" in html and "P(fake) —" in html and "last 6 faces" in html and "last 1 face " in html
    assert "FAKE" in html and "NO FACE" in html and 'src="data:image/jpeg;base64,QUJD"' in html
    assert lv.people_html(lv.LiveView("url", "u")) == ""


def test_counters_show_analysed_dropped_lag_and_reconnects() -> None:
    view = feed(lv.LiveView("url", "u"), [frame(i, i / 2, {0: 0.1}) for i in range(3)])
    for lag in (0.2, 0.4, 0.9):
        view.apply(status(2, lag, dropped=5))
    html = lv.counters_html(view)
    assert 'data-analysed="3"' in html and 'data-dropped="5"' in html and 'data-reconnects="1"' in html
    assert 'data-lag="0.900"' in html and "0.90 s (median 0.40 s)" in html


def test_status_line_says_the_stage_or_the_error_with_a_hint() -> None:
    view = feed(lv.LiveView("url", "rtsp://cam/<1>"), [frame(0, 61.0, {0: 0.1})])
    line = lv.status_html(view)
    assert 'data-stage="Live"' in line and "rtsp://cam/&lt;1&gt;" in line and "stream time 1:01" in line
    assert "Webcam" in lv.status_html(lv.LiveView("webcam", "webcam"))
    view.fail("source_timeout", "nothing in 10 s")
    box = lv.status_html(view)
    assert 'data-code="source_timeout"' in box and "sent nothing in time" in box and "nothing in 10 s" in box
    view.fail("busy", "")
    assert "live session slot" in lv.status_html(view)
    view.fail("connect", "cannot connect")  # not a live code: ui/cards.py's hint
    assert "Cannot reach the analysis service" in lv.status_html(view)


def test_the_session_report_has_the_verdict_wall_times_counters_lag_and_people() -> None:
    html = lv.report_html(live_report(end_message="the stream ended"), 0.05, {0: "QUJD"})
    assert 'data-label="fake"' in html and 'data-end="stopped"' in html
    facts = html[html.index("dff-session-facts") :]
    assert "Started" in facts and "Stopped" in facts and "(1:15)" in facts, "wall times and the duration"
    assert "stopped — the stream ended" in facts and "<b>147</b>" in facts and "3 / 150" in facts
    assert "p50 0.42 s, p95 0.93 s" in facts and "<b>2</b>" in facts
    assert html.count('class="dff-person"') == 2 and 'src="data:image/jpeg;base64,QUJD"' in html
    assert "—" in lv.report_html(live_report(lag_p50_s=None, lag_p95_s=None), 0.05), "no lag without frames"
