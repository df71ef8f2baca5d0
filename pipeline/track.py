"""Faces -> person tracks, online: each frame gets its track ids the moment it arrives.

Matching for one frame (one face per track per frame):

1. IoU: pairs of (face, track last seen at most ``max_gap_frames`` sampled frames ago, compared with the
   track's last box) with IoU >= ``iou_min`` are taken greedily, best IoU first. A pair is vetoed when
   both sides have an embedding and their cosine distance exceeds ``iou_veto_dist``: when two people
   cross, a face can overlap the *other* person's last box better than its own.
2. Embedding: faces left over are matched greedily, smallest cosine distance first, against *all* earlier
   tracks not matched in this frame (a person re-joins after a gap, a cut or a crossing) when the
   distance to the track's running mean embedding is <= ``embed_max_dist``.
3. Anything left starts a new track. Ids are 0, 1, 2, ... in order of first appearance.

Embeddings are L2-normalised before use; a track's running mean is the mean of its faces' normalised
embeddings, normalised again. Cosine distance = 1 - cosine similarity, in [0, 2]. A zero or non-finite
embedding carries no identity: it never matches by embedding and never vetoes.

State is O(tracks) plus a few numbers per face (frame index, time, fake_prob) for the report: no images.
"""

from __future__ import annotations

import numpy as np

from pipeline.aggregate import frame_score
from pipeline.types import FaceBox, FaceVerdict, FrameVerdict, ScoredFrame, TrackObservations


class _TrackState:
    """Mutable per-track state: last box and when it was seen, running embedding sum, per-face numbers."""

    __slots__ = ("track_id", "last_xyxy", "last_seq", "embed_sum", "frame_indices", "times_s", "fake_probs")

    def __init__(self, track_id: int) -> None:
        self.track_id = track_id
        self.last_xyxy: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
        self.last_seq = -1
        self.embed_sum: np.ndarray | None = None
        self.frame_indices: list[int] = []
        self.times_s: list[float] = []
        self.fake_probs: list[float] = []

    def mean_direction(self) -> np.ndarray | None:
        if self.embed_sum is None:
            return None
        norm = float(np.linalg.norm(self.embed_sum))
        return self.embed_sum / norm if norm > 0 else None


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two xyxy boxes (pixels), in [0, 1]."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _unit(embedding: np.ndarray | None) -> np.ndarray | None:
    """L2-normalised float64 copy, or None when the embedding carries no direction."""
    if embedding is None:
        return None
    e = np.asarray(embedding, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(e))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return e / norm


class Tracker:
    """Assigns person track ids to the faces of frames given in stream order (rules in the module docstring).

    ``iou_min``: IoU at or above which a face continues a recently seen track's box.
    ``embed_max_dist``: cosine distance at or below which a face re-joins a track by identity. 0.6 is
    squared-Euclidean 1.2 between unit vectors (Euclidean ~1.1), the usual same-person cut-off for
    FaceNet-style 512-d embeddings; distances here are to a running mean, which sits closer to the person
    than any single face, so same-person faces fall well inside it.
    ``iou_veto_dist``: cosine distance above which an IoU match is refused (looser than
    ``embed_max_dist``: geometry is the stronger cue, identity only overrules it when clearly different).
    ``max_gap_frames``: sampled frames a track may be missing and still match by IoU; 2 bridges one
    missed detection.
    """

    def __init__(
        self,
        *,
        iou_min: float = 0.3,
        embed_max_dist: float = 0.6,
        iou_veto_dist: float = 0.8,
        max_gap_frames: int = 2,
    ) -> None:
        if not 0.0 < iou_min <= 1.0:
            raise ValueError(f"iou_min must be in (0, 1], got {iou_min}")
        if not 0.0 <= embed_max_dist <= 2.0:
            raise ValueError(f"embed_max_dist must be a cosine distance in [0, 2], got {embed_max_dist}")
        if not 0.0 <= iou_veto_dist <= 2.0:
            raise ValueError(f"iou_veto_dist must be a cosine distance in [0, 2], got {iou_veto_dist}")
        if max_gap_frames < 1:
            raise ValueError(f"max_gap_frames must be >= 1 sampled frames, got {max_gap_frames}")
        self.iou_min = iou_min
        self.embed_max_dist = embed_max_dist
        self.iou_veto_dist = iou_veto_dist
        self.max_gap_frames = max_gap_frames
        self._tracks: list[_TrackState] = []
        self._next_id = 0  # ids are never reused, also after ``retire``
        self._seq = -1  # ordinal of the current sampled frame
        self._last_index: int | None = None

    def assign(self, frame: ScoredFrame) -> FrameVerdict:
        """Give each face of ``frame`` a track id and return the frame's verdict (faces in input order,
        score = max fake_prob, None without faces). Frames must come in increasing ``index`` order."""
        if self._last_index is not None and frame.index <= self._last_index:
            raise ValueError(f"frames must arrive in order: frame {frame.index} after {self._last_index}")
        self._last_index = frame.index
        self._seq += 1
        units = [_unit(s.embedding) for s in frame.scores]
        owners = self._match([s.box for s in frame.scores], units)

        faces: list[FaceVerdict] = []
        for s, unit, track in zip(frame.scores, units, owners, strict=True):
            track.last_xyxy = s.box.xyxy
            track.last_seq = self._seq
            if unit is not None:
                track.embed_sum = unit.copy() if track.embed_sum is None else track.embed_sum + unit
            track.frame_indices.append(frame.index)
            track.times_s.append(frame.time_s)
            track.fake_probs.append(s.fake_prob)
            faces.append(
                FaceVerdict(
                    box=s.box,
                    fake_prob=s.fake_prob,
                    heatmap=s.heatmap,
                    track_id=track.track_id,
                    crop=s.crop,
                    embedding=s.embedding,
                    members=s.members,
                )
            )
        score = frame_score([f.fake_prob for f in faces])
        return FrameVerdict(index=frame.index, time_s=frame.time_s, faces=tuple(faces), score=score)

    def _match(self, boxes: list[FaceBox], units: list[np.ndarray | None]) -> list[_TrackState]:
        """The track of each face (new tracks created here), one face per track."""
        owner: list[_TrackState | None] = [None] * len(boxes)
        taken: set[int] = set()
        means = {t.track_id: t.mean_direction() for t in self._tracks}

        def distance(face: int, track: _TrackState) -> float | None:
            unit, mean = units[face], means[track.track_id]
            if unit is None or mean is None or unit.shape != mean.shape:
                return None
            return 1.0 - float(np.dot(unit, mean))

        recent = [t for t in self._tracks if self._seq - t.last_seq <= self.max_gap_frames]
        by_iou: list[tuple[float, int, int, _TrackState]] = []
        for f, box in enumerate(boxes):
            for t in recent:
                overlap = iou(box.xyxy, t.last_xyxy)
                if overlap < self.iou_min:
                    continue
                d = distance(f, t)
                if d is not None and d > self.iou_veto_dist:
                    continue
                by_iou.append((-overlap, f, t.track_id, t))
        for _, f, tid, t in sorted(by_iou, key=lambda x: x[:3]):
            if owner[f] is None and tid not in taken:
                owner[f] = t
                taken.add(tid)

        by_embed: list[tuple[float, int, int, _TrackState]] = []
        for f in range(len(boxes)):
            if owner[f] is not None:
                continue
            for t in self._tracks:
                if t.track_id in taken:
                    continue
                d = distance(f, t)
                if d is not None and d <= self.embed_max_dist:
                    by_embed.append((d, f, t.track_id, t))
        for _, f, tid, t in sorted(by_embed, key=lambda x: x[:3]):
            if owner[f] is None and tid not in taken:
                owner[f] = t
                taken.add(tid)

        result: list[_TrackState] = []
        for f in range(len(boxes)):
            t = owner[f]
            if t is None:
                t = _TrackState(self._next_id)
                self._next_id += 1
                self._tracks.append(t)
            result.append(t)
        return result

    def retire(self, seen_before_s: float) -> list[TrackObservations]:
        """Remove the tracks last seen before ``seen_before_s`` (stream seconds) and return them, by id: a
        live session forgets people who left, so memory stays bounded. A retired person who comes back
        gets a new track."""
        gone = [t for t in self._tracks if t.times_s and t.times_s[-1] < seen_before_s]
        if gone:
            self._tracks = [t for t in self._tracks if not (t.times_s and t.times_s[-1] < seen_before_s)]
        return [_observations(t) for t in gone]

    def tracks(self) -> list[TrackObservations]:
        """Every track so far, by id: a snapshot, safe to keep while tracking goes on."""
        return [_observations(t) for t in self._tracks]


def _observations(t: _TrackState) -> TrackObservations:
    return TrackObservations(t.track_id, tuple(t.frame_indices), tuple(t.times_s), tuple(t.fake_probs))
