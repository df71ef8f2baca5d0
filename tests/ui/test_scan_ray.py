"""``dff scan --ray`` on a real 2-node Ray cluster (one CPU each, one actor per node): a folder of media with
a bad file and one over the size cap gives the same reports as the in-process scan, a rerun skips what is
reported, a file added later is analysed; Ctrl-C cancels; an actor killed mid-file costs that file a retry
on the other actor, a second death its one-line ``worker_lost``. The resume rules are pure and tested apart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
from PIL import Image

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.models import build_model, save_checkpoint
from pipeline.report import report_to_json
from stream import protocol as p
from stream.ray_scan import CANCEL_GRACE_S, RayScanner, RunningFile, ScanFailed, Scanned
from stream.service import resolve_options
from tests.media import astronaut, face_scene, moving_faces_clip
from tests.raycluster import close_to, local_cluster
from tests.ui.test_cli import verdicts
from tests.ui.test_report_names import ANALYSIS, POLICY, write_report
from ui.cli import main
from ui.cmd_scan_ray import plan_resume
from ui.report_names import ReportIndex, shown_path

pytestmark = pytest.mark.timeout(180)
EVERY_S = 0.5  # the 4 s clip gives 8 frames: a few seconds on one CPU, time to act on it mid-way
CAP_MB = 0.25  # DFF_MAX_UPLOAD_MB of these tests: huge.mp4 is over it, the real media far under


@contextmanager
def dff_env(**values: str) -> Iterator[None]:
    """No DFF_* of the developer's (module fixtures run before the autouse one), and ``values``."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("DFF_")]:
            mp.delenv(key)
        for key, value in values.items():
            mp.setenv(key, value)
        yield


def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def reports_in(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        path.name: {k: v for k, v in json.loads(path.read_text()).items() if k != "timings"}
        for path in sorted(directory.glob("*.json"))
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    started = time.monotonic()
    with local_cluster(worker_nodes=1, cpus_per_node=1) as made:
        print(f"2-node cluster up: {time.monotonic() - started:.1f} s")
        yield made


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(build_model(), tmp_path_factory.mktemp("scan_ray_models") / "random.pth")


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    """Two ``face.jpg`` in different folders, a clip, a text file named .mp4, a file over the cap."""
    d = tmp_path_factory.mktemp("inbox")
    (d / "a").mkdir()
    (d / "b").mkdir()
    Image.fromarray(astronaut()).save(d / "a" / "face.jpg")
    Image.fromarray(face_scene(640, 360, [(20, 60, 150), (240, 90, 150)])).save(d / "b" / "face.jpg")
    moving_faces_clip(d / "clip.mp4", seconds=4.0, fps=10, n_faces=2)
    (d / "bad.mp4").write_text("not a video at all")
    (d / "huge.mp4").write_bytes(os.urandom(int(CAP_MB * 1024 * 1024) + 1000))
    return d


def analysis_flags(checkpoint: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--every-s", str(EVERY_S), "--precision", "fp32", "-q"]


@pytest.fixture(scope="module")
def reference(inbox, checkpoint, tmp_path_factory) -> tuple[dict[str, dict[str, Any]], str]:
    """The in-process ``dff scan`` of the same files (the cap is the server's: huge.mp4 is not given):
    its reports by file name, and its stderr."""
    out = tmp_path_factory.mktemp("reference")
    files = [inbox / "a" / "face.jpg", inbox / "b" / "face.jpg", inbox / "clip.mp4", inbox / "bad.mp4"]
    with dff_env():
        code, _, err = run_cli("scan", *map(str, files), "--json", str(out), *analysis_flags(checkpoint))
    assert code == 1, err
    return reports_in(out), err


@pytest.fixture(scope="module")
def first_scan(cluster, inbox, checkpoint, tmp_path_factory) -> tuple[int, str, str, Path, float]:
    """``dff scan --ray`` of the inbox folder: exit code, stdout, stderr, the --json directory, seconds."""
    out = tmp_path_factory.mktemp("scan_ray_out")
    argv = ["scan", "--ray", "--ray-address", cluster.address, "--ray-actors", "2", str(inbox), "--json", str(out)]
    started = time.monotonic()
    with dff_env(DFF_MAX_UPLOAD_MB=str(CAP_MB)):
        code, stdout, stderr = run_cli(*argv, "--csv", str(out), *analysis_flags(checkpoint))
    return code, stdout, stderr, out, time.monotonic() - started


def test_every_good_file_gets_the_in_process_report_and_each_bad_one_its_line(first_scan, reference, inbox):
    code, stdout, stderr, out, seconds = first_scan
    expected, reference_err = reference
    assert code == 1, stderr
    lines = verdicts(stdout)
    assert len(lines) == 3 and sorted(line.split(":")[0] for line in lines) == ["clip.mp4", "face.jpg", "face.jpg"]
    # the text file fails alone, with the very line the in-process scan prints; the big one is never sent
    bad_line = next(line for line in reference_err.splitlines() if line.startswith("bad.mp4: error: "))
    assert bad_line in stderr.splitlines(), stderr
    huge = [line for line in stderr.splitlines() if line.startswith("huge.mp4: error: ")]
    assert len(huge) == 1 and "DFF_MAX_UPLOAD_MB" in huge[0], stderr
    # a/face.jpg and b/face.jpg: two reports, named as the in-process scan names them
    got = reports_in(out)
    assert sorted(got) == sorted(expected) and len(got) == 3, sorted(got)
    assert sum(name.startswith("face.jpg-") for name in got) == 2
    for name in expected:
        close_to(got[name], expected[name], where=name)
    assert len(list(out.glob("*.csv"))) == 3
    # each verdict line ends with where its two reports went: all of them, once each
    shown = [line.partition(")  -> ")[2].split(", ") for line in lines]
    assert sorted(p for paths in shown for p in paths) == sorted(shown_path(p) for p in out.iterdir()), lines
    assert all(len(paths) == 2 and paths[0].endswith(".json") and paths[1].endswith(".csv") for paths in shown)
    print(f"first dff scan --ray (5 files, pool start included): {seconds:.1f} s")


def test_a_rerun_skips_what_is_reported_and_analyses_a_file_added_since(
    first_scan, inbox, checkpoint, cluster, tmp_path
):
    _, _, _, first_out, _ = first_scan
    out = tmp_path / "out"
    shutil.copytree(first_out, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    Image.fromarray(face_scene(640, 360, [(20, 60, 150), (240, 90, 150), (440, 60, 150)])).save(inbox / "new.png")
    argv = [
        "scan",
        "--ray",
        "--ray-address",
        cluster.address,
        str(inbox),
        "--json",
        str(out),
        *analysis_flags(checkpoint),
    ]
    try:
        with dff_env(DFF_MAX_UPLOAD_MB=str(CAP_MB)):
            code, stdout, stderr = run_cli(*argv)
        assert code == 1, stderr  # bad.mp4 and huge.mp4 have no report: they are tried again, and fail again
        skipped = [line for line in stdout.splitlines() if ": skipped, already reported in " in line]
        assert len(skipped) == 3, stdout
        assert "3 of 6 files already reported" in stderr
        analysed = [line for line in verdicts(stdout) if line not in skipped]
        assert len(analysed) == 1 and analysed[0].startswith("new.png: ") and "(3 people)" in analysed[0]
        assert analysed[0].endswith("(3 people)  -> " + shown_path(out / "new.png.json")), analysed[0]
        assert all(line.endswith(".json") and shown_path(out) in line for line in skipped), skipped
        assert {path.name: path.read_bytes() for path in out.iterdir() if path.name in before} == before
        assert (out / "new.png.json").is_file()

        # with nothing left to analyse, no actor is even started
        (inbox / "bad.mp4").rename(tmp_path / "bad.mp4")
        (inbox / "huge.mp4").rename(tmp_path / "huge.mp4")
        started = time.monotonic()
        with dff_env(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(RayScanner, "start", lambda self: pytest.fail("a scanner was started"))
            code, stdout, stderr = run_cli(*argv)
        assert code == 0, stderr
        assert len([line for line in stdout.splitlines() if ": skipped, already reported in " in line]) == 4
        assert "4 of 4 files already reported" in stderr and "0 to analyse" in stderr
        print(f"rerun with everything reported: {time.monotonic() - started:.1f} s")
    finally:
        (inbox / "new.png").unlink(missing_ok=True)
        for name in ("bad.mp4", "huge.mp4"):
            if (tmp_path / name).exists():
                (tmp_path / name).rename(inbox / name)


def test_ctrl_c_cancels_the_running_file_and_stops_cleanly(cluster, inbox, checkpoint, tmp_path, monkeypatch):
    scanners: list[RayScanner] = []
    original_start = RayScanner.start

    def start(self: RayScanner) -> None:  # the real start; the test only keeps hold of the scanner
        original_start(self)
        scanners.append(self)

    monkeypatch.setattr(RayScanner, "start", start)

    def interrupt_mid_file() -> None:
        wait_for(lambda: bool(scanners) and any(r.frames >= 1 for r in scanners[0].running()), 90)
        os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends

    out = tmp_path / "out"
    argv = ["scan", "--ray", "--ray-address", cluster.address, "--ray-actors", "1", str(inbox / "clip.mp4")]
    argv += ["--json", str(out)]
    with ThreadPoolExecutor(1) as pool:
        interrupter = pool.submit(interrupt_mid_file)
        code, stdout, stderr = run_cli(*argv, *analysis_flags(checkpoint))
        interrupter.result(timeout=10)
    assert code == 130, stderr
    assert "interrupted; 0 of 1 files done" in stderr
    assert stdout == "" and list(out.glob("*.json")) == []
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, 30)  # its actor is gone


# -- the scanner itself: cancel, and actors that die --------------------------------------------------------------


@pytest.fixture(scope="class")
def scanner(cluster, checkpoint) -> Iterator[RayScanner]:
    """A scanner with the CLI tests' settings (class-scoped: its two actors hold both CPUs)."""
    with dff_env():
        settings = Settings.from_env(
            checkpoint=checkpoint, every_s=EVERY_S, precision="fp32", backend="ray",
            ray_address=cluster.address, ray_actors=2,
        )  # fmt: skip
        with Engine.open(settings) as engine, RayScanner(settings, engine, resolve_options(p.Options(), settings)) as s:
            yield s


def all_alive(scanner: RayScanner) -> bool:
    return [w.state for w in scanner.workers()] == ["alive", "alive"]


def first_running(scanner: RayScanner, when: Callable[[RunningFile], bool], timeout_s: float = 60) -> RunningFile:
    """The first file seen running that ``when`` accepts (polled from a test thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for running in scanner.running():
            if when(running):
                return running
        assert time.monotonic() < deadline, "no such file ran"
        time.sleep(0.02)


def kill(scanner: RayScanner, when: Callable[[RunningFile], bool]) -> RunningFile:
    """Kill the actor of the first running file that ``when`` accepts, as a crash would."""
    victim = first_running(scanner, when)
    ray.kill(victim.handle, no_restart=True)
    return victim


class TestScanner:
    def test_closing_the_scan_cancels_what_runs_and_frees_the_actors(self, scanner, inbox):
        wait_for(lambda: all_alive(scanner), 60)
        outcomes = scanner.scan([inbox / "a" / "face.jpg", inbox / "clip.mp4"])
        first = next(outcomes)
        assert isinstance(first, Scanned) and first.path.name == "face.jpg", first
        wait_for(lambda: [r.path.name for r in scanner.running()] == ["clip.mp4"], 30)
        started = time.monotonic()
        outcomes.close()  # what Ctrl-C does to the CLI's loop
        closed_s = time.monotonic() - started
        assert scanner.running() == ()
        assert scanner.pool.actor_jobs(10) == [[], []]  # the actors themselves let go of it
        assert closed_s < CANCEL_GRACE_S, closed_s
        again = list(scanner.scan([inbox / "b" / "face.jpg"]))  # and the scanner goes on
        assert len(again) == 1 and isinstance(again[0], Scanned)
        print(f"close -> actors free: {closed_s:.2f} s")

    def test_an_actor_killed_mid_file_costs_it_a_retry_on_the_other_actor(self, scanner, inbox, reference):
        wait_for(lambda: all_alive(scanner), 60)
        expected = reference[0]["clip.mp4.json"]
        with ThreadPoolExecutor(2) as pool:
            killing = pool.submit(kill, scanner, lambda r: r.attempt == 1 and r.frames >= 2)
            retry = pool.submit(first_running, scanner, lambda r: r.attempt == 2)
            outcomes = list(scanner.scan([inbox / "clip.mp4"]))
            killed, retried = killing.result(timeout=10), retry.result(timeout=10)
        assert len(outcomes) == 1 and isinstance(outcomes[0], Scanned), outcomes
        assert outcomes[0].attempts == 2
        assert killed.frames >= 2 and retried.actor != killed.actor, (killed, retried)
        got = json.loads(report_to_json(outcomes[0].report))
        close_to({k: v for k, v in got.items() if k != "timings"}, expected, where="retried clip.mp4")

    def test_a_file_whose_actor_dies_twice_fails_alone_with_worker_lost(self, scanner, inbox):
        wait_for(lambda: all_alive(scanner), 60)
        with ThreadPoolExecutor(2) as pool:
            # each kill waits until face.jpg is done: its actor would otherwise take it down too
            def alone(attempt: int) -> Callable[[RunningFile], bool]:
                return lambda r: r.attempt == attempt and [f.path.name for f in scanner.running()] == ["clip.mp4"]

            first = pool.submit(kill, scanner, alone(1))
            second = pool.submit(kill, scanner, alone(2))
            outcomes = list(scanner.scan([inbox / "a" / "face.jpg", inbox / "clip.mp4"]))
            first.result(timeout=10), second.result(timeout=10)
        by_name = {o.path.name: o for o in outcomes}
        assert isinstance(by_name["face.jpg"], Scanned), by_name  # the other file is not affected
        lost = by_name["clip.mp4"]
        assert isinstance(lost, ScanFailed) and lost.code == "worker_lost", lost
        assert "was lost" in lost.message and "already retried once" in lost.message, lost.message
        assert "\n" not in lost.message


# -- the resume rules (pure: no Ray) -----------------------------------------------------------------------------


def test_resume_plan_skips_only_files_with_a_complete_report_of_the_same_bytes_model_and_sampling(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = {}
    for name in ("done.jpg", "other_model.jpg", "incomplete.mp4", "other_policy.jpg", "new.jpg"):
        files[name] = inputs / name
        files[name].write_bytes(name.encode() * 100)
    sha = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    reports = tmp_path / "out"
    reports.mkdir()
    write_report(reports / "done.jpg.json", sha["done.jpg"], "M")
    write_report(reports / "other_model.jpg.json", sha["other_model.jpg"], "OLD")
    write_report(reports / "incomplete.mp4.json", sha["incomplete.mp4"], "M", incomplete="decode_error")
    write_report(reports / "other_policy.jpg.json", sha["other_policy.jpg"], "M", policy={**POLICY, "every_s": 0.5})
    (reports / "notes.json").write_text("[1, 2]")
    (reports / "broken.json").write_text("{")
    index = ReportIndex(reports)
    assert index.unreadable == 2 and len(index) == 4
    missing = inputs / "gone.jpg"
    plan = plan_resume([*files.values(), missing], index, "M", ANALYSIS, threads=2)
    assert [s.path.name for s in plan.skipped] == ["done.jpg"]
    assert plan.skipped[0].report == reports / "done.jpg.json"
    todo = ["other_model.jpg", "incomplete.mp4", "other_policy.jpg", "new.jpg", "gone.jpg"]
    assert [path.name for path in plan.todo] == todo  # other sampling flags: analysed again
    assert plan_resume(list(files.values()), None, "M", ANALYSIS).todo == tuple(files.values())  # no --json


def test_ray_address_without_ray_is_a_usage_error(tmp_path):
    code, _, err = run_cli("scan", str(tmp_path / "x.jpg"), "--ray-address", "auto")
    assert code == 2 and "need --ray" in err
