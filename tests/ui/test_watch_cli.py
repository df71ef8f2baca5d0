"""`dff watch` end to end: real loopback streams (tests/livemedia.py), a tiny random checkpoint, the CLI run
in-process through ``main(argv)`` (a subprocess for Ctrl-C), and the pure lines it prints."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.live_types import LiveStats, LiveUpdate, PersonGone, PersonNow, SourceConnected, SourceReconnecting
from pipeline.models import build_model, save_checkpoint
from pipeline.types import FaceBox, FaceVerdict, FrameVerdict, Label, MediaInfo, MediaKind
from tests.livemedia import LiveClip, SilentServer, TsHttpServer, free_port
from ui.cli import main
from ui.cmd_watch import Stopper, duration_text, rows_path
from ui.cmd_watch_lines import Summary, clock, frame_row, gone_line, notice_line, parse_duration_s, update_line

pytestmark = pytest.mark.timeout(120)
CLIP = LiveClip(width=320, height=240, fps=10, n_faces=2, face_px=100)
LIVE_LINE = re.compile(r"^\d+:\d\d\.\d  (\d+ (person|people)|no face)  .*lag \d+\.\d\d s$")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(build_model(), tmp_path_factory.mktemp("models") / "random.pth")


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _watch(url: str, checkpoint: Path, *extra: str) -> tuple[int, str, str]:
    return _run("watch", url, "--checkpoint", str(checkpoint), "--device", "cpu", "--precision", "fp32", *extra)


def _session_files(path: Path) -> tuple[dict, list[dict]]:
    report = json.loads(path.read_text())
    rows = [json.loads(line) for line in rows_path(path).read_text().splitlines()]
    return report, rows


# --- refused before anything loads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "concat:a.ts|b.ts", "subfile:,,start,0,end,0,,:/etc/passwd", "/etc/passwd", "pipe:0"],
)
def test_a_url_scheme_that_is_not_allowed_is_one_line_and_exit_2(url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    code, out, err = _run("watch", url, "--json", str(tmp_path / "s.json"))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dff watch: error: ") and "Traceback" not in err
    assert "not accepted as a live source" in err
    assert not list(tmp_path.iterdir()), "nothing is written for a session that never started"
    assert time.monotonic() - t0 < 5, "refused before any model loads"


@pytest.mark.parametrize("argv", [["--rate", "0"], ["--rate", "100"]])
def test_a_bad_rate_is_one_line_and_exit_2(argv: list[str]) -> None:
    code, out, err = _run("watch", "http://127.0.0.1:9/x.ts", *argv)
    assert code == 2 and len(err.splitlines()) == 1 and "rate_hz" in err


@pytest.mark.parametrize("bad", ["0", "-3s", "10x", "m", ""])
def test_a_bad_duration_is_refused_by_the_parser(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["watch", "http://127.0.0.1:9/x.ts", f"--for={bad}"])
    assert exc.value.code == 2 and "a duration must be" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 the session ended", "1 the source could not be reached", "2 nothing could start", "130"):
        assert code in text


# --- real loopback streams ------------------------------------------------------------------------------


def test_a_stream_that_ends_cleanly_prints_lines_a_summary_and_the_report_and_writes_both_files(
    checkpoint: Path, tmp_path: Path
) -> None:
    out_json = tmp_path / "out" / "session.json"
    with TsHttpServer(CLIP, seconds=4.0) as server:
        code, out, err = _watch(
            server.url(), checkpoint, "--rate", "2", "--json", str(out_json), "--summary-every", "1"
        )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"connected: {server.url()} (320×240, h264, 10 fps)"
    live = [ln for ln in lines if LIVE_LINE.match(ln)]
    assert any(" 2 people  #" in ln for ln in live), out
    assert any(ln.startswith("summary ") and " analysed, " in ln and "lag p50" in ln for ln in lines), out
    assert any(re.match(rf"^{re.escape(server.url())}: session ended after \d+:\d\d\.\d$", ln) for ln in lines), out
    assert any(ln.startswith("verdict: ") for ln in lines) and any(ln.startswith("lag: p50 ") for ln in lines)
    report, rows = _session_files(out_json)
    session = report["session"]
    assert session["end"] == "ended" and session["end_message"] is None
    assert len(rows) == len(live) == session["frames_analysed"] == report["summary"]["n_frames"] > 0
    assert report["frames"] == [], "the report keeps no frame rows: they are in the .frames.jsonl"
    assert [r["index"] for r in rows] == sorted({r["index"] for r in rows})
    assert session["stats"]["delivered"] == session["frames_analysed"]
    assert session["stats"]["sampled"] == session["stats"]["delivered"] + session["stats"]["dropped"]
    assert report["summary"]["n_people"] == len(report["tracks"]) == 2
    faces = sum(len(r["faces"]) for r in rows)
    assert faces == sum(len(t["fake_probs"]) for t in report["tracks"]), "every face of every row is in a track"
    assert all(0 <= r["lag_s"] < 60 and r["captured_s"] > 0 for r in rows)
    assert f"frames: {session['frames_analysed']} analysed, " in out


def test_for_stops_an_endless_stream_with_a_stopped_report(checkpoint: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "session.json"
    with TsHttpServer(CLIP) as server:  # endless
        t0 = time.monotonic()
        code, out, err = _watch(server.url(), checkpoint, "--for", "3s", "--json", str(out_json))
        took = time.monotonic() - t0
    assert code == 0, err
    assert re.search(r": session stopped after 0:0[3-9]\.\d \(--for 3s elapsed\)$", out, re.M), out
    report, rows = _session_files(out_json)
    assert report["session"]["end"] == "stopped"
    assert len(rows) == report["session"]["frames_analysed"] > 0
    assert took < 60


def test_a_session_that_fails_mid_way_prints_the_report_then_the_reason_and_exits_1(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFF_LIVE_RECONNECTS", "0")
    out_json = tmp_path / "session.json"
    with TsHttpServer(CLIP, cut_after_s=3.0) as server:  # the server resets the connection: a crash
        code, out, err = _watch(server.url(), checkpoint, "--json", str(out_json))
    assert code == 1
    assert re.search(r": session failed after \d+:\d\d\.\d \(.+\)$", out, re.M), out
    assert err.splitlines()[-1].startswith("dff watch: error: the session failed: ")
    report, rows = _session_files(out_json)
    assert report["session"]["end"] == "failed" and report["incomplete"]
    assert len(rows) == report["session"]["frames_analysed"] > 0


@pytest.mark.parametrize("kind", ["closed port", "silent server"])
def test_a_source_that_cannot_be_reached_is_one_line_and_exit_1_within_its_timeout(
    kind: str, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFF_LIVE_OPEN_TIMEOUT_S", "1")
    monkeypatch.setenv("DFF_LIVE_READ_TIMEOUT_S", "1")
    monkeypatch.setenv("DFF_LIVE_RECONNECTS", "0")
    out_json = tmp_path / "session.json"
    t0 = time.monotonic()
    if kind == "closed port":
        code, out, err = _watch(f"http://127.0.0.1:{free_port()}/live.ts", checkpoint, "--json", str(out_json))
    else:
        with SilentServer() as silent:
            code, out, err = _watch(silent.url(), checkpoint, "--json", str(out_json))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("dff watch: error: http://127.0.0.1:"), err
    assert "Traceback" not in err
    if kind == "silent server":
        assert "within 1 s" in err
    assert not out_json.exists() and not rows_path(out_json).exists()
    assert time.monotonic() - t0 < 40


def test_ctrl_c_stops_a_subprocess_watch_with_the_session_report(checkpoint: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "session.json"
    with TsHttpServer(CLIP) as server:
        argv = [sys.executable, "-m", "ui.cli", "watch", server.url(), "--checkpoint", str(checkpoint)]
        argv += ["--device", "cpu", "--json", str(out_json)]
        proc = subprocess.Popen(
            argv, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines: list[str] = []
        first = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if LIVE_LINE.match(lines[-1]):
                    first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert first.wait(90), f"no live line: {lines} {proc.poll()}"
            proc.send_signal(signal.SIGINT)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        reader.join(10)
        err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert any(re.search(r": session stopped after .* \(Ctrl-C\)$", ln) for ln in lines), lines
    report, rows = _session_files(out_json)
    assert report["session"]["end"] == "stopped" and len(rows) == report["session"]["frames_analysed"] > 0


# --- the stop flag --------------------------------------------------------------------------------------


def test_the_first_sigint_stops_and_closes_the_second_aborts() -> None:
    closed = threading.Event()
    with Stopper(closed.set) as stopper:
        assert signal.getsignal(signal.SIGINT) == stopper._on_sigint
        stopper._on_sigint(signal.SIGINT, None)
        assert stopper.is_set() and stopper.reason == "Ctrl-C"
        assert closed.wait(5), "the source is closed from the stopper's own thread"
        with pytest.raises(KeyboardInterrupt):
            stopper._on_sigint(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_after_stops_once_with_its_reason() -> None:
    closed = threading.Event()
    with Stopper(closed.set) as stopper:
        stopper.stop_after(0.05, "--for 1s elapsed")
        assert closed.wait(5) and stopper.reason == "--for 1s elapsed"
        stopper.stop("Ctrl-C")
        assert stopper.reason == "--for 1s elapsed", "the first reason stays"


# --- pure lines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1.5h", 5400.0), (" 3S ", 3.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(("seconds", "text"), [(600, "10m"), (7200, "2h"), (90, "90s"), (3, "3s"), (1.5, "1.5s")])
def test_durations_said_back(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00.0"), (12.46, "0:12.5"), (61, "1:01.0"), (3723.4, "1:02:03.4")])
def test_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


def test_rows_go_beside_the_report() -> None:
    assert rows_path(Path("out/session.json")) == Path("out/session.frames.jsonl")
    assert rows_path(Path("out/session")) == Path("out/session.frames.jsonl")


def _person(track_id: int, score: float | None, label: Label) -> PersonNow:
    return PersonNow(track_id, 0.0, 2.0, 5, 3, score, label, False)


def _update(people: tuple[PersonNow, ...], n_faces: int, lag_s: float = 0.25) -> LiveUpdate:
    faces = tuple(
        FaceVerdict(FaceBox(7, i, (1.0, 2.0, 30.0, 40.0), 0.99), 0.8, np.zeros((2, 2), np.float32), i)
        for i in range(n_faces)
    )
    verdict = FrameVerdict(7, 3.5, faces, 0.8 if faces else None)
    return LiveUpdate(verdict, 100.0, lag_s, people, LiveStats(decoded=40, sampled=8, dropped=2, delivered=6))


def test_live_lines() -> None:
    people = (_person(1, 0.12, Label.REAL), _person(2, 0.87, Label.FAKE))
    assert update_line(_update(people, 2)) == "0:03.5  2 people  #1 real 0.12  #2 FAKE 0.87  lag 0.25 s"
    assert update_line(_update((), 0, 1.5)) == "0:03.5  no face  lag 1.50 s"
    one = (_person(3, None, Label.NO_FACE),)
    assert update_line(_update(one, 1)) == "0:03.5  1 person  #3 no face -  lag 0.25 s"
    row = frame_row(_update(people, 2))
    assert json.loads(json.dumps(row)) == row and row["faces"][1]["track_id"] == 1 and row["dropped"] == 2
    assert [p["label"] for p in row["people"]] == ["real", "fake"]


def test_summary_is_due_every_few_seconds_and_counts() -> None:
    s = Summary(5.0, started_wall_s=1000.0)
    people = (_person(1, 0.9, Label.FAKE),)
    for lag in (0.2, 0.4, 0.6):
        s.add(_update(people, 1, lag))
    assert not s.due(1004.9) and s.due(1005.0) and not s.due(1009.9) and s.due(1010.0)
    assert s.line(_update(people, 1), 1012.0) == (
        "summary 0:12.0: 3 analysed, 2 dropped of 8 sampled (25.0%), 0 reconnects, lag p50 0.40 s, 1 person: #1 FAKE"
    )


def test_notice_and_gone_lines() -> None:
    info = MediaInfo("rtsp://cam/1", None, None, "rtsp", "h264", 1280, 720, 25.0, None, 0, False, None, MediaKind.LIVE)
    assert notice_line(SourceConnected(info, 1.0)) == "connected: rtsp://cam/1 (1280×720, h264, 25 fps)"
    assert notice_line(SourceConnected(info, 1.0, attempt=2)).startswith("connected again (after attempt 2): ")
    assert notice_line(SourceReconnecting(2, 5, 1.0, "Connection refused", 1.0)) == (
        "reconnecting: attempt 2/5 in 1.0 s: Connection refused"
    )
    gone = PersonGone(PersonNow(4, 1.0, 8.5, 14, 0, 0.12, Label.REAL, False))
    assert gone_line(gone) == "person #4 left: real 0.12 over 14 faces (0:01.0-0:08.5)"
