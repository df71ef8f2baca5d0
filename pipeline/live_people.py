"""The people of a live session as it runs: a verdict per person *now*, people who left closed, bounded memory.

Rules:
- A person's current verdict is the per-person rule (pipeline/aggregate.py) over their faces of the last
  ``window_s`` stream seconds: a person who looked real for an hour and fake for the last half minute
  reads fake now. ``n_faces`` counts the person's whole life.
- A person unseen for ``gone_s`` is retired from the tracker and summarised once (``PersonGone``, scored
  over their whole life); their per-face numbers are then kept only in that summary's Track. The tracker
  never matches them again: who comes back later is a new person.
- The session's report scores every person over their whole life, by the same rules as a file's report;
  frame-level segments are built as frames pass (no frame rows are kept), per-person segments from each
  person's own faces (a gap of more than ``2 / rate_hz`` between two of their faces breaks a run).
- Track support (pipeline/face_gates.py, rule 3) counts the frames analysed so far: a person closed, or in
  the final report, with faces in fewer than ``min(min_track_frames, frames analysed)`` frames is kept but
  unsupported, and leaves the session's score, face count and per-person segments out. The frame-level
  segments, built as frames pass, cannot wait for that and keep every face. ``now()`` judges everyone.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from pipeline.aggregate import (
    build_tracks,
    decide_label,
    faces_score,
    find_segments,
    is_confident_fake,
    track_label,
    track_score,
)
from pipeline.face_gates import support_frames
from pipeline.live_types import LiveOptions, LiveSession, PersonGone, PersonNow
from pipeline.track import Tracker
from pipeline.types import (
    AnalysisStart,
    FrameVerdict,
    Label,
    Report,
    ScoredFrame,
    Segment,
    StageTimings,
    Strategy,
    Track,
    TrackObservations,
)


class _FrameRuns:
    """Frame-level segments (score > threshold), built one frame at a time: the open run only is held."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.segments: list[Segment] = []
        self._run: list[tuple[float, float]] = []  # (time_s, score) of the open run

    def add(self, time_s: float, score: float | None) -> None:
        if score is not None and score > self.threshold:
            self._run.append((time_s, score))
        else:
            self.close()

    def close(self) -> None:
        if self._run:
            times, scores = zip(*self._run, strict=True)
            self.segments.extend(find_segments(list(times), list(scores), self.threshold))
            self._run = []


def _person_segments(obs: TrackObservations, threshold: float, max_gap_s: float) -> tuple[Segment, ...]:
    """One person's segments from their own faces; a gap over ``max_gap_s`` between faces breaks a run."""
    times: list[float] = []
    scores: list[float | None] = []
    for i, (t, prob) in enumerate(zip(obs.times_s, obs.fake_probs, strict=True)):
        if i and t - obs.times_s[i - 1] > max_gap_s:
            times.append(t)
            scores.append(None)  # the break
        times.append(t)
        scores.append(prob)
    return find_segments(times, scores, threshold, track_id=obs.track_id)


class LivePeople:
    """Tracks people over an endless stream of scored frames (rules in the module docstring)."""

    def __init__(
        self, threshold: float, band: float, min_faces: int, options: LiveOptions, *, min_track_frames: int = 1
    ) -> None:
        self.threshold = threshold
        self.band = band
        self.min_faces = min_faces
        self.options = options
        self.min_track_frames = min_track_frames
        self.n_frames = 0
        self._tracker = Tracker()
        self._closed: list[Track] = []
        self._closed_segments: list[Segment] = []
        self._runs = _FrameRuns(threshold)
        self.n_faces = 0

    def assign(self, frame: ScoredFrame) -> tuple[FrameVerdict, list[PersonGone]]:
        """Track ``frame``'s faces; also retire (and return) the people unseen for ``gone_s`` by its time."""
        verdict = self._tracker.assign(frame)
        self.n_frames += 1
        self.n_faces += len(verdict.faces)
        self._runs.add(verdict.time_s, verdict.score)
        gone = []
        for obs in self._tracker.retire(verdict.time_s - self.options.gone_s):
            (track,) = self._tracks([obs])
            self._closed.append(track)
            if track.supported:
                self._closed_segments.extend(self._segments_of(obs))
            gone.append(PersonGone(_summary(track)))
        return verdict, gone

    def now(self) -> tuple[PersonNow, ...]:
        """Every person being tracked, by id, judged on their last ``window_s`` of faces."""
        out = []
        for obs in self._tracker.tracks():
            start = bisect.bisect_left(obs.times_s, obs.times_s[-1] - self.options.window_s)
            window = obs.fake_probs[start:]
            out.append(
                PersonNow(
                    track_id=obs.track_id,
                    first_s=obs.times_s[0],
                    last_s=obs.times_s[-1],
                    n_faces=len(obs.fake_probs),
                    window_faces=len(window),
                    score=track_score(window, self.threshold, min_agree=self.min_faces),
                    label=track_label(window, self.threshold, band=self.band, min_agree=self.min_faces),
                    confident_fake=is_confident_fake(window, self.threshold, min_agree=self.min_faces),
                )
            )
        return tuple(out)

    def report(
        self, start: AnalysisStart, strategy: Strategy, session: LiveSession, timings: StageTimings, version: str
    ) -> Report:
        """The session's report: every person over their whole life; ``frames`` empty (rows were streamed)."""
        self._runs.close()
        open_obs = self._tracker.tracks()
        tracks = tuple(sorted((*self._closed, *self._tracks(open_obs)), key=lambda t: t.track_id))
        segments = list(self._runs.segments) + self._closed_segments
        supported = {t.track_id for t in tracks if t.supported}
        for obs in open_obs:
            if obs.track_id in supported:
                segments.extend(self._segments_of(obs))
        probs = [p for t in tracks if t.supported for p in t.fake_probs]
        score = faces_score(probs, tracks, strategy, self.threshold)
        label = decide_label(
            score, len(probs), is_image=False, threshold=self.threshold, band=self.band, min_faces=self.min_faces
        )
        if not probs and tracks:
            label = Label.INCONCLUSIVE  # faces were seen, but none of them belongs to a person
        return Report(
            media=start.media,
            policy=start.policy,
            model=start.model,
            strategy=strategy,
            threshold=self.threshold,
            score=score,
            label=label,
            frames=(),
            tracks=tracks,
            segments=tuple(sorted(segments, key=lambda s: (s.track_id is not None, s.track_id or 0, s.start_s))),
            timings=timings,
            version=version,
            incomplete=session.end_message if session.end.value == "failed" else None,
            threshold_source=start.threshold_source,
            session=session,
        )

    def _tracks(self, observations: Sequence[TrackObservations]) -> tuple[Track, ...]:
        min_frames = support_frames(self.min_track_frames, self.n_frames, is_image=False)
        return build_tracks(
            observations, self.threshold, band=self.band, min_agree=self.min_faces, min_frames=min_frames
        )

    def _segments_of(self, obs: TrackObservations) -> tuple[Segment, ...]:
        return _person_segments(obs, self.threshold, 2.0 * self.options.every_s)


def _summary(track: Track) -> PersonNow:
    """A closed person, judged on their whole life."""
    return PersonNow(
        track_id=track.track_id,
        first_s=track.first_time_s,
        last_s=track.last_time_s,
        n_faces=track.n_faces,
        window_faces=track.n_faces,
        score=track.score,
        label=track.label,
        confident_fake=track.confident_fake,
    )
