"""`dff scan` end to end on media and weights the tests make."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config import PRECISIONS, Settings
from pipeline.models import build_model, save_checkpoint
from pipeline.types import SampleMode, Strategy
from tests.media import astronaut, face_scene, moving_faces_clip
from ui.cli import build_parser, main
from ui.cmd_analyze import PROVENANCE_PREFIX
from ui.cmd_flags import MODE_FLAGS, sample_mode
from ui.report_names import path_stem, shown_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "random_seed_format.pth"
    return save_checkpoint(build_model(), path)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    Image.fromarray(astronaut()).save(d / "astro.jpg")
    Image.fromarray(face_scene(640, 360, [(20, 60, 150), (240, 90, 150), (440, 60, 150)])).save(d / "three.png")
    moving_faces_clip(d / "clip.mp4", seconds=2.0, fps=10, n_faces=2)
    (d / "text.mp4").write_text("not a video at all")
    (d / "empty.mp4").write_bytes(b"")
    return d


def verdicts(out: str) -> list[str]:
    """stdout's verdict lines, without the provenance line that follows each (tests/ui/test_cli_provenance.py)."""
    return [line for line in out.strip().splitlines() if not line.startswith(PROVENANCE_PREFIX)]


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_scan_writes_json_and_csv_and_one_line_per_file(media, checkpoint, tmp_path):
    code, out, err = _run(
        "scan",
        str(media / "three.png"),
        str(media / "clip.mp4"),
        "--checkpoint",
        str(checkpoint),
        "--json",
        str(tmp_path),
        "--csv",
        str(tmp_path),
        "--every-s",
        "0.5",
        "--precision",
        "fp32",
        "-q",
    )
    assert code == 0, err
    lines = verdicts(out)
    assert len(lines) == 2
    assert lines[0].startswith("three.png: ") and "(3 people)" in lines[0]
    assert lines[1].startswith("clip.mp4: ") and "2 people" in lines[1] and "suspicious segment" in lines[1]
    for line, name in zip(lines, ("three.png", "clip.mp4"), strict=True):  # each says where its reports went
        shown = [shown_path(tmp_path / f"{name}.json"), shown_path(tmp_path / f"{name}.csv")]
        assert line.endswith(")  -> " + ", ".join(shown)), line
    report = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert report["summary"]["n_people"] == 2
    assert report["model"]["name"] == "random_seed_format.pth"
    assert report["model"]["precision"] == "fp32" and report["threshold_source"] == "default"
    assert len(report["frames"]) == 4
    rows = list(csv.DictReader((tmp_path / "three.png.csv").open()))
    assert len(rows) == 3


def test_bad_files_get_one_line_each_and_others_still_run(media, checkpoint):
    code, out, err = _run(
        "scan",
        str(media / "text.mp4"),
        str(media / "astro.jpg"),
        str(media / "empty.mp4"),
        str(media / "nope.mp4"),
        "--checkpoint",
        str(checkpoint),
        "-q",
    )
    assert code == 1
    assert verdicts(out)[0].startswith("astro.jpg: ")
    errors = err.strip().splitlines()
    assert len(errors) == 3
    assert errors[0].startswith("text.mp4: error: ")
    assert errors[1].startswith("empty.mp4: error: ") and "empty" in errors[1].lower()
    assert errors[2].startswith("nope.mp4: error: ")
    assert "Traceback" not in err


def test_no_model_stops_at_once_with_instructions(media):
    code, out, err = _run("scan", str(media / "astro.jpg"))
    assert code == 2 and out == ""
    assert "--checkpoint" in err and "resnetinceptionv1_epoch_32.pth" in err


def test_untrained_model_is_flagged_on_every_line(media):
    code, out, err = _run("scan", str(media / "astro.jpg"), "--allow-untrained", "-q")
    assert code == 0
    assert out.startswith("UNTRAINED MODEL")
    assert "UNTRAINED MODEL" in err


def test_bad_option_value_is_a_clear_error(media, checkpoint):
    code, _, err = _run("scan", str(media / "astro.jpg"), "--checkpoint", str(checkpoint), "--threshold", "3")
    assert code == 2 and "threshold" in err


def test_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "ui.cli", "scan", "--help"], capture_output=True, text=True, check=True
    )
    for flag in (
        "--checkpoint",
        "--allow-untrained",
        "--every-s",
        "--count",
        "--keyframes",
        "--max-frames",
        "--strategy",
        "--threshold",
        "--json",
        "--csv",
        "--device",
        "--precision",
    ):
        assert flag in proc.stdout


# -- one bad file never stops the batch (issue 9, finding 2) ------------------------------------------------


def _scan(checkpoint, *files, extra=()):
    return _run("scan", *map(str, files), "--checkpoint", str(checkpoint), "--precision", "fp32", "-q", *extra)


def test_every_bad_input_gets_one_line_and_the_good_file_after_them_is_analysed(media, checkpoint, tmp_path):
    Image.new("RGB", (1, 1), (128, 64, 32)).save(tmp_path / "tiny.png")
    (tmp_path / "folder.mp4").mkdir()
    bad = [tmp_path / "tiny.png", media / "text.mp4", media / "empty.mp4", tmp_path / "folder.mp4"]
    code, out, err = _scan(checkpoint, *bad, media / "astro.jpg")
    assert code == 1, (out, err)
    assert "Traceback" not in err
    assert verdicts(out)[-1].startswith("astro.jpg: ")  # the good file, after every bad one
    errors = err.strip().splitlines()
    for name in ("text.mp4", "empty.mp4", "folder.mp4"):
        assert sum(line.startswith(f"{name}: error: ") for line in errors) == 1, err
    # a 1x1 photo (it crashed MTCNN's pyramid before) has no face: a verdict, not an error
    assert [line for line in out.splitlines() if line.startswith("tiny.png: ")] == ["tiny.png: NO FACE - (0 people)"]
    assert not any(line.startswith("tiny.png") for line in errors)


def test_an_internal_error_is_one_line_naming_its_type_and_the_traceback_needs_debug(
    media, checkpoint, tmp_path, monkeypatch
):
    """An exception no adapter names (a bug) in the middle file: one line, then the next file still runs."""
    import pipeline.run

    real = pipeline.run.analyze

    def breaks_on_boom(source, engine, settings):
        if source.info.name == "boom.jpg":
            raise ZeroDivisionError("an injected bug")
        return real(source, engine, settings)

    monkeypatch.setattr(pipeline.run, "analyze", breaks_on_boom)
    boom = tmp_path / "boom.jpg"
    boom.write_bytes((media / "astro.jpg").read_bytes())
    files = (media / "three.png", boom, media / "astro.jpg")
    code, out, err = _scan(checkpoint, *files)
    assert code == 1
    assert [line.split(":")[0] for line in verdicts(out)] == ["three.png", "astro.jpg"]
    assert "boom.jpg: error: internal error: ZeroDivisionError: an injected bug" in err.splitlines()
    assert "Traceback" not in err and "--debug" in err
    code, _, err = _scan(checkpoint, *files, extra=("--debug",))
    assert code == 1 and "Traceback" in err and "breaks_on_boom" in err


def test_ctrl_c_stops_the_batch(media, checkpoint, monkeypatch):
    import pipeline.run

    seen = []

    def interrupted(source, engine, settings):
        seen.append(source.info.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.run, "analyze", interrupted)
    code, out, err = _scan(checkpoint, media / "astro.jpg", media / "three.png")
    assert code == 130 and out == "" and seen == ["astro.jpg"]
    assert "interrupted at astro.jpg; 0 of 2 files done" in err


# -- report names: always legal, one per input, never over another file's (issue 9 finding 7, issue 13 part 6)
# (the naming rules alone: tests/ui/test_report_names.py)


def test_scan_writes_one_legal_report_per_input_for_long_and_duplicate_names(media, checkpoint, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    long_ascii = src / ("x" * 251 + ".jpg")  # 255 bytes: the longest legal name
    long_cjk = src / ("顔" * 83 + ".jpg")  # 253 bytes
    for path in (long_ascii, long_cjk, src / "a" / "1.jpg"):
        path.write_bytes((media / "astro.jpg").read_bytes())
    Image.open(media / "three.png").convert("RGB").save(src / "b" / "1.jpg")
    inputs = [long_ascii, long_cjk, src / "a" / "1.jpg", src / "b" / "1.jpg"]
    out_dir = tmp_path / "out"
    code, out, err = _scan(checkpoint, *inputs, extra=("--json", str(out_dir), "--csv", str(out_dir)))
    assert code == 0, err
    assert len(verdicts(out)) == 4
    reports = sorted(out_dir.glob("*.json"))
    assert len(reports) == 4 and len(list(out_dir.glob("*.csv"))) == 4
    by_name: dict[str, list[str]] = {}
    for path in reports:
        assert len(os.fsencode(path.name)) <= 255
        media_facts = json.loads(path.read_text())["media"]
        by_name.setdefault(media_facts["name"], []).append(media_facts["sha256"])
    assert sorted(by_name) == sorted({p.name for p in inputs})
    assert len(set(by_name["1.jpg"])) == 2  # a/1.jpg and b/1.jpg: two reports of two different photos
    shown = [_written(line) for line in verdicts(out)]  # each line names its own two reports
    assert sorted(p for paths in shown for p in paths) == sorted(shown_path(p) for p in out_dir.iterdir())


def _written(line: str) -> list[str]:
    """The report paths a verdict line ends with (``name: REAL 0.12 (1 person)  -> out/a.json, out/a.csv``)."""
    verdict, sep, where = line.partition("  -> ")
    assert sep and verdict.endswith(")"), line
    return where.split(", ")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_names_in_two_folders_get_two_reports_and_a_later_run_never_overwrites_another_files(
    media, checkpoint, tmp_path, monkeypatch
):
    a, b = tmp_path / "src" / "a" / "1.jpg", tmp_path / "src" / "b" / "1.jpg"
    a.parent.mkdir(parents=True)
    b.parent.mkdir()
    a.write_bytes((media / "astro.jpg").read_bytes())
    Image.open(media / "three.png").convert("RGB").save(b)
    monkeypatch.chdir(tmp_path)  # the lines name the reports relative to here: out/...
    flags = ("--json", "out", "--csv", "out")

    def reports_of(stdout: str) -> list[list[str]]:
        return [_written(line) for line in verdicts(stdout)]

    def media_in(shown: str) -> str:
        return json.loads((tmp_path / shown).read_text())["media"]["sha256"]

    code, out, err = _scan(checkpoint, a, b, extra=flags)
    assert code == 0, err
    assert reports_of(out) == [[f"out/{path_stem(p)}.{kind}" for kind in ("json", "csv")] for p in (a, b)]
    assert [media_in(f"out/{path_stem(p)}.json") for p in (a, b)] == [_sha256(a), _sha256(b)]
    assert len(list((tmp_path / "out").iterdir())) == 4
    first = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}

    # b alone later: alone, its name is plain 1.jpg again; a's report (and b's first) are untouched
    code, out, err = _scan(checkpoint, b, extra=flags)
    assert code == 0, err
    assert reports_of(out) == [["out/1.jpg.json", "out/1.jpg.csv"]] and media_in("out/1.jpg.json") == _sha256(b)
    assert {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir() if path.name in first} == first
    b_report = (tmp_path / "out" / "1.jpg.json").read_bytes()

    # a alone: out/1.jpg.json is b's (other bytes), so a takes its hashed name, where its own report was
    code, out, err = _scan(checkpoint, a, extra=flags)
    assert code == 0, err
    assert reports_of(out) == [[f"out/{path_stem(a)}.json", f"out/{path_stem(a)}.csv"]]
    assert (tmp_path / "out" / "1.jpg.json").read_bytes() == b_report
    assert media_in(f"out/{path_stem(a)}.json") == _sha256(a) and len(list((tmp_path / "out").iterdir())) == 6


def test_a_folder_is_the_media_under_it_in_order_and_one_without_media_fails_alone(
    media, checkpoint, tmp_path, monkeypatch
):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / ".hidden").mkdir()
    (inbox / "b.jpg").write_bytes((media / "astro.jpg").read_bytes())
    (inbox / "sub" / "a.png").write_bytes((media / "three.png").read_bytes())
    (inbox / ".hidden" / "c.jpg").write_bytes((media / "astro.jpg").read_bytes())
    (inbox / "notes.txt").write_text("not media")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = _scan(checkpoint, "inbox", "empty", media / "astro.jpg", extra=("--json", "out"))
    assert code == 1, err  # the empty folder is this run's one failure
    lines = verdicts(out)
    assert [line.split(": ")[0] for line in lines] == ["b.jpg", "a.png", "astro.jpg"]  # sorted, then as given
    assert "(3 people)" in lines[1] and [_written(line) for line in lines] == [
        ["out/b.jpg.json"],
        ["out/a.png.json"],
        ["out/astro.jpg.json"],
    ]
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("empty: error: "), err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png.json", "astro.jpg.json", "b.jpg.json"]


# -- dff client on a bad path (issue 9, finding 8) -----------------------------------------------------------


def _unreadable(tmp_path: Path) -> Path:
    """A file that opens but cannot be read, also for root (who reads a chmod-000 file)."""
    if os.geteuid() == 0:
        return Path("/proc/self/mem")  # reading offset 0 of one's own address space fails with EIO
    path = tmp_path / "locked.mp4"
    path.write_bytes(b"\0" * 64)
    path.chmod(0)
    return path


@pytest.mark.parametrize("kind", ["directory", "missing", "unreadable", "fifo"])
def test_client_on_a_bad_path_is_one_line_and_exit_2_before_connecting(kind, tmp_path):
    path = {
        "directory": tmp_path,
        "missing": tmp_path / "nope.mp4",
        "unreadable": _unreadable(tmp_path),
        "fifo": tmp_path / "pipe.mp4",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    # nothing listens on this port: had the client connected first, the error would say so
    code, out, err = _run("client", str(path), "--url", "ws://127.0.0.1:9/v1/analyze")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dff client: {path}: "), err
    reason = {"directory": "is a directory", "missing": "no such file", "unreadable": "cannot", "fifo": "not a regular"}
    assert reason[kind] in lines[0]
    assert "Traceback" not in err and "connect" not in err


# -- flags defined once (issue 10, part 7): sampling and strategy from the enums; serve's hardening flags --


def _subparser(name: str) -> argparse.ArgumentParser:
    from ui.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_sample_mode_has_a_flag_and_the_choices_are_the_enums():
    assert set(MODE_FLAGS) == set(SampleMode)  # a new mode without a flag fails here
    for command in ("scan", "serve", "client"):
        parser = _subparser(command)
        for flag, _ in MODE_FLAGS.values():
            assert _option(parser, flag) is not None, (command, flag)
        assert _option(parser, "--strategy").choices == tuple(s.value for s in Strategy)
    assert _option(_subparser("scan"), "--precision").choices == PRECISIONS


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("scan", {"--every-s", "--count", "--keyframes", "--all-frames", "--max-frames"}),
        ("serve", {"--every-s", "--count", "--keyframes", "--all-frames", "--max-frames"}),
        ("client", {"--every-s", "--count", "--keyframes", "--all-frames", "--max-frames"}),
        ("train", {"--every-s", "--max-frames"}),
        ("eval", {"--every-s", "--count", "--max-frames"}),
    ],
)
def test_each_command_keeps_its_sampling_flags_with_no_argparse_default(command, flags):
    parser = _subparser(command)
    sampling = {f for f, _ in MODE_FLAGS.values()} | {"--max-frames"}
    offered = {f for a in parser._actions for f in a.option_strings if f in sampling}
    assert offered == flags
    for flag in flags:  # None/False when absent: Settings (or the server, or TrainConfig) has the default
        assert _option(parser, flag).default in (None, False), flag


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        ((), None),
        (("--every-s", "0.5"), SampleMode.EVERY_S),
        (("--count", "4"), SampleMode.COUNT),
        (("--keyframes",), SampleMode.KEYFRAMES),
        (("--all-frames",), SampleMode.ALL),
    ],
)
def test_the_sampling_flag_given_is_the_mode_settings_get(argv, mode):
    from ui.cmd_analyze import settings_from_args

    args = build_parser().parse_args(["scan", "x.mp4", *argv])
    assert sample_mode(args) == mode
    settings = settings_from_args(args)
    assert settings.sample_mode == (mode or Settings().sample_mode)
    if mode is SampleMode.COUNT:
        assert settings.sample_count == 4
    if mode is SampleMode.EVERY_S:
        assert settings.every_s == 0.5
    evaluate = ["eval", "c.pth", "--real", "r", "--fake", "f", "--report", "o"]
    assert sample_mode(build_parser().parse_args([*evaluate, "--count", "5"])) is SampleMode.COUNT
    assert sample_mode(build_parser().parse_args(evaluate)) is None
    assert sample_mode(build_parser().parse_args(["train", "--real", "r", "--out", "o.pth"])) is None


def test_two_sampling_flags_at_once_are_a_usage_error(capsys):
    for command in (
        ["scan", "x.mp4"],
        ["client", "x.mp4"],
        ["eval", "c", "--real", "r", "--fake", "f", "--report", "o"],
    ):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args([*command, "--every-s", "1", "--count", "3"])
        assert stop.value.code == 2
        assert "not allowed with argument" in capsys.readouterr().err


def test_serve_flags_reach_settings_and_override_the_environment(monkeypatch):
    from ui.cmd_serve import serve_settings

    monkeypatch.setenv("DFF_ALLOWED_HOSTS", "env.example")
    monkeypatch.setenv("DFF_MAX_JOBS_PER_CLIENT", "7")
    parse = build_parser().parse_args
    assert serve_settings(parse(["serve"])).allowed_hosts == "env.example"  # the variable still works
    settings = serve_settings(
        parse(
            [
                "serve",
                "--allowed-hosts",
                "dff.example,10.0.0.5",
                "--max-jobs-per-client",
                "0",
                "--min-upload-kib-s",
                "8.5",
                "--upload-grace-s",
                "5",
            ]
        )
    )
    assert settings.allowed_hosts == "dff.example,10.0.0.5"
    assert settings.max_jobs_per_client == 0
    assert settings.min_upload_kib_s == 8.5 and settings.upload_grace_s == 5.0
    assert serve_settings(parse(["serve"])).keep_uploads is False  # absent store_true flag overrides nothing


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--min-upload-kib-s", "0", "min_upload_kib_s"), ("--max-jobs-per-client", "-1", "max_jobs_per_client")],
)
def test_a_bad_serve_flag_is_one_line_and_exit_2(flag, value, message):
    code, out, err = _run("serve", flag, value)
    assert code == 2 and out == ""
    assert err.startswith("dff serve: ") and message in err and len(err.strip().splitlines()) == 1


def test_serve_help_names_the_hardening_flags_and_their_variables():
    proc = subprocess.run(
        [sys.executable, "-m", "ui.cli", "serve", "--help"], capture_output=True, text=True, check=True
    )
    help_text = " ".join(proc.stdout.split())
    for text in (
        "--allowed-hosts",
        "--max-jobs-per-client",
        "--min-upload-kib-s",
        "--upload-grace-s",
        "DFF_ALLOWED_HOSTS",
        "DFF_MAX_JOBS_PER_CLIENT",
        "DFF_MIN_UPLOAD_KIB_S",
    ):
        assert text in help_text, text


def test_dff_bench_hands_its_arguments_to_python_m_bench(capfd):
    code, _, _ = _run("bench", "--help")  # the child writes to file descriptor 1, not to `out`
    captured = capfd.readouterr().out
    assert code == 0
    assert "usage: python -m bench" in captured and "--quick" in captured and "--no-rss" in captured
    code, _, _ = _run("bench", "--no-such-flag")
    assert code == 2 and "unrecognized arguments: --no-such-flag" in capfd.readouterr().err
