"""The rules both ``dff scan``s share: which inputs a folder stands for (``cmd_analyze.input_files``), and
from ui/report_names.py one legal report name per input, no report ever replacing another file's, and
where a verdict line says its reports went. Pure: no model, no Ray."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import pytest

from stream import protocol as p
from ui.cmd_analyze import input_files
from ui.report_names import (
    ReportIndex,
    analysis_key,
    fallback_stems,
    path_stem,
    report_note,
    report_stem,
    report_stems,
    shown_path,
)

POLICY = {"mode": "every_s", "every_s": 1.0, "count": 16, "max_frames": 300}
ANALYSIS = analysis_key(p.Policy.from_json(POLICY), "per_person")


def write_report(path: Path, media: str, model: str, incomplete: str | None = None, policy: dict | None = None) -> None:
    """The fields ``ReportIndex`` reads of a ``dff.report/1`` JSON."""
    data = {"schema": "dff.report/1", "media": {"sha256": media}, "model": {"sha256": model}, "incomplete": incomplete}
    path.write_text(json.dumps({**data, "policy": policy or POLICY, "strategy": "per_person"}))


def stem_ok(stem: str) -> None:
    raw = os.fsencode(stem)
    assert len(raw) + len(".json") <= 255, len(raw)
    raw.decode("utf-8")  # cut on a character boundary: still valid UTF-8


# -- report_stems: one legal name per input of a run ----------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expect_plain"),
    [
        (["a/clip.mp4", "b/photo.jpg"], [True, True]),
        (["a/1.jpg", "b/1.jpg"], [False, False]),  # same base name in two folders: both get their path's hash
        (["a/1.jpg", "a/1.jpg"], [True, True]),  # the same input twice is the same report
        (["x" * 251 + ".jpg"], [False]),  # a legal 255-byte name: + ".json" would be 260
        (["顔" * 200 + ".jpg"], [False]),  # 200 CJK characters: 604 bytes
        (["a/Face.JPG", "b/face.jpg"], [False, False]),  # would clash on a case-insensitive disk
        (["x" * 246 + ".jpg"], [True]),  # exactly 250 bytes: fits with .json
    ],
)
def test_report_stems_are_legal_and_unique(names, expect_plain, tmp_path):
    paths = [tmp_path / n for n in names]
    stems = report_stems(paths)
    for path, stem, plain in zip(paths, stems, expect_plain, strict=True):
        stem_ok(stem)
        assert (stem == path.name) is plain, stem
        if not plain:
            digest = hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:8]
            assert stem.endswith("-" + digest) and path.name.startswith(stem[: -len(digest) - 1])
            assert stem == path_stem(path)  # the one hashed name, whichever scan asks
    distinct_inputs = {p.absolute() for p in paths}
    assert len({s.casefold() for s in stems}) == len(distinct_inputs)


def test_a_plain_name_that_equals_another_inputs_hashed_name_still_gets_its_own_report(tmp_path):
    first = report_stems([tmp_path / "a" / "1.jpg", tmp_path / "b" / "1.jpg"])[0]
    stems = report_stems([tmp_path / "a" / "1.jpg", tmp_path / "b" / "1.jpg", tmp_path / "c" / first])
    assert stems[0] == first and len(set(stems)) == 3
    for stem in stems:
        stem_ok(stem)


# -- report_stem: never over another file's report, from an earlier run or this one ------------------------------


@pytest.mark.parametrize(
    ("existing_media", "expect_hashed"),
    [
        (None, False),  # no report of that name yet
        ("SAME", False),  # the same bytes' report (an older model, or incomplete): replaced
        ("OTHER", True),  # another file's report from an earlier run: kept, ours gets the path-hashed name
    ],
)
def test_a_report_never_replaces_another_files_report(tmp_path, existing_media, expect_hashed):
    if existing_media is not None:
        write_report(tmp_path / "clip.mp4.json", existing_media, "M")
    source = tmp_path / "inbox" / "clip.mp4"
    stem = report_stem(source, "clip.mp4", "SAME", ReportIndex(tmp_path))
    assert stem == (path_stem(source) if expect_hashed else "clip.mp4")
    if expect_hashed:
        assert stem.startswith("clip.mp4-") and len(stem) == len("clip.mp4-") + 8
    assert report_stem(source, "clip.mp4", "SAME", None) == "clip.mp4"  # no --json: nothing to read


def test_when_the_hashed_name_holds_other_bytes_too_the_next_one_is_taken_and_found_again(tmp_path):
    """b/1.jpg edited since its report: the old report stays, the new one goes on down the chain; a rerun
    of the same new bytes lands on that same name again (it is replaced, not copied once more)."""
    source = tmp_path / "b" / "1.jpg"
    chain = list(itertools.islice(fallback_stems(source), 4))
    assert chain[0] == path_stem(source) and len(set(chain)) == 4
    write_report(tmp_path / "1.jpg.json", "A", "M")  # a/1.jpg's, from a run of a alone
    write_report(tmp_path / f"{chain[0]}.json", "B_OLD", "M")  # b/1.jpg's before it was edited
    write_report(tmp_path / f"{chain[1]}.json", "B_OLDER", "M")
    assert report_stem(source, "1.jpg", "B_NEW", ReportIndex(tmp_path)) == chain[2]
    write_report(tmp_path / f"{chain[2]}.json", "B_NEW", "M")
    assert report_stem(source, "1.jpg", "B_NEW", ReportIndex(tmp_path)) == chain[2]
    assert report_stem(source, "1.jpg", "B_OLDER", ReportIndex(tmp_path)) == chain[1]


def test_names_this_run_wrote_count_as_taken(tmp_path):
    """The index is read once at the start; what the scan writes after is added, so a later input whose name
    equals one this run already used for other bytes still gets its own."""
    index = ReportIndex(tmp_path)
    source = tmp_path / "x" / "clip.mp4"
    assert report_stem(source, "clip.mp4", "ONE", index) == "clip.mp4"
    index.add("clip.mp4.json", "ONE")
    assert report_stem(source, "clip.mp4", "ONE", index) == "clip.mp4"
    assert report_stem(source, "clip.mp4", "TWO", index) == path_stem(source)
    index.add(f"{path_stem(source)}.json", None)  # bytes unknown: never the same as anyone's
    assert report_stem(source, "clip.mp4", None, index) not in {"clip.mp4", path_stem(source)}


def test_names_differing_only_in_case_are_one_file(tmp_path):
    write_report(tmp_path / "Face.JPG.json", "OTHER", "M")
    index = ReportIndex(tmp_path)
    assert index.media_of("face.jpg.json") == "OTHER"
    source = tmp_path / "in" / "face.jpg"
    assert report_stem(source, "face.jpg", "MINE", index) == path_stem(source)


@pytest.mark.parametrize("name", ["x" * 251 + ".jpg", "顔" * 83 + ".jpg", "é" * 125 + ".mp4"])
def test_every_name_of_the_chain_is_legal_for_a_255_byte_input_name(tmp_path, name):
    assert len(os.fsencode(name)) in (255, 253, 254)
    source = tmp_path / "in" / name
    (stem,) = report_stems([source])
    stem_ok(stem)
    for fallback in itertools.islice(fallback_stems(source), 5):
        stem_ok(fallback)
    write_report(tmp_path / f"{stem}.json", "OTHER", "M")
    taken = report_stem(source, stem, "MINE", ReportIndex(tmp_path))
    assert taken != stem
    stem_ok(taken)


# -- input_files: the inputs a scan analyses, in order --------------------------------------------------------------


def test_folders_become_their_media_once_each(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for rel in ("d/b.jpg", "d/sub/a.mp4", "d/.hidden/c.jpg", "d/notes.txt", "e.png"):
        (tmp_path / rel).write_bytes(b"x")
    found = input_files([tmp_path / "d", tmp_path / "e.png", tmp_path / "d" / "b.jpg"])
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["d/b.jpg", "d/sub/a.mp4", "e.png"]


def test_a_folder_without_media_and_a_missing_file_stay_as_given_in_their_place(tmp_path):
    """They fail where they are analysed, each on its own line; the other inputs still run."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no media")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "z.jpg").write_bytes(b"x")
    inputs = [tmp_path / "empty", tmp_path / "nope.mp4", tmp_path / "d"]
    assert input_files(inputs) == [tmp_path / "empty", tmp_path / "nope.mp4", tmp_path / "d" / "z.jpg"]


# -- where the reports went ----------------------------------------------------------------------------------------


def test_report_paths_are_shown_relative_to_the_cwd_when_that_is_shorter(tmp_path, monkeypatch):
    (tmp_path / "work" / "out").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert shown_path(Path("out/1.jpg-3fa2b1c0.json")) == os.path.join("out", "1.jpg-3fa2b1c0.json")
    assert shown_path(tmp_path / "work" / "out" / "a.csv") == os.path.join("out", "a.csv")
    assert shown_path(tmp_path / "a.json") == os.path.join("..", "a.json")
    assert shown_path(Path("/a.json")) == "/a.json"  # '../../../a.json' would be longer
    assert report_note([Path("out/a.jpg.json"), Path("out/a.jpg.csv")]) == "  -> out/a.jpg.json, out/a.jpg.csv"
    assert report_note([]) == ""
