"""ui/timeline.py (pure view logic), ui/svg.py (the timeline drawing) and ui/cards.py, with parameter tables."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stream import protocol as p
from ui import cards, svg
from ui import timeline as tl

JOB = "job-0123456789"
B64 = "AAAA"  # any valid base64 stands in for an overlay JPEG here


def face(track: int, prob: float, index: int = 0, overlay: str | None = None) -> p.Face:
    return p.Face(
        face_index=index,
        xyxy=(10.0 * track, 20.0, 10.0 * track + 50, 80.0),
        detector_prob=0.99,
        fake_prob=prob,
        track_id=track,
        overlay_jpeg_b64=overlay,
    )


def frames_of(spec: list[dict[int, float]], step_s: float = 0.5) -> list[p.FrameResult]:
    """One frame per dict {track_id: fake_prob}; an empty dict is a frame without faces."""
    out = []
    for seq, people in enumerate(spec):
        faces = tuple(face(t, prob, i) for i, (t, prob) in enumerate(people.items()))
        score = max(people.values()) if people else None
        out.append(p.FrameResult(job_id=JOB, seq=seq, index=5 * seq, time_s=seq * step_s, score=score, faces=faces))
    return out


def report(**overrides: Any) -> p.Report:
    """A typed report (as ``done`` carries it); a dict override is merged into that part of the JSON."""
    base: dict[str, Any] = {
        "schema": "dff.report/1",
        "media": {
            "name": "clip.mp4", "size_bytes": 1000, "sha256": "cd" * 32, "container": "mov,mp4", "codec": "h264",
            "width": 640, "height": 360, "fps": 10.0, "duration_s": 2.0, "rotation_deg": 0, "is_image": False,
            "frame_count": 20,
        },
        "policy": {"mode": "every_s", "every_s": 0.5, "count": 16, "max_frames": 300},
        "model": {
            "name": "seed.pth", "sha256": "ab" * 32, "untrained": False, "card_summary": None, "device": "cpu",
            "profile": {"name": "facenet", "crop_px": 160, "margin_px": 14, "input_px": 160, "resize": "bilinear",
                        "scale": 1 / 128, "mean": None, "std": None},
        },
        "strategy": "per_person",
        "threshold": 0.5,
        "score": 0.91,
        "label": "fake",
        "frames": [],
        "tracks": [
            {"track_id": 0, "frame_indices": [0, 5], "fake_probs": [0.9, 0.92], "score": 0.91, "label": "fake",
             "first_time_s": 0.0, "last_time_s": 0.5, "confident_fake": True},
            {"track_id": 1, "frame_indices": [5], "fake_probs": [0.2], "score": 0.2, "label": "real",
             "first_time_s": 0.5, "last_time_s": 0.5},
        ],
        "segments": [
            {"start_s": 0.0, "end_s": 0.5, "peak_s": 0.5, "peak_prob": 0.92, "n_frames": 2, "track_id": None},
            {"start_s": 0.0, "end_s": 0.5, "peak_s": 0.5, "peak_prob": 0.92, "n_frames": 2, "track_id": 0},
        ],
        "timings": {"total_s": 1.25},
        "version": "0.1.0",
        "incomplete": None,
        "summary": {"n_frames": 2, "n_faces": 3, "n_people": 2, "n_segments": 1, "untrained_model": False},
    }  # fmt: skip
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base[key], dict) else value
    return p.decode_report(base)


# -------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(("track", "name"), [(0, "Person 1"), (1, "Person 2"), (9, "Person 10")])
def test_person_names_count_from_one(track, name):
    assert tl.person_name(track) == name


def test_person_colors_are_distinct_then_cycle():
    colors = [tl.person_color(t) for t in range(len(tl.PERSON_COLORS))]
    assert len(set(colors)) == len(colors)
    assert tl.person_color(len(tl.PERSON_COLORS)) == colors[0]


# ------------------------------------------------------------------------------------------- frames


def test_frames_from_rows_rebuilds_stored_frames():
    rows = [
        {"index": 0, "time_s": 0.0, "score": 0.7, "faces": [
            {"face_index": 0, "xyxy": [1, 2, 3, 4], "detector_prob": 0.9, "fake_prob": 0.7, "track_id": 0}]},
        {"index": 10, "time_s": 1.0, "score": None, "faces": []},
    ]  # fmt: skip
    frames = tl.frames_from_rows(JOB, p.StoredFrames.from_json({"id": JOB, "status": "done", "frames": rows}).frames)
    assert [f.seq for f in frames] == [0, 1]
    assert frames[0].faces[0].xyxy == (1.0, 2.0, 3.0, 4.0) and frames[0].faces[0].overlay_jpeg_b64 is None
    assert frames[1].score is None and frames[1].faces == ()


@pytest.mark.parametrize(
    "row",
    [
        {"index": 0, "time_s": 0.0, "score": 0.5, "faces": []},  # a score without faces
        {"index": 0, "time_s": 0.0, "score": None, "faces": [{"face_index": 0}]},  # a face with missing fields
        {"index": 0, "time_s": 0.0, "score": 2.0, "faces": [
            {"face_index": 0, "xyxy": [1, 2, 3, 4], "detector_prob": 0.9, "fake_prob": 2.0, "track_id": 0}]},
    ],
)  # fmt: skip
def test_stored_frame_rows_reject_malformed_rows(row):
    with pytest.raises(p.ProtocolError):
        p.StoredFrames.from_json({"id": JOB, "status": "done", "frames": [row]})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ([], {}),
        ([{0: 0.1}, {0: 0.2}], {0: [[0, 1]]}),
        ([{0: 0.1}, {}, {0: 0.3}], {0: [[0], [2]]}),  # a frame without faces breaks the line
        ([{0: 0.1, 1: 0.9}, {1: 0.8}, {0: 0.2, 1: 0.7}], {0: [[0], [2]], 1: [[0, 1, 2]]}),  # absent person
        ([{2: 0.5}, {2: 0.6}], {2: [[0, 1]]}),
    ],
)
def test_person_lines_break_where_the_person_is_absent(spec, expected):
    lines = tl.person_lines(frames_of(spec))
    assert {line.track_id: [[pt.seq for pt in run] for run in line.runs] for line in lines} == expected
    for line in lines:
        assert line.name == tl.person_name(line.track_id) and line.color == tl.person_color(line.track_id)


def test_person_lines_take_the_higher_face_when_a_track_appears_twice_in_a_frame():
    frame = p.FrameResult(job_id=JOB, seq=0, index=0, time_s=0.0, score=0.8, faces=(face(0, 0.3, 0), face(0, 0.8, 1)))
    (line,) = tl.person_lines([frame])
    assert line.points[0].fake_prob == 0.8


@pytest.mark.parametrize(
    ("scores", "threshold", "expected"),
    [
        ([], 0.5, []),
        ([0.2, 0.3], 0.5, []),
        ([0.6, 0.7, 0.2], 0.5, [(0.0, 0.5, 0.7, 2)]),
        ([0.5, 0.6], 0.5, [(0.5, 0.5, 0.6, 1)]),  # strictly above the threshold
        ([0.9, None, 0.9], 0.5, [(0.0, 0.0, 0.9, 1), (1.0, 1.0, 0.9, 1)]),  # no face ends a run
        ([0.9, 0.8, 0.95], 0.5, [(0.0, 1.0, 0.95, 3)]),  # runs to the end
        ([0.6, 0.7], 0.65, [(0.5, 0.5, 0.7, 1)]),
    ],
)
def test_suspicious_spans(scores, threshold, expected):
    frames = frames_of([{} if s is None else {0: s} for s in scores])
    spans = tl.suspicious_spans(frames, threshold)
    assert [(s.start_s, s.end_s, s.peak_prob, s.n_frames) for s in spans] == expected


def test_report_spans_keep_frame_level_segments_only():
    assert tl.report_spans(report()) == (tl.Span(0.0, 0.5, 0.92, 2),)
    assert tl.report_spans(report(segments=[])) == ()


@pytest.mark.parametrize(
    ("n_frames", "duration_s", "x_max", "step_s"),
    [
        (0, None, 1.0, 0.0),  # nothing yet: a unit axis
        (1, 4.0, 4.0, 0.0),
        (3, 4.0, 4.0, 0.5),  # the axis spans the whole video while frames arrive
        (3, None, 1.0, 0.5),
        (5, 0.5, 2.0, 0.5),  # never shorter than the last frame
    ],
)
def test_build_figure_axis(n_frames, duration_s, x_max, step_s):
    fig = tl.build_figure(frames_of([{0: 0.9}] * n_frames), threshold=0.5, band=0.05, duration_s=duration_s)
    assert fig.x_max_s == x_max and fig.step_s == step_s
    assert [m.seq for m in fig.frames] == list(range(n_frames))
    assert len(fig.spans) == (1 if n_frames else 0)  # default: computed from the frames


def test_build_figure_takes_given_spans_and_selection():
    fig = tl.build_figure(
        frames_of([{0: 0.1}]), threshold=0.5, band=0.05, duration_s=1.0, spans=[tl.Span(0, 1, 0.9, 3)], selected_seq=0
    )
    assert fig.spans == (tl.Span(0, 1, 0.9, 3),) and fig.selected_seq == 0


# ------------------------------------------------------------------------------------ running state


@pytest.mark.parametrize(
    ("done", "planned", "people", "text"),
    [
        (0, 120, 0, "frame 0 of 120, no faces yet"),
        (41, 120, 3, "frame 41 of 120, 3 people"),
        (1, 1, 1, "frame 1 of 1, 1 person"),
        (7, None, 2, "frame 7, 2 people"),
    ],
)
def test_progress_line(done, planned, people, text):
    assert tl.progress_line(done, planned, people) == text


@pytest.mark.parametrize(
    ("done", "planned", "fraction"), [(0, 10, 0.0), (5, 10, 0.5), (12, 10, 1.0), (3, None, None), (0, 0, None)]
)
def test_progress_fraction(done, planned, fraction):
    assert tl.progress_fraction(done, planned) == fraction


@pytest.mark.parametrize(
    ("score", "threshold", "band", "label"),
    [
        (None, 0.5, 0.05, "no_face"),
        (0.9, 0.5, 0.05, "fake"),
        (0.1, 0.5, 0.05, "real"),
        (0.52, 0.5, 0.05, "inconclusive"),
        (0.48, 0.5, 0.05, "inconclusive"),
        (0.55, 0.5, 0.05, "fake"),  # the band's edge is decided
        (0.45, 0.5, 0.05, "real"),
        (0.5, 0.5, 0.0, "fake"),  # no band: at the threshold is fake
        (0.7, 0.8, 0.05, "real"),
    ],
)
def test_label_for(score, threshold, band, label):
    assert tl.label_for(score, threshold, band) == label


@pytest.mark.parametrize(
    ("spec", "label", "score", "track"),
    [
        ([], "no_face", None, None),
        ([{}, {}], "no_face", None, None),
        ([{0: 0.2, 1: 0.9}, {0: 0.4, 1: 0.7}], "fake", 0.8, 1),  # the most suspicious person's mean
        ([{0: 0.1}, {0: 0.2}], "real", 0.15, 0),
        ([{0: 0.5, 1: 0.5}], "inconclusive", 0.5, 0),  # a tie goes to the lower track id
    ],
)
def test_running_estimate(spec, label, score, track):
    estimate = tl.running_estimate(frames_of(spec), 0.5, 0.05)
    assert (estimate.label, estimate.track_id) == (label, track)
    assert estimate.score == (None if score is None else pytest.approx(score))


# ------------------------------------------------------------------------------------------- tables


def test_frame_rows():
    rows = tl.frame_rows(frames_of([{1: 0.25, 0: 0.75}, {}]))
    assert rows == [
        ["0.00", 0, 2, "0.750", "Person 1: 0.75, Person 2: 0.25"],
        ["0.50", 5, 0, "—", "no face"],
    ]
    assert len(rows[0]) == len(tl.FRAME_TABLE_HEADERS)


@pytest.mark.parametrize(("seq", "found"), [(0, True), (2, True), (3, False), (-1, False)])
def test_frame_by_seq(seq, found):
    frames = frames_of([{0: 0.1}] * 3)
    assert (tl.frame_by_seq(frames, seq) is not None) == found
    assert tl.frame_by_seq(list(reversed(frames)), 1).seq == 1  # order is not assumed


@pytest.mark.parametrize(("short", "caption"), [(False, "Person 2 · P(fake) 0.87"), (True, "Person 2 · 0.87")])
def test_face_caption(short, caption):
    assert tl.face_caption(face(1, 0.871), short=short) == caption


@pytest.mark.parametrize(("sx", "sy", "box"), [(1.0, 1.0, (10, 20, 60, 80)), (0.5, 2.0, (5, 40, 30, 160))])
def test_photo_boxes_scale_to_the_displayed_image(sx, sy, box):
    (frame,) = frames_of([{1: 0.3}])
    assert tl.photo_boxes(frame, sx, sy) == [(box, "Person 2 · P(fake) 0.30")]


def test_person_summaries_pick_the_most_suspicious_face_with_an_overlay():
    frames = [
        p.FrameResult(job_id=JOB, seq=0, index=0, time_s=0.0, score=0.9, faces=(face(0, 0.9, 0, B64), face(1, 0.2, 1))),
        p.FrameResult(job_id=JOB, seq=1, index=5, time_s=0.5, score=0.95, faces=(face(0, 0.95, 0, None),)),
        p.FrameResult(job_id=JOB, seq=2, index=10, time_s=1.0, score=0.92, faces=(face(0, 0.92, 3, B64),)),
    ]
    people = tl.person_summaries(report(), frames)
    assert [(x.name, x.label, x.n_faces, x.thumb) for x in people] == [
        ("Person 1", "fake", 2, (2, 3)),  # 0.95 has no overlay; 0.92 does
        ("Person 2", "real", 1, None),  # no overlay at all (e.g. reopened from History)
    ]


@pytest.mark.parametrize(
    ("overrides", "title", "untrained", "photo"),
    [
        ({}, "FAKE", False, False),
        ({"label": "no_face", "score": None}, "NO FACE", False, False),
        ({"label": "inconclusive"}, "INCONCLUSIVE", False, False),
        ({"model": {"name": "r.pth", "sha256": "untrained", "untrained": True}}, "FAKE", True, False),
        ({"media": {"name": "a.jpg", "width": 5, "height": 4, "is_image": True}}, "FAKE", False, True),
    ],
)
def test_verdict(overrides, title, untrained, photo):
    v = tl.verdict(report(**overrides))
    assert (v.title, v.untrained, v.is_image) == (title, untrained, photo)
    assert v.strategy_text == (tl.PHOTO_STRATEGY_TEXT if photo else tl.STRATEGY_TEXT)["per_person"]
    assert ("2.0 s" in v.facts) == (not photo)
    assert "analysed in 1.2 s" in v.facts or "analysed in 1.3 s" in v.facts


# ---------------------------------------------------------------------------------------------- svg


@pytest.mark.parametrize(
    ("x_max", "ticks"),
    [
        (1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (4.0, [0.0, 1.0, 2.0, 3.0, 4.0]),
        (10.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
        (95.0, [0.0, 20.0, 40.0, 60.0, 80.0]),
        (0.0, [0.0]),
    ],
)
def test_nice_ticks(x_max, ticks):
    assert svg.nice_ticks(x_max) == ticks


def test_render_timeline_draws_a_group_per_person_and_a_target_per_frame():
    frames = frames_of([{0: 0.9, 1: 0.2}, {}, {0: 0.8, 1: 0.3}, {1: 0.1}])
    fig = tl.build_figure(frames, threshold=0.5, band=0.05, duration_s=2.0, selected_seq=2)
    drawn = svg.render_timeline(fig)
    assert drawn.startswith("<svg") and drawn.endswith("</svg>")
    assert len(re.findall(r'<g class="person" data-track="\d"', drawn)) == 2
    assert len(re.findall(r'<circle class="pt" data-seq="\d"', drawn)) == 5
    assert re.findall(r'<rect class="nf" data-seq="(\d)"', drawn) == ["1"]
    assert re.findall(r'<rect class="col" data-seq="(\d)"', drawn) == ["0", "1", "2", "3"]
    assert drawn.count('class="seg"') == 2 and drawn.count('class="band"') == 1
    assert drawn.count('class="sel"') == 1 and 'data-seq="2" cx=' in drawn
    assert "threshold 0.50" in drawn


def test_timeline_html_escapes_and_has_a_legend_entry_per_person():
    fig = tl.build_figure(frames_of([{0: 0.9}, {0: 0.1}]), threshold=0.5, band=0.05, duration_s=1.0)
    html = svg.timeline_html(fig, caption="<b>2 frames</b>")
    assert "&lt;b&gt;2 frames&lt;/b&gt;" in html
    assert html.count('class="lg-item" data-track=') == 1


# -------------------------------------------------------------------------------------------- cards


@pytest.mark.parametrize(
    ("code", "title"),
    [
        ("unsupported_media", "Unsupported file"),
        ("too_large", "File too large"),
        ("busy", "The server is busy"),
        ("no_model", "No model installed"),
        ("some_new_code", "The analysis failed"),
    ],
)
def test_error_box_says_what_happened_and_escapes_the_message(code, title):
    html = cards.error_box(code, "<script>x</script>", max_upload_bytes=5 * 1024 * 1024)
    assert title in html and "<script>" not in html and f'data-code="{code}"' in html
    if code == "too_large":
        assert "5.0 MB" in html


def test_verdict_card_flags_an_untrained_model_and_explains_heatmaps():
    model = {"name": "r.pth", "sha256": "untrained", "untrained": True}
    html = cards.verdict_card(tl.verdict(report(model=model)), band=0.05)
    assert "UNTRAINED MODEL" in html and "not proof" in html and 'data-label="fake"' in html
    assert "UNTRAINED" not in cards.verdict_card(tl.verdict(report()), band=0.05)


def test_verdict_card_says_where_the_threshold_came_from():
    html = cards.verdict_card(tl.verdict(report(threshold=0.73, threshold_source="model card")), 0.05)
    assert "threshold 0.73" in html and "calibrated, from the model card" in html
    assert 'data-source="settings"' in cards.verdict_card(tl.verdict(report()), 0.05)  # older reports


def test_people_cards_use_the_overlay_or_a_coloured_placeholder():
    people = tl.person_summaries(report(), [])
    html = cards.people_cards(people, {0: B64}, 0.5)
    assert html.count('class="dff-person"') == 2
    assert f"data:image/jpeg;base64,{B64}" in html and "dff-thumb-none" in html
    assert "seen 0.0–0.5 s" in html and "seen" not in cards.people_cards(people, {}, 0.5, is_image=True)


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 bytes"), (1536, "1.5 KB"), (5 * 1024**2, "5.0 MB"), (3 * 1024**3, "3.0 GB")]
)
def test_human_size(n, text):
    assert cards.human_size(n) == text


def test_model_card_cell_shows_metrics_and_calibration_or_why_not():
    card = {"name": "sbi", "summary": "frame AUC 0.61 on ffpp", "temperature": 1.5, "threshold": 0.73}
    assert cards.model_card_text(card, "ok") == "sbi — frame AUC 0.61 on ffpp — calibrated threshold 0.73, T=1.50"
    assert cards.model_card_text(None, "none") == "no model card"
    assert "other weights" in cards.model_card_text(None, "stale")


@pytest.mark.parametrize(
    ("track", "badge", "hint"),
    [
        # the issue-10 bug: on a video INCONCLUSIVE at 0.50, a confidently fake person at 0.50 showed FAKE
        ({"fake_probs": [0.5] * 3, "score": 0.5, "label": "inconclusive", "confident_fake": True},
         "INCONCLUSIVE", "too close to the threshold"),
        ({"fake_probs": [0.9, 0.3], "score": 0.6, "label": "inconclusive"}, "INCONCLUSIVE", "too few frames agree"),
        ({"fake_probs": [0.48] * 3, "score": 0.48, "label": "inconclusive"}, "INCONCLUSIVE", "too close"),
        ({"fake_probs": [0.9] * 3, "score": 0.9, "label": "fake", "confident_fake": True}, "FAKE", None),
        ({"fake_probs": [0.5] * 3, "score": 0.5, "label": "real"}, "REAL", None),  # shown as given, never redone
    ],
)  # fmt: skip
def test_a_person_card_shows_the_label_the_report_gives(track, badge, hint):
    body = {"track_id": 0, "frame_indices": [0, 5, 10][: len(track["fake_probs"])], "first_time_s": 0.0,
            "last_time_s": 1.0, **track}  # fmt: skip
    people = tl.person_summaries(report(score=0.5, label="inconclusive", tracks=[body]), [])
    html = cards.people_cards(people, {}, 0.5)
    badges = re.findall(r'<span class="dff-badge dff-(\w+)">([A-Z ]+)</span>', html)
    assert badges == [(badge.lower(), badge)], html
    assert "P(fake) 0.50" in html or track["score"] != 0.5
    assert (hint is None) == ("dff-p-hint" not in html) and (hint is None or hint in html)
