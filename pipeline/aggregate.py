"""Pure functions from per-face fake probabilities to frame, person, video scores, segments and labels.

All probabilities are P(fake) in [0, 1]; times are seconds of presentation time; "faces" counts scored
faces. A missing score is ``None`` (no face), never 0.5.

The ``per_person`` rule (the default strategy). For one person (track) with face probabilities p_1..p_n:

* ``agree`` = number of faces with p >= threshold; ``top_half`` = mean of the ceil(n/2) largest p.
* The person is *confidently fake* when ``top_half >= threshold`` and
  ``agree >= max(min_agree, ceil(agree_frac * n))`` (defaults: 3 faces and a third of the faces).
  A swap often leaks only in some frames (pose, blur, occlusion), so the more-fake half speaks for the
  person; but one or two spikes, or a short spurious track, cannot make a person fake on their own.
* The person's score is ``top_half`` when confidently fake, else the plain mean of p (an unbiased
  estimate: the top half of a real person's noisy scores would lean towards fake).
* The person's label follows the video's rule (:func:`decide_label`: threshold and inconclusive band) on
  the person's score, and FAKE also needs the person to be confidently fake (else INCONCLUSIVE:
  fake-looking but too few agreeing faces). So a person at 0.50 with threshold 0.5 and band 0.05 is
  INCONCLUSIVE, like the video.
* Video score: the highest score among confidently fake persons, if any (one swapped face in a group
  makes the video fake); else the mean of the persons' scores weighted by their face counts.

For a still image each person is seen once: build its tracks with ``min_agree=1``.

Track support (rule 3 of pipeline/face_gates.py): a track seen in fewer than ``min_frames`` sampled frames
is not a person. It is kept, marked ``supported=False``, labelled INCONCLUSIVE and never confidently fake,
and the video's score, frame-level segments and face count (``min_faces``) leave its faces out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from pipeline.face_gates import support_frames
from pipeline.types import (
    AnalysisStart,
    FrameRow,
    Label,
    RejectedFace,
    Report,
    Segment,
    StageTimings,
    Strategy,
    Track,
    TrackObservations,
)

# DFDC winner's rule (selimsef/dfdc_deepfake_challenge, confident_strategy)
CONFIDENT_HIGH = 0.8
CONFIDENT_LOW = 0.2
CONFIDENT_MIN_HIGH = 11  # more than this many faces >= CONFIDENT_HIGH ...
# ... and more than n/2.5 of them; or more than 0.9*n faces <= CONFIDENT_LOW. Compared in integers below.

DEFAULT_MIN_AGREE = 3
DEFAULT_AGREE_FRAC = 1 / 3


def frame_score(probs: Sequence[float]) -> float | None:
    """A frame's score: the max fake_prob over its faces; None when it has no face."""
    return max(probs) if len(probs) else None


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _top_half_mean(probs: Sequence[float]) -> float:
    top = sorted(probs, reverse=True)[: (len(probs) + 1) // 2]
    return _mean(top)


def is_confident_fake(
    probs: Sequence[float],
    threshold: float,
    *,
    min_agree: int = DEFAULT_MIN_AGREE,
    agree_frac: float = DEFAULT_AGREE_FRAC,
) -> bool:
    """Whether one person's face probabilities make them confidently fake (rule in the module docstring)."""
    n = len(probs)
    if n == 0:
        return False
    agree = sum(1 for p in probs if p >= threshold)
    # the epsilon keeps e.g. (1/3)*9 from rounding up to 4
    needed = max(min_agree, math.ceil(agree_frac * n - 1e-9))
    return agree >= needed and _top_half_mean(probs) >= threshold


def track_score(
    probs: Sequence[float],
    threshold: float = 0.5,
    *,
    min_agree: int = DEFAULT_MIN_AGREE,
    agree_frac: float = DEFAULT_AGREE_FRAC,
) -> float | None:
    """One person's score: mean of the top half of ``probs`` when confidently fake, else the mean of all;
    None when there are no faces."""
    if not len(probs):
        return None
    if is_confident_fake(probs, threshold, min_agree=min_agree, agree_frac=agree_frac):
        return _top_half_mean(probs)
    return _mean(probs)


def track_label(
    probs: Sequence[float],
    threshold: float = 0.5,
    *,
    band: float = 0.0,
    min_agree: int = DEFAULT_MIN_AGREE,
    agree_frac: float = DEFAULT_AGREE_FRAC,
) -> Label:
    """One person's label, by the video's own rule (:func:`decide_label`, with ``band``) on the person's
    score, where FAKE also needs the person to be confidently fake: fake-looking with too few agreeing
    faces is INCONCLUSIVE. NO_FACE for no faces."""
    score = track_score(probs, threshold, min_agree=min_agree, agree_frac=agree_frac)
    agreed = is_confident_fake(probs, threshold, min_agree=min_agree, agree_frac=agree_frac)
    # one face is enough evidence for REAL: min_agree already guards FAKE
    return decide_label(score, len(probs), is_image=False, threshold=threshold, band=band, min_faces=1, agreed=agreed)


def build_tracks(
    observations: Sequence[TrackObservations],
    threshold: float,
    *,
    band: float = 0.0,
    min_agree: int = DEFAULT_MIN_AGREE,
    agree_frac: float = DEFAULT_AGREE_FRAC,
    min_frames: int = 1,
) -> tuple[Track, ...]:
    """Score and label each person (see :func:`track_score`, :func:`track_label`), sorted by track id.

    ``band``: the inconclusive band of the video's label (Settings.inconclusive_band), so a person at the
    threshold is INCONCLUSIVE like a video there. ``min_agree``: faces that must agree for a confident
    fake; pass 1 for a still image. ``min_frames``: sampled frames a track needs to be supported (module
    docstring; :func:`pipeline.face_gates.support_frames` gives it for a video).
    """
    _check_threshold(threshold)
    if min_agree < 1 or min_frames < 1:
        raise ValueError(f"min_agree and min_frames must be >= 1, got {min_agree}, {min_frames}")
    out = []
    for obs in sorted(observations, key=lambda o: o.track_id):
        probs = obs.fake_probs
        supported = len(set(obs.frame_indices)) >= min_frames
        out.append(
            Track(
                track_id=obs.track_id,
                frame_indices=tuple(obs.frame_indices),
                first_time_s=obs.times_s[0],
                last_time_s=obs.times_s[-1],
                fake_probs=tuple(probs),
                score=track_score(probs, threshold, min_agree=min_agree, agree_frac=agree_frac),
                label=(
                    track_label(probs, threshold, band=band, min_agree=min_agree, agree_frac=agree_frac)
                    if supported
                    else Label.INCONCLUSIVE
                ),
                confident_fake=supported
                and is_confident_fake(probs, threshold, min_agree=min_agree, agree_frac=agree_frac),
                supported=supported,
            )
        )
    return tuple(out)


def supported_rows(rows: Sequence[FrameRow], tracks: Sequence[Track]) -> list[FrameRow]:
    """``rows`` without the faces of unsupported tracks (each frame's score re-taken, None when none is
    left): what the video's score and frame-level segments are computed from."""
    unsupported = {t.track_id for t in tracks if not t.supported}
    if not unsupported:
        return list(rows)
    out = []
    for row in rows:
        faces = tuple(f for f in row.faces if f.track_id not in unsupported)
        out.append(dataclasses.replace(row, faces=faces, score=frame_score([f.fake_prob for f in faces])))
    return out


def confident_score(probs: Sequence[float]) -> float | None:
    """The DFDC winner's rule over all face probabilities (n faces; None when n == 0):
    more than n/2.5 and more than 11 faces >= 0.8 -> their mean; else more than 0.9*n faces <= 0.2 ->
    their mean; else the mean of all."""
    n = len(probs)
    if n == 0:
        return None
    high = [p for p in probs if p >= CONFIDENT_HIGH]
    # integer forms of count > n/2.5 and count > 0.9*n, so edge counts are exact
    if 5 * len(high) > 2 * n and len(high) > CONFIDENT_MIN_HIGH:
        return _mean(high)
    low = [p for p in probs if p <= CONFIDENT_LOW]
    if 10 * len(low) > 9 * n:
        return _mean(low)
    return _mean(probs)


def per_person_score(tracks: Sequence[Track]) -> float | None:
    """The per_person video score from scored tracks (rule in the module docstring); None without faces."""
    scored = [t for t in tracks if t.score is not None and t.n_faces > 0 and t.supported]
    if not scored:
        return None
    # confidence, not the label: a confident fake within the band is labelled INCONCLUSIVE but still leads
    fake = [t.score for t in scored if t.confident_fake and t.score is not None]
    if fake:
        return max(fake)
    total = sum(t.n_faces for t in scored)
    return math.fsum(t.score * t.n_faces for t in scored if t.score is not None) / total


def video_score(
    frames: Sequence[FrameRow],
    tracks: Sequence[Track],
    strategy: Strategy,
    threshold: float,
) -> float | None:
    """The video's fake score under ``strategy``; None when no face was scored.

    ``mean``: mean of all face probabilities. ``max_frame``: max of frame scores. ``confident``: see
    :func:`confident_score`. ``per_person``: see :func:`per_person_score`; ``tracks`` must come from
    :func:`build_tracks` with the same ``threshold``.
    """
    return faces_score([f.fake_prob for row in frames for f in row.faces], tracks, strategy, threshold)


def faces_score(probs: Sequence[float], tracks: Sequence[Track], strategy: Strategy, threshold: float) -> float | None:
    """:func:`video_score` from every scored face's P(fake) (any order) and the tracks: what a live
    session, which keeps no frame rows, scores itself with."""
    _check_threshold(threshold)
    if not probs:
        return None
    if strategy is Strategy.MEAN:
        return _mean(probs)
    if strategy is Strategy.MAX_FRAME:
        # the max of per-frame maxima is the max over all faces
        return max(probs)
    if strategy is Strategy.CONFIDENT:
        return confident_score(probs)
    if strategy is Strategy.PER_PERSON:
        if not tracks:
            raise ValueError(f"per_person needs the tracks of the {len(probs)} scored faces, got none")
        return per_person_score(tracks)
    raise ValueError(f"unknown strategy {strategy!r}")


def track_probs_by_frame(frames: Sequence[FrameRow], track_id: int) -> list[float | None]:
    """One entry per frame: the fake_prob of ``track_id``'s face there, None where the person is absent.
    Feed it to :func:`find_segments` with the frames' times for one person's segments."""
    series: list[float | None] = []
    for row in frames:
        series.append(next((f.fake_prob for f in row.faces if f.track_id == track_id), None))
    return series


def find_segments(
    times_s: Sequence[float],
    scores: Sequence[float | None],
    threshold: float,
    track_id: int | None = None,
) -> tuple[Segment, ...]:
    """Contiguous runs of sampled frames whose score is > ``threshold``; a None score (no face) breaks a run.

    ``times_s[i]`` is frame i's time in seconds. Each segment spans the first to the last frame of its run;
    ``peak_s``/``peak_prob`` are the time and score of its highest frame (the earliest on a tie).
    """
    if len(times_s) != len(scores):
        raise ValueError(f"need one score per time, got {len(times_s)} times and {len(scores)} scores")
    segments: list[Segment] = []
    start: int | None = None
    for i, s in enumerate([*scores, None]):
        above = s is not None and s > threshold
        if above and start is None:
            start = i
        elif not above and start is not None:
            run = range(start, i)
            peak = max(run, key=lambda j: (scores[j], -j))
            peak_prob = scores[peak]
            assert peak_prob is not None
            segments.append(
                Segment(
                    start_s=times_s[start],
                    end_s=times_s[i - 1],
                    peak_s=times_s[peak],
                    peak_prob=peak_prob,
                    n_frames=len(run),
                    track_id=track_id,
                )
            )
            start = None
    return tuple(segments)


def decide_label(
    score: float | None,
    n_faces: int,
    *,
    is_image: bool,
    threshold: float,
    band: float,
    min_faces: int,
    agreed: bool = True,
) -> Label:
    """The verdict of a video, and of each person in it (:func:`track_label`). No face -> NO_FACE; fewer
    than ``min_faces`` scored faces (an image: 1) -> INCONCLUSIVE; |score - threshold| < ``band`` ->
    INCONCLUSIVE; else FAKE if score >= threshold (and ``agreed``: for a person, enough faces agree;
    INCONCLUSIVE otherwise) else REAL.

    A score exactly at the band's edge (within 1e-9) is decided, not inconclusive, whichever side it is on.
    """
    _check_threshold(threshold)
    if n_faces < 0:
        raise ValueError(f"n_faces must be >= 0, got {n_faces}")
    if n_faces == 0:
        return Label.NO_FACE
    if score is None:
        raise ValueError(f"{n_faces} faces were scored but the score is None")
    if n_faces < (1 if is_image else min_faces):
        return Label.INCONCLUSIVE
    distance = abs(score - threshold)
    # float noise makes 0.5 - 0.45 < 0.05 but 0.55 - 0.5 > 0.05; treat both edges alike
    if distance < band and not math.isclose(distance, band, rel_tol=0.0, abs_tol=1e-9):
        return Label.INCONCLUSIVE
    if score < threshold:
        return Label.REAL
    return Label.FAKE if agreed else Label.INCONCLUSIVE


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")


def build_report(
    start: AnalysisStart,
    strategy: Strategy,
    rows: Sequence[FrameRow],
    observations: Sequence[TrackObservations],
    *,
    band: float,
    min_faces: int,
    timings: StageTimings,
    version: str,
    incomplete: str | None = None,
    min_track_frames: int = 1,
    rejected: Sequence[RejectedFace] = (),
    n_rejected: int | None = None,
) -> Report:
    """The Report of one analysis: persons, video score, segments (frame-level, then per person), label.

    ``start`` is what the analysis began with (media, policy, model, threshold); ``rows`` every sampled
    frame; ``observations`` the tracker's persons; ``band`` and ``min_faces`` as in :func:`decide_label`;
    ``min_track_frames`` the track support setting (module docstring); ``rejected`` the detections the face
    gates refused (the listed ones) of ``n_rejected`` (None: as many as listed).
    """
    threshold, is_image = start.threshold, start.media.is_image
    # A photo shows each person once, so one face must be enough to call a person fake.
    tracks = build_tracks(
        observations,
        threshold,
        band=band,
        min_agree=1 if is_image else min_faces,
        min_frames=support_frames(min_track_frames, len(rows), is_image),
    )
    scoring = supported_rows(rows, tracks)
    score = video_score(scoring, tracks, strategy, threshold)
    times_s = [r.time_s for r in rows]
    segments = find_segments(times_s, [r.score for r in scoring], threshold)
    for track in tracks:
        if track.supported:
            segments += find_segments(
                times_s, track_probs_by_frame(rows, track.track_id), threshold, track_id=track.track_id
            )
    n_faces = sum(len(r.faces) for r in scoring)
    label = decide_label(score, n_faces, is_image=is_image, threshold=threshold, band=band, min_faces=min_faces)
    if n_faces == 0 and any(r.faces for r in rows):
        label = Label.INCONCLUSIVE  # faces were seen, but none of them belongs to a person
    return Report(
        media=start.media,
        policy=start.policy,
        model=start.model,
        strategy=strategy,
        threshold=threshold,
        score=score,
        label=label,
        frames=tuple(rows),
        tracks=tracks,
        segments=segments,
        timings=timings,
        version=version,
        incomplete=incomplete,
        threshold_source=start.threshold_source,
        rejected=tuple(rejected),
        n_rejected=len(rejected) if n_rejected is None else n_rejected,
        provenance=start.provenance,
    )
