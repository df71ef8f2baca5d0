"""Pure view logic: analysis messages and reports -> what the page draws (figure data, tables, texts).

No I/O, no Gradio, no HTML: ``ui/svg.py`` draws a :class:`TimelineFigure`, ``ui/cards.py`` renders the
texts, ``ui/app.py`` wires them to components. Frames are ``stream.protocol.FrameResult`` records, both
live ones and those rebuilt from a stored report (:func:`frames_from_rows`), so one code path draws both.

Conventions: times in seconds of video time, probabilities are P(fake) in [0, 1], a person is a track id
shown as "Person <track_id + 1>", and a frame without faces has ``score is None`` (never 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream import protocol as p

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; red is kept for "fake".
PERSON_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
LABELS = ("real", "fake", "inconclusive", "no_face")
LABEL_TITLES = {"real": "REAL", "fake": "FAKE", "inconclusive": "INCONCLUSIVE", "no_face": "NO FACE"}
STRATEGY_TEXT = {
    "per_person": "per person: a person counts as fake when at least a third of their faces (and 3 or more) "
    "score above the threshold; one fake person makes the video fake",
    "mean": "mean: the average P(fake) over every face in every sampled frame",
    "max_frame": "max frame: the single most suspicious face decides",
    "confident": "confident: the mean of the confident faces when most of them agree, else the mean of all",
}
PHOTO_STRATEGY_TEXT = {
    "per_person": "per person: each face is judged on its own; one fake face makes the photo fake",
    "mean": "mean: the average P(fake) over the faces in the photo",
    "max_frame": "max frame: the most suspicious face decides",
    "confident": "confident: the mean of the confident faces when most of them agree, else the mean of all",
}


def person_name(track_id: int) -> str:
    """``Person 1`` for track 0: people count from one."""
    return f"Person {track_id + 1}"


def person_color(track_id: int) -> str:
    """The person's line/box colour (cycles after eight people)."""
    return PERSON_COLORS[track_id % len(PERSON_COLORS)]


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class LinePoint:
    """One face of one person on the timeline. ``seq``: the frame's position among the sampled frames."""

    seq: int
    time_s: float
    fake_prob: float


@dataclass(frozen=True, slots=True)
class PersonLine:
    """One person's series. ``runs``: stretches of consecutive sampled frames where the person is seen;
    the line is broken where they are absent, so a gap never looks like a measurement."""

    track_id: int
    name: str
    color: str
    runs: tuple[tuple[LinePoint, ...], ...]

    @property
    def points(self) -> tuple[LinePoint, ...]:
        return tuple(pt for run in self.runs for pt in run)


@dataclass(frozen=True, slots=True)
class Span:
    """A suspicious stretch of video time (frame scores above the threshold)."""

    start_s: float
    end_s: float
    peak_prob: float
    n_frames: int


@dataclass(frozen=True, slots=True)
class FrameMark:
    """A sampled frame on the x axis (also those without faces, drawn as a grey tick)."""

    seq: int
    index: int
    time_s: float
    score: float | None


@dataclass(frozen=True, slots=True)
class TimelineFigure:
    """Everything the timeline drawing needs. ``band``: scores within ±band of the threshold are
    inconclusive; ``step_s``: typical time between sampled frames (for drawing one-frame spans)."""

    x_max_s: float
    threshold: float
    band: float
    lines: tuple[PersonLine, ...]
    spans: tuple[Span, ...]
    frames: tuple[FrameMark, ...]
    step_s: float
    selected_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """The running verdict while frames arrive: the most suspicious person's mean so far."""

    label: str  # one of LABELS
    score: float | None
    track_id: int | None


@dataclass(frozen=True, slots=True)
class PersonSummary:
    """A person's final verdict row. ``thumb``: (seq, face_index) of their most suspicious face, whose
    overlay serves as the thumbnail, or None when no overlay is known (e.g. a report from History)."""

    track_id: int
    name: str
    color: str
    label: str
    score: float | None
    n_faces: int
    first_s: float
    last_s: float
    thumb: tuple[int, int] | None
    confident_fake: bool = False  # enough of their faces agree (a FAKE needs it; else fake-looking at most)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The final verdict card's content, from a report."""

    label: str
    title: str
    score: float | None
    threshold: float
    strategy: str
    strategy_text: str
    untrained: bool
    incomplete: str | None
    file_name: str
    is_image: bool
    facts: tuple[str, ...]
    model: str
    threshold_source: str = "settings"  # "request" | "settings" | "model card" | "default"


# -------------------------------------------------------------------------------------------- frames


def frames_from_rows(job_id: str, rows: Iterable[p.FrameRow]) -> list[p.FrameResult]:
    """Stored frame rows (``Report.frames`` or ``GET /v1/reports/{id}/frames``) -> frame records (no overlays)."""
    return [
        p.FrameResult(
            job_id=job_id,
            seq=seq,
            index=row.index,
            time_s=row.time_s,
            score=row.score,
            faces=tuple(p.Face(f.face_index, f.xyxy, f.detector_prob, f.fake_prob, f.track_id) for f in row.faces),
        )
        for seq, row in enumerate(rows)
    ]


def track_ids(frames: Iterable[p.FrameResult]) -> list[int]:
    """The people seen so far, sorted."""
    return sorted({face.track_id for frame in frames for face in frame.faces})


def person_lines(frames: Sequence[p.FrameResult]) -> tuple[PersonLine, ...]:
    """One line per person, in track order; a run breaks at a sampled frame where the person is absent."""
    lines = []
    for track in track_ids(frames):
        runs: list[tuple[LinePoint, ...]] = []
        current: list[LinePoint] = []
        for frame in frames:
            face = max((f for f in frame.faces if f.track_id == track), key=lambda f: f.fake_prob, default=None)
            if face is None:
                if current:
                    runs.append(tuple(current))
                    current = []
                continue
            current.append(LinePoint(frame.seq, frame.time_s, face.fake_prob))
        if current:
            runs.append(tuple(current))
        lines.append(PersonLine(track, person_name(track), person_color(track), tuple(runs)))
    return tuple(lines)


def suspicious_spans(frames: Sequence[p.FrameResult], threshold: float) -> tuple[Span, ...]:
    """Runs of consecutive sampled frames whose score is above ``threshold``; a frame without faces ends a
    run (the same rule the server applies to the final report's segments)."""
    spans = []
    run: list[p.FrameResult] = []
    for frame in [*frames, None]:
        if frame is not None and frame.score is not None and frame.score > threshold:
            run.append(frame)
            continue
        if run:
            peak = max(f.score or 0.0 for f in run)
            spans.append(Span(run[0].time_s, run[-1].time_s, peak, len(run)))
            run = []
    return tuple(spans)


def report_spans(report: p.Report) -> tuple[Span, ...]:
    """The report's frame-level suspicious segments."""
    return tuple(Span(s.start_s, s.end_s, s.peak_prob, s.n_frames) for s in report.frame_segments)


def _step_s(frames: Sequence[p.FrameResult]) -> float:
    gaps = sorted(b.time_s - a.time_s for a, b in zip(frames, frames[1:], strict=False) if b.time_s > a.time_s)
    return gaps[len(gaps) // 2] if gaps else 0.0


def build_figure(
    frames: Sequence[p.FrameResult],
    *,
    threshold: float,
    band: float,
    duration_s: float | None,
    spans: Sequence[Span] | None = None,
    selected_seq: int | None = None,
) -> TimelineFigure:
    """The timeline of ``frames``. The x axis spans the whole video when its duration is known, so the
    line grows left to right while analysis runs; ``spans`` default to :func:`suspicious_spans`."""
    last_s = max((f.time_s for f in frames), default=0.0)
    x_max = max(duration_s or 0.0, last_s)
    if x_max <= 0:
        x_max = 1.0
    return TimelineFigure(
        x_max_s=x_max,
        threshold=threshold,
        band=band,
        lines=person_lines(frames),
        spans=tuple(spans) if spans is not None else suspicious_spans(frames, threshold),
        frames=tuple(FrameMark(f.seq, f.index, f.time_s, f.score) for f in frames),
        step_s=_step_s(frames),
        selected_seq=selected_seq,
    )


# ------------------------------------------------------------------------------------ running state


def progress_line(frames_done: int, frames_planned: int | None, n_people: int) -> str:
    """``frame 41 of 120, 3 people`` (``planned`` may be unknown; ``no faces yet`` before the first)."""
    head = f"frame {frames_done}" + (f" of {frames_planned}" if frames_planned is not None else "")
    people = "no faces yet" if n_people == 0 else f"{n_people} {'person' if n_people == 1 else 'people'}"
    return f"{head}, {people}"


def progress_fraction(frames_done: int, frames_planned: int | None) -> float | None:
    """0..1 for a progress bar; None when the plan is unknown."""
    if not frames_planned:
        return None
    return min(1.0, frames_done / frames_planned)


def label_for(score: float | None, threshold: float, band: float) -> str:
    """no_face without a score; inconclusive within ±band of the threshold; else fake (>=) or real."""
    if score is None:
        return "no_face"
    distance = abs(score - threshold)
    if distance < band and not math.isclose(distance, band, abs_tol=1e-9):
        return "inconclusive"
    return "fake" if score >= threshold else "real"


def running_estimate(frames: Sequence[p.FrameResult], threshold: float, band: float) -> Estimate:
    """The most suspicious person by their mean P(fake) so far, labelled with threshold and band.

    A quick live hint only: the final verdict comes from the server's strategy in the report.
    """
    probs: dict[int, list[float]] = {}
    for frame in frames:
        for face in frame.faces:
            probs.setdefault(face.track_id, []).append(face.fake_prob)
    if not probs:
        return Estimate("no_face", None, None)
    track, values = max(probs.items(), key=lambda kv: (math.fsum(kv[1]) / len(kv[1]), -kv[0]))
    score = math.fsum(values) / len(values)
    return Estimate(label_for(score, threshold, band), score, track)


# ------------------------------------------------------------------------------------------ tables


FRAME_TABLE_HEADERS = ("time (s)", "frame", "faces", "max P(fake)", "people (P(fake))")


def frame_rows(frames: Sequence[p.FrameResult]) -> list[list[Any]]:
    """One row per sampled frame for the frame table (``FRAME_TABLE_HEADERS``)."""
    rows = []
    for frame in frames:
        people = ", ".join(
            f"{person_name(f.track_id)}: {f.fake_prob:.2f}" for f in sorted(frame.faces, key=lambda f: f.track_id)
        )
        score = "—" if frame.score is None else f"{frame.score:.3f}"
        rows.append([f"{frame.time_s:.2f}", frame.index, len(frame.faces), score, people or "no face"])
    return rows


def frame_by_seq(frames: Sequence[p.FrameResult], seq: int) -> p.FrameResult | None:
    """The frame at sampled position ``seq`` (frames are kept in order, but do not rely on it)."""
    if 0 <= seq < len(frames) and frames[seq].seq == seq:
        return frames[seq]
    return next((f for f in frames if f.seq == seq), None)


def face_caption(face: p.Face, short: bool = False) -> str:
    """``Person 2 · P(fake) 0.87`` (``short``: ``Person 2 · 0.87``, for thumbnails)."""
    prob = f"{face.fake_prob:.2f}" if short else f"P(fake) {face.fake_prob:.2f}"
    return f"{person_name(face.track_id)} · {prob}"


def photo_boxes(
    frame: p.FrameResult, scale_x: float = 1.0, scale_y: float = 1.0
) -> list[tuple[tuple[int, int, int, int], str]]:
    """(x1, y1, x2, y2) integer boxes with a caption per face, for an annotated photo. The scales map
    the report's pixel coordinates onto the displayed image when its size differs."""
    boxes = []
    for face in sorted(frame.faces, key=lambda f: f.track_id):
        x1, y1, x2, y2 = face.xyxy
        box = (round(x1 * scale_x), round(y1 * scale_y), round(x2 * scale_x), round(y2 * scale_y))
        boxes.append((box, face_caption(face)))
    return boxes


def person_summaries(report: p.Report, frames: Sequence[p.FrameResult]) -> list[PersonSummary]:
    """One row per person of the report, with the label the server gave them; the thumbnail is their most
    suspicious face with an overlay."""
    best: dict[int, tuple[float, int, int]] = {}
    for frame in frames:
        for face in frame.faces:
            if face.overlay_jpeg_b64 is None:
                continue
            known = best.get(face.track_id)
            if known is None or face.fake_prob > known[0]:
                best[face.track_id] = (face.fake_prob, frame.seq, face.face_index)
    out = []
    for track in report.tracks:
        thumb = best.get(track.track_id)
        out.append(
            PersonSummary(
                track_id=track.track_id,
                name=person_name(track.track_id),
                color=person_color(track.track_id),
                label=track.label,
                score=track.score,
                n_faces=track.n_faces,
                first_s=track.first_time_s,
                last_s=track.last_time_s,
                thumb=None if thumb is None else (thumb[1], thumb[2]),
                confident_fake=track.confident_fake,
            )
        )
    return out


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def verdict(report: p.Report) -> Verdict:
    """The verdict card of a report: its label as the server decided it."""
    media, model, summary = report.media, report.model, report.summary
    facts = [f"{media.width}×{media.height}"]
    if not media.is_image:
        if media.duration_s:
            facts.append(_duration(media.duration_s))
        facts.append(f"{summary.n_frames} frames analysed")
    facts.append(f"{summary.n_faces} face{'' if summary.n_faces == 1 else 's'}")
    facts.append(f"{summary.n_people} {'person' if summary.n_people == 1 else 'people'}")
    facts.append(f"analysed in {_duration(report.timings.total_s)}")
    model_text = f"{model.name} (sha256 {model.sha256[:12]}…)"
    if model.device:
        model_text += f" on {model.device}, {model.precision}"
    if model.card_summary:
        model_text += f" — {model.card_summary}"
    return Verdict(
        label=report.label,
        title=LABEL_TITLES.get(report.label, report.label.upper()),
        score=report.score,
        threshold=report.threshold,
        strategy=report.strategy,
        strategy_text=(PHOTO_STRATEGY_TEXT if media.is_image else STRATEGY_TEXT)[report.strategy],
        untrained=model.untrained or summary.untrained_model,
        incomplete=report.incomplete,
        file_name=media.name,
        is_image=media.is_image,
        facts=tuple(facts),
        model=model_text,
        threshold_source=report.threshold_source,
    )
