"""watch(): a live session end to end on pushed frames, with the real detector and random weights."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import SourceTimeout
from pipeline.live_types import EndReason, LiveOptions, LiveUpdate, PersonGone, SourceConnected
from pipeline.run import watch
from pipeline.sources.push import PushSource
from pipeline.types import AnalysisStart, Label, MediaKind, Report
from tests.media import face_scene

pytestmark = pytest.mark.timeout(120)
TWO = face_scene(640, 360, [(60, 80, 150), (400, 90, 150)])
ONE = face_scene(640, 360, [(60, 80, 150)])


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu")


@pytest.fixture(scope="module")
def engine(settings):
    with Engine.open(settings, allow_untrained=True) as eng:
        yield eng


def test_a_pushed_session_yields_start_updates_and_a_live_report(engine, settings) -> None:
    options = LiveOptions(rate_hz=2.0, queue_frames=64, gone_s=1.5)
    source = PushSource("webcam", options)
    for i in range(8):  # 4 s at 2 fps with two people, then 3 s with one: the second one leaves
        source.push_image(TWO, i * 0.5)
    for i in range(8, 14):
        source.push_image(ONE, i * 0.5)
    source.finish()
    events = list(watch(source, engine, settings, options))
    start, connected, *middle, report = events
    assert isinstance(start, AnalysisStart) and start.media.kind is MediaKind.LIVE and start.planned_frames is None
    assert isinstance(connected, SourceConnected) and connected.info == start.media
    updates = [e for e in middle if isinstance(e, LiveUpdate)]
    gone = [e for e in middle if isinstance(e, PersonGone)]
    assert [u.verdict.index for u in updates] == list(range(14))
    assert [len(u.verdict.faces) for u in updates] == [2] * 8 + [1] * 6
    assert all(0 <= u.lag_s < 60 and u.captured_s > 0 for u in updates)
    assert [len(u.people) for u in updates][:8] == [2] * 8 and len(updates[-1].people) == 1
    assert len(gone) == 1 and gone[0].person.n_faces == 8, "the person who left is closed with their 8 faces"
    assert updates[-1].stats.delivered == 14 and updates[-1].stats.dropped == 0
    assert isinstance(report, Report) and report.frames == ()
    assert report.session is not None and report.session.end is EndReason.ENDED
    assert report.session.frames_analysed == 14 and report.session.lag_p95_s is not None
    assert sorted(t.n_faces for t in report.tracks) == [8, 14]
    assert report.label in (Label.REAL, Label.FAKE, Label.INCONCLUSIVE)
    assert report.timings.detect_s > 0 and report.timings.classify_s > 0


def test_a_session_stopped_by_its_user_says_so(engine, settings) -> None:
    options = LiveOptions(rate_hz=2.0, read_timeout_s=30.0)
    source = PushSource("webcam", options)
    stop = threading.Event()

    def feed() -> None:
        for i in range(3):
            source.push_image(ONE, i * 0.5)
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        source.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    events = list(watch(source, engine, settings, options, stopping=stop.is_set))
    feeder.join(5)
    report = events[-1]
    assert isinstance(report, Report) and report.session is not None
    assert report.session.end is EndReason.STOPPED and report.incomplete is None
    assert 1 <= report.session.frames_analysed <= 3


def test_a_source_that_goes_silent_ends_the_session_failed_with_what_was_analysed(engine, settings) -> None:
    options = LiveOptions(rate_hz=2.0, read_timeout_s=0.5)
    source = PushSource("webcam", options)
    source.push_image(ONE, 0.0)
    source.push_image(ONE, 0.5)
    t0 = time.monotonic()
    events = list(watch(source, engine, settings, options))
    report = events[-1]
    assert isinstance(report, Report) and report.session is not None
    assert report.session.end is EndReason.FAILED and "no frame came for 0.5 s" in (report.session.end_message or "")
    assert report.incomplete == report.session.end_message
    assert report.session.frames_analysed == 2 and sum(t.n_faces for t in report.tracks) == 2
    assert time.monotonic() - t0 < 20


def test_a_source_that_never_connects_raises_before_the_start(engine, settings) -> None:
    source = PushSource("webcam", LiveOptions(open_timeout_s=0.2))
    with pytest.raises(SourceTimeout):
        next(watch(source, engine, settings, source.options))
