"""`dff scan` end to end on media and weights the tests make."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from pipeline.models import build_model, save_checkpoint
from tests.media import astronaut, face_scene, moving_faces_clip
from ui.cli import main


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
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("three.png: ") and "(3 people)" in lines[0]
    assert lines[1].startswith("clip.mp4: ") and "2 people" in lines[1] and "suspicious segment" in lines[1]
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
    assert out.strip().splitlines()[0].startswith("astro.jpg: ")
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
