"""Every hostile input of ``generate.py``, three ways: ``analyze()`` in-process, one ``dff scan`` over all
of them, and uploads to the real server. Each must give its exact typed error or a correct report; memory
stays under a stated cap for the bomb, the 12000×12000 video and the 3-hour clip; nothing is left behind.

Caps (measured on the 2-core CI machine, then given headroom):
- ``dff scan`` over every case, as one process: peak RSS < ``SCAN_PEAK_RSS_CAP_MB`` (random weights,
  MTCNN and InceptionResnetV1 loaded: ~1 GB of it is the models).
- refusing the bomb / the 12000×12000 video / the 3-hour clip: peak RSS rises < ``REFUSE_RSS_RISE_CAP_MB``
  above the engine-loaded process, in < ``REFUSE_S_CAP`` seconds each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.cases import FACE_LABELS, TIME_REACHED, Case, Expect
from tests.hostile.generate import KINDS

SCAN_PEAK_RSS_CAP_MB = 2500
REFUSE_RSS_RISE_CAP_MB = 100
REFUSE_S_CAP = 5.0
SCAN_TIMEOUT_S = 600
REFUSED_KINDS = ("png_pixel_bomb_20000", "video_12000x12000", "video_three_hours")


# ------------------------------------------------------------------------------------ the outcome check


def report_problems(expect: Expect, report: dict[str, Any]) -> list[str]:
    """What is wrong with a report (``report_to_dict`` form) for ``expect``; empty when it is right."""
    problems = []
    if report.get("label") not in expect.labels:
        problems.append(f"label {report.get('label')!r}, expected one of {sorted(expect.labels)}")
    probs = [face["fake_prob"] for frame in report.get("frames", []) for face in frame["faces"]]
    if expect.faces and not probs:
        problems.append("no face was scored")
    if not all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in probs):
        problems.append(f"fake_prob outside [0, 1]: {probs}")
    if expect.labels <= {"no_face"} and probs:
        problems.append(f"{len(probs)} faces scored in a face-less input")
    reason = report.get("incomplete")
    if expect.incomplete and not (reason and TIME_REACHED.search(reason)):
        problems.append(f"expected INCOMPLETE with the time reached, got incomplete={reason!r}")
    if not expect.incomplete and reason is not None:
        problems.append(f"unexpectedly INCOMPLETE: {reason}")
    if expect.rotation_deg is not None and report["media"]["rotation_deg"] != expect.rotation_deg:
        problems.append(f"rotation_deg {report['media']['rotation_deg']}, expected {expect.rotation_deg}")
    return problems


@dataclass(frozen=True)
class Outcome:
    """What one mode gave: an error (``code``, ``message``), a report, or a crash (anything else)."""

    code: str | None = None
    message: str = ""
    report: dict[str, Any] | None = None
    crash: str | None = None

    def problems(self, expect: Expect) -> list[str]:
        if self.crash is not None:
            return [f"crash: {self.crash}"]
        if expect.error is not None:
            if self.code != expect.error:
                got = f"error {self.code}: {self.message}" if self.code else f"a {self.report_label()} report"
                return [f"expected error {expect.error}, got {got}"]
            return []
        if self.report is None:
            return [f"expected {expect.describe()}, got error {self.code}: {self.message}"]
        return report_problems(expect, self.report)

    def report_label(self) -> str:
        return str(self.report.get("label")) if self.report else "no"


def _settle(tally, case: Case, mode: str, outcome: Outcome) -> None:
    problems = outcome.problems(case.expect)
    tally.record(case, mode, not problems)
    assert not problems, f"{case.kind} ({case.path.name}) via {mode}: " + "; ".join(problems)


# ----------------------------------------------------------------------------------------- 1. analyze()


@pytest.fixture(scope="session")
def in_process(hostile_engine, hostile_settings):
    """``kind -> Outcome`` of ``analyze()`` on that case, computed once (the scan test reuses the messages)."""
    from pipeline.errors import DffError, MediaError
    from pipeline.report import report_to_dict
    from pipeline.types import AnalysisStart, FrameVerdict, Report

    @functools.cache
    def run(case: Case) -> Outcome:
        try:
            events = list(_analyze(case.path, hostile_engine, hostile_settings))
        except DffError as err:
            if not isinstance(err, MediaError) or case.path.name not in str(err):
                return Outcome(crash=f"{type(err).__name__} {err.code} that is not a MediaError naming the file: {err}")
            return Outcome(code=err.code, message=str(err))
        except Exception:  # an untyped exception is the finding: keep its traceback as the crash
            return Outcome(crash=traceback.format_exc(limit=-6))
        if not (isinstance(events[0], AnalysisStart) and isinstance(events[-1], Report)):
            return Outcome(crash=f"events do not run AnalysisStart ... Report: {[type(e).__name__ for e in events]}")
        verdicts = [e for e in events[1:-1] if isinstance(e, FrameVerdict)]
        if len(verdicts) != len(events) - 2 or len(verdicts) != len(events[-1].frames):
            return Outcome(crash="the FrameVerdicts do not match the report's frames")
        return Outcome(report=report_to_dict(events[-1]))

    return run


def _analyze(path: Path, engine, settings):
    from pipeline.run import analyze
    from pipeline.sources import open_media_for

    with open_media_for(path, settings) as source:  # media errors raise here, at open
        return list(analyze(source, engine, settings))


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_in_process(kind: str, hostile, in_process, tally) -> None:
    case = hostile.get(kind)
    _settle(tally, case, "analyze", in_process(case))


def test_the_set_has_forty_kinds_and_good_face_files(hostile, in_process) -> None:
    assert len(KINDS) >= 40
    good = [hostile.cases[k] for k in ("good_photo", "good_clip")]
    for case in good:
        report = in_process(case).report
        assert report is not None and report["label"] in FACE_LABELS
    photo = in_process(good[0]).report
    probs = [f["fake_prob"] for fr in photo["frames"] for f in fr["faces"]]
    assert probs and all(0.0 <= p <= 1.0 for p in probs)


def test_playlists_do_not_tell_which_server_files_exist(hostile, in_process) -> None:
    """Finding 1: a playlist naming a real file and one naming a missing file are refused alike."""
    there = in_process(hostile.get("hls_playlist_existing_path"))
    missing = in_process(hostile.get("hls_playlist_missing_path"))
    name_there, name_missing = "innocent.m3u8", "innocent_missing.m3u8"
    assert there.code == missing.code == "unsupported_media"
    assert there.message.replace(name_there, "NAME") == missing.message.replace(name_missing, "NAME")


# -------------------------------------------------------------------------------------- memory caps

_REFUSE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DffError
from pipeline.run import analyze
from pipeline.sources import open_media_for

def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

settings = Settings(data_dir=Path(sys.argv[1]), device="cpu", every_s=1.0)
engine = Engine.open(settings, allow_untrained=True)
out = {}
for path in sys.argv[2:]:
    rss_kb = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS, so the peak below is this file's alone
    t0 = time.perf_counter()
    try:
        with open_media_for(path, settings) as source:
            list(analyze(source, engine, settings))
        code = "analysed"
    except DffError as err:
        code = err.code
    out[Path(path).name] = dict(code=code, s=time.perf_counter() - t0, rise_mb=(status_kb("VmHWM") - rss_kb) / 1024)
print(json.dumps(out))
"""


def test_refusals_are_fast_at_flat_memory(hostile, tmp_path, tally) -> None:
    """In a fresh process with the engine loaded: each of the bomb, the 12000×12000 video and the 3-hour
    clip is refused with ``too_large`` in < REFUSE_S_CAP s, its peak RSS < REFUSE_RSS_RISE_CAP_MB above the
    RSS before it (VmHWM reset through /proc/self/clear_refs)."""
    cases = [hostile.get(k) for k in REFUSED_KINDS]
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSE_SCRIPT, str(tmp_path), *(str(c.path) for c in cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print({name: {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for name, r in got.items()})
    problems = []
    for case in cases:
        r = got[case.path.name]
        if r["rise_mb"] >= REFUSE_RSS_RISE_CAP_MB:
            tally.leak(f"{case.kind}: peak RSS rose {r['rise_mb']:.0f} MB (cap {REFUSE_RSS_RISE_CAP_MB} MB)")
        if r["code"] != "too_large" or r["s"] >= REFUSE_S_CAP or r["rise_mb"] >= REFUSE_RSS_RISE_CAP_MB:
            problems.append(f"{case.kind}: {r}")
    assert not problems, problems


# ------------------------------------------------------------------------------------------ 2. dff scan


@dataclass(frozen=True)
class ScanRun:
    code: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    wall_s: float
    reports: dict[str, dict[str, Any]]  # media name -> report JSON
    tmp_left: list[str]

    def lines(self, name: str) -> list[tuple[str, str]]:
        """``("out"|"err", rest after "NAME: ")`` for every line about ``name`` (one is expected)."""
        found = []
        for stream, text in (("out", self.stdout), ("err", self.stderr)):
            for line in text.splitlines():
                line = line.removeprefix("UNTRAINED MODEL — ")
                if line.startswith(f"{name}: "):
                    found.append((stream, line[len(name) + 2 :]))
        return found


def _wait_with_rusage(proc: subprocess.Popen, timeout_s: float) -> tuple[int, float]:
    """(exit code, peak RSS in MB) of ``proc`` via ``os.wait4``; killed after ``timeout_s``."""
    timer = threading.Timer(timeout_s, lambda: os.kill(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # Linux: KiB


@pytest.fixture(scope="session")
def scan_run(hostile, tmp_path_factory) -> ScanRun:
    """ONE ``dff scan`` over every case file, with its own TMPDIR (checked empty afterwards)."""
    base = tmp_path_factory.mktemp("scan")
    out_dir, tmp_dir = base / "reports", base / "tmp"
    tmp_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFF_")}
    env.update(XDG_DATA_HOME=str(base / "xdg"), TMPDIR=str(tmp_dir), PYTHONUNBUFFERED="1")
    paths = [str(c.path) for c in hostile.cases.values()]
    argv = [sys.executable, "-m", "ui.cli", "scan", *paths, "--allow-untrained", "--device", "cpu"]
    argv += ["--every-s", "1", "--json", str(out_dir), "-q"]
    t0 = time.perf_counter()
    with (base / "stdout").open("wb") as so, (base / "stderr").open("wb") as se:
        proc = subprocess.Popen(argv, stdout=so, stderr=se, env=env)
        code, peak_mb = _wait_with_rusage(proc, SCAN_TIMEOUT_S)
    wall_s = time.perf_counter() - t0
    reports = {}
    for path in out_dir.glob("*.json") if out_dir.is_dir() else ():
        body = json.loads(path.read_text())
        reports[body["media"]["name"]] = body
    # files only: importing torch's stack makes an empty torchinductor_<user>/ cache folder, which holds nothing
    tmp_left = [str(p.relative_to(tmp_dir)) for p in tmp_dir.rglob("*") if not p.is_dir()]
    stdout = (base / "stdout").read_text(errors="replace")
    stderr = (base / "stderr").read_text(errors="replace")
    print(f"dff scan over {len(paths)} files: exit {code}, {wall_s:.1f} s, peak RSS {peak_mb:.0f} MB")
    return ScanRun(code, stdout, stderr, peak_mb, wall_s, reports, tmp_left)


def _scan_outcome(case: Case, run: ScanRun, expected_message: str | None) -> Outcome:
    name = case.path.name
    found = run.lines(name)
    if len(found) != 1:
        return Outcome(crash=f"{len(found)} lines about {name} (exit {run.code}), one expected: {found}")
    stream, rest = found[0]
    if stream == "err":
        if not rest.startswith("error: "):
            return Outcome(crash=f"stderr line is not an error line: {rest!r}")
        message = rest.removeprefix("error: ")
        if message.startswith("internal") or "Traceback" in message:
            return Outcome(crash=f"untyped failure: {message}")
        if name in run.reports:
            return Outcome(crash=f"an error line and a report for {name}")
        # the line is str(err) of the typed error: the same text analyze() gives for the same file
        if expected_message is not None and expected_message in message:
            return Outcome(code=case.expect.error, message=message)
        return Outcome(code="unrecognised", message=message)
    match = re.match(r"(REAL|FAKE|INCONCLUSIVE|NO FACE) ", rest)
    if match is None:
        return Outcome(crash=f"verdict line without a label: {rest!r}")
    report = run.reports.get(name)
    if report is None:
        return Outcome(crash=f"a verdict line but no report JSON for {name}")
    if report["label"] != match.group(1).lower().replace(" ", "_"):
        return Outcome(crash=f"line says {match.group(1)}, report says {report['label']}")
    if ("[INCOMPLETE: " in rest) != (report.get("incomplete") is not None):
        return Outcome(crash=f"line and report disagree on INCOMPLETE: {rest!r}")
    return Outcome(report=report)


@pytest.mark.parametrize("kind", KINDS)
def test_dff_scan(kind: str, hostile, scan_run, in_process, tally) -> None:
    case = hostile.get(kind)
    expected_message = None
    if case.expect.is_error:
        own = in_process(case)
        expected_message = own.message if own.code == case.expect.error else None
    _settle(tally, case, "scan", _scan_outcome(case, scan_run, expected_message))


def test_dff_scan_batch_survives_exits_1_and_stays_under_memory_cap(hostile, scan_run, tally) -> None:
    run = scan_run
    if run.peak_rss_mb >= SCAN_PEAK_RSS_CAP_MB:
        tally.leak(f"dff scan peak RSS {run.peak_rss_mb:.0f} MB (cap {SCAN_PEAK_RSS_CAP_MB} MB)")
    if run.tmp_left:
        tally.leak(f"dff scan left {run.tmp_left[:5]} in its TMPDIR")
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.code == 1, f"exit {run.code}: some files fail, so 1 is expected"
    missing = [c.path.name for c in hostile.cases.values() if not run.lines(c.path.name)]
    assert not missing, f"no line for {missing}: the batch stopped early?"
    good = [c.path.name for c in hostile.cases.values() if not c.expect.is_error]
    assert sorted(set(good) - set(run.reports)) == []
    assert run.peak_rss_mb < SCAN_PEAK_RSS_CAP_MB
    assert run.tmp_left == []


# --------------------------------------------------------------------------------------- 3. the server


@dataclass
class Server:
    served: Any
    tmp_dir: Path
    outcomes: dict[str, Outcome] = dataclasses.field(default_factory=dict)

    @property
    def uploads_dir(self) -> Path:
        return self.served.settings.data_dir / "uploads"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The real server (port 0, random weights), with a private ``tempfile`` dir to see leaks in."""
    from tests.servers import make_settings, start_server

    base = tmp_path_factory.mktemp("hostile_server")
    tmp_dir = base / "tmp"
    tmp_dir.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp_dir)
    served = start_server(make_settings(base / "data", base / "models", every_s=1.0), allow_untrained=True)
    try:
        yield Server(served, tmp_dir)
    finally:
        served.stop()
        tempfile.tempdir = saved


def upload(server: Server, path: Path, name: str | None) -> Outcome:
    """Upload through ``ui.client.analyze_file``; an error message must not name the server's own paths."""
    from stream import protocol as p
    from ui.client import ClientError, analyze_file

    async def go() -> Outcome:
        last = None
        async for message in analyze_file(path, server.served.ws, name=name):
            last = message
        if isinstance(last, p.Done):
            return Outcome(report=last.report.to_json())
        if isinstance(last, p.Error):
            if last.code == "internal":
                return Outcome(crash=f"internal: {last.message}")
            if str(server.served.settings.data_dir) in last.message:
                return Outcome(crash=f"the error names a server path: {last.message}")
            return Outcome(code=last.code, message=last.message)
        return Outcome(crash=f"the conversation ended with {last!r}")

    try:
        return asyncio.run(asyncio.wait_for(go(), 120))
    except ClientError as err:
        return Outcome(crash=f"client error {err.code}: {err}")


@pytest.mark.parametrize("kind", KINDS)
def test_server_upload(kind: str, hostile, server, tally) -> None:
    case = hostile.get(kind)
    if not case.uploadable:
        pytest.skip(f"by design: a client cannot upload {case.path.name} ({case.kind}); scan and analyze cover it")
    outcome = upload(server, case.path, case.upload_name)
    server.outcomes[kind] = outcome
    _settle(tally, case, "server", outcome)


def test_server_refuses_playlists_alike(hostile, server) -> None:
    """Finding 1 over the wire: whether the named server file exists must not show in the answer."""
    got = {}
    for kind in ("hls_playlist_existing_path", "hls_playlist_missing_path"):
        case = hostile.get(kind)
        got[kind] = server.outcomes.get(kind) or upload(server, case.path, None)
        got[kind] = dataclasses.replace(got[kind], message=got[kind].message.replace(case.path.name, "NAME"))
    there, missing = got.values()
    assert (there.code, there.message) == (missing.code, missing.message) and there.code == "unsupported_media"


def test_server_still_analyses_a_good_file_after_the_hostile_uploads(hostile, server) -> None:
    for kind in ("good_photo", "good_clip"):
        case = hostile.get(kind)
        outcome = upload(server, case.path, None)
        assert outcome.problems(case.expect) == [], outcome


def test_server_leaves_no_uploads_or_temp_files(server, tally) -> None:
    deadline = time.monotonic() + 10
    while True:
        left = [p for d in (server.uploads_dir, server.tmp_dir) if d.exists() for p in d.rglob("*") if p.is_file()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for p in left:
        tally.leak(f"server left {p}")
    assert left == []


@pytest.mark.parametrize("kind", ["directory_named_mp4", "missing_file"])
def test_dff_client_on_a_path_it_cannot_upload_is_one_clear_line(kind: str, hostile, server) -> None:
    """Finding 8: ``dff client x.mp4/`` (a directory) printed a traceback. Like a missing file, it is a local
    usage error: exit 2, one line naming the file, nothing sent."""
    import io

    from ui.cli import main

    case = hostile.get(kind)
    out, err = io.StringIO(), io.StringIO()
    code = main(["client", str(case.path), "--url", server.served.ws], out=out, err=err)
    lines = err.getvalue().strip().splitlines()
    assert (code, out.getvalue()) == (2, ""), err.getvalue()
    assert len(lines) == 1 and case.path.name in lines[0] and "Traceback" not in lines[0], lines
