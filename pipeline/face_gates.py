"""Faces that are really faces: the gates a detection passes before it is cropped, scored and tracked, and
the support a track needs before it is a person. Every number is a Settings field (``DFF_*``).

MTCNN fires on things that are not faces (a static object in a phone video scored P ≈ 0.97-0.98 in 3 of 10
sampled frames and became "Person 2"); under ``per_person`` such a face could decide a video. So:

1. **Probability floor** (``video_face_prob_floor`` 0.95; photos keep ``detect_prob_floor`` 0.90). Videos
   (files and live sources) need ``detector_prob >= 0.95``; a photo's faces need the detector's own floor,
   as before. Measured over ../shared/media's three clips (every 0.5 s, the service's detection): 3 of 106
   real faces at or over 0.90 scored under 0.95 (hamilton 0.934, a blurred head at roll -42°, and 0.947;
   crowd 0.921, a small face), each one frame of a person seen in other frames; megamind (CGI) none (lowest
   0.964). False faces MTCNN finds at 0.90 or more: 26 in 40 images of skin-coloured blurred noise (the
   ``skin_noise`` of tests/pipeline/test_face_gates.py) at 0.906-0.991, and the hub of skimage's motorcycle
   wheel at 0.929: the floor refuses 19 of these 27. A tiny face in a 1080p frame (13 px in the 640 copy)
   can score 0.92 in the fast pass: refused there, it makes the frame short of a face, so the small-face
   recovery pass looks again at full resolution. Detections under ``detect_prob_floor`` are dropped by the
   detector, as before, and not listed.
2. **Geometry**, per detection, on MTCNN's five landmarks (left eye, right eye, nose, mouth left, mouth
   right; ``FaceBox.landmarks``, frame pixels, y down), first failing rule named:
   a. roll: the eye line's angle (left eye to right eye) is within ±``face_max_roll_deg`` (60°). An
      upside-down face, or eyes labelled the wrong way round, reads about 180°.
   b. in the face's own frame (rotated by -roll, so the eye line is level): the eye line lies above both
      mouth corners, and the nose lies strictly between the eye line and the mouth line (the mean of the
      corners).
   c. the distance between the eyes is ``face_min_eye_frac``..``face_max_eye_frac`` (0.15-0.80) of the
      box width.
   d. every landmark lies inside the box grown by ``face_box_pad_frac`` (0.15) of its width/height on each
      side (boxes are clipped to the frame: a face cut by the frame edge has its landmarks beyond it).
   Measured on 122 real faces at P >= 0.90 (16 in photos: astronaut, the test scenes' tiles, obama,
   two_people, multiface, messi, rgba_32bit; 106 in the three shared clips), none refused: roll -42..+13°,
   eyes 0.255-0.589 of the box width, nose 0.20-0.84 of the way from eye line to mouth line, landmarks at
   most 0.062 of the box side outside it. The astronaut rotated by 0-60° is found with a landmark roll of at
   most 44° (nothing at 70-90°). Whatever MTCNN accepts inside a frame comes back with face-shaped landmarks:
   upside-down faces (P 0.72-0.78: under the floor anyway, landmarks of an upright face), faces with halves
   swapped, rows repeated or stretched, and the 27 false faces above (roll -17..+15°, eyes 0.35-0.75, nose
   0.39-0.71, eyes above mouth). So this gate refuses what ONet cannot make face-like: detections cut by the
   frame edge (2 of the 27, noise blobs in a corner: landmarks 0.32-0.33 of the box outside it; a real face a
   third out of the frame too: eyes 1.07 of the clipped box width, its crop half a face), and landmarks from
   any other detector that are not a face's. It does not stop a face-shaped false face: that is left to the
   floor and to track support.
   A detection without landmarks (a detector that gives none; ours always gives five) passes this gate:
   there is nothing to judge, and rejecting would make every such detector useless; the floor and track
   support still apply.
3. **Track support** (``min_track_frames`` 2): a video's track is a person only when it has faces in at least
   ``min(min_track_frames, sampled frames)`` sampled frames (:func:`support_frames`), so a 1-frame video still
   gives a verdict; a photo's faces need 1. Applied when the report is built (pipeline/aggregate.py,
   pipeline/live_people.py for a live session, over the frames analysed so far): an unsupported track stays
   in the report with ``supported`` False, is labelled INCONCLUSIVE and is never a confident fake; its faces
   count in no strategy's score, in no frame-level segment, nor towards ``min_faces``, and it gets no
   segments of its own. A video whose faces are all unsupported is INCONCLUSIVE with no score. Frame rows
   keep every face as it was streamed (``FrameRow.score`` over all of the frame's faces). A live session's
   frame-level segments are built as frames pass, before support is known, and may include such a face.

Gates 1-2 run right after detection, before cropping (a rejected detection costs no classification), in
``pipeline.faces.detect_faces`` when given ``gates`` (``analyze()`` and ``source_faces``, which training and
the bench use; the small-face recovery pass counts kept faces only) and in ``pipeline.run.watch`` (live).
Rejected detections go to ``Report.rejected`` (frame, time, box, probability, gate, reason): the first
``MAX_REJECTED`` (200) in frame order, with ``Report.n_rejected`` the total. ``face_gates`` False turns all
three off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.types import FaceBox, MediaInfo, RejectedFace

if TYPE_CHECKING:
    from pipeline.config import Settings

MAX_REJECTED = 200  # rejected detections a report lists; the rest are only counted (Report.n_rejected)


@dataclass(frozen=True, slots=True)
class FaceGates:
    """Gates 1-2 for one kind of media (module docstring). ``prob_floor`` in [0, 1]; ``max_roll_deg``
    degrees; ``min_eye_frac``/``max_eye_frac`` of the box width; ``box_pad_frac`` of the box's side;
    ``floor_name`` names the floor in reasons ("video" or "photo")."""

    prob_floor: float
    max_roll_deg: float = 60.0
    min_eye_frac: float = 0.15
    max_eye_frac: float = 0.80
    box_pad_frac: float = 0.15
    floor_name: str = "video"

    def check(self, box: FaceBox) -> tuple[str, str] | None:
        """``(gate, reason)`` for the first gate ``box`` fails (probability, then geometry), None if it passes."""
        if box.detector_prob < self.prob_floor:
            return "probability", f"{box.detector_prob:.3f} under the {self.floor_name} floor {self.prob_floor:g}"
        reason = self.geometry(box)
        return None if reason is None else ("geometry", reason)

    def geometry(self, box: FaceBox) -> str | None:
        """Why ``box``'s landmarks are not a face's (rule 2 of the module docstring), or None (also for a box
        without landmarks)."""
        if box.landmarks is None:
            return None
        marks = np.asarray(box.landmarks, dtype=np.float64)
        if not np.isfinite(marks).all():
            return "landmarks not finite"
        left_eye, right_eye, nose, mouth_l, mouth_r = marks
        eyes = right_eye - left_eye
        roll = math.atan2(eyes[1], eyes[0])
        roll_deg = math.degrees(roll)
        if abs(roll_deg) > self.max_roll_deg:
            return f"roll {roll_deg:.0f}° (limit ±{self.max_roll_deg:g}°)"
        # y in the face's own frame (rotated by -roll: the eye line is level); still growing towards the chin
        up = marks[:, 1] * math.cos(roll) - marks[:, 0] * math.sin(roll)
        eye_y, nose_y, mouth_y = up[0], up[2], up[3:]
        if not (mouth_y > eye_y).all():
            return f"mouth above eyes (roll {roll_deg:.0f}°)"
        if not eye_y < nose_y < mouth_y.mean():
            return f"nose not between eyes and mouth (roll {roll_deg:.0f}°)"
        eye_frac = float(np.hypot(*eyes)) / box.width_px
        if not self.min_eye_frac <= eye_frac <= self.max_eye_frac:
            return f"eyes {eye_frac:.2f} of the box width apart ({self.min_eye_frac:g}-{self.max_eye_frac:g})"
        x1, y1, x2, y2 = box.xyxy
        w, h = box.width_px, box.height_px
        beyond = max(
            (x1 - marks[:, 0].min()) / w,
            (marks[:, 0].max() - x2) / w,
            (y1 - marks[:, 1].min()) / h,
            (marks[:, 1].max() - y2) / h,
        )
        if beyond > self.box_pad_frac:
            return f"landmark {beyond:.2f} of the box outside it (limit {self.box_pad_frac:g})"
        return None

    def split(
        self, frame_index: int, time_s: float, boxes: Sequence[FaceBox]
    ) -> tuple[list[FaceBox], list[RejectedFace]]:
        """The boxes that pass, renumbered ``face_index`` 0..k-1 in their order, and the ones that do not."""
        kept: list[FaceBox] = []
        rejected: list[RejectedFace] = []
        for box in boxes:
            failed = self.check(box)
            if failed is None:
                kept.append(box if box.face_index == len(kept) else dataclasses.replace(box, face_index=len(kept)))
            else:
                rejected.append(RejectedFace(frame_index, time_s, box.xyxy, box.detector_prob, *failed))
        return kept, rejected


def face_gates(info: MediaInfo, settings: Settings) -> FaceGates | None:
    """The gates for this media (photos: ``detect_prob_floor``; videos and live: ``video_face_prob_floor``),
    or None when ``settings.face_gates`` is off."""
    if not settings.face_gates:
        return None
    return FaceGates(
        prob_floor=settings.detect_prob_floor if info.is_image else settings.video_face_prob_floor,
        max_roll_deg=settings.face_max_roll_deg,
        min_eye_frac=settings.face_min_eye_frac,
        max_eye_frac=settings.face_max_eye_frac,
        box_pad_frac=settings.face_box_pad_frac,
        floor_name="photo" if info.is_image else "video",
    )


def support_frames(min_track_frames: int, n_sampled: int, is_image: bool) -> int:
    """Sampled frames a track needs to be a person (rule 3): 1 for a photo, else ``min_track_frames`` capped
    at the ``n_sampled`` frames sampled (at least 1)."""
    if min_track_frames < 1:
        raise ValueError(f"min_track_frames must be >= 1, got {min_track_frames}")
    return 1 if is_image else max(1, min(min_track_frames, n_sampled))


class RejectedLog:
    """The rejected detections of one analysis: the first ``limit`` kept in the order given, all counted."""

    def __init__(self, limit: int = MAX_REJECTED) -> None:
        self.limit = limit
        self.count = 0
        self._kept: list[RejectedFace] = []

    def add(self, rejected: Iterable[RejectedFace]) -> None:
        for r in rejected:
            self.count += 1
            if len(self._kept) < self.limit:
                self._kept.append(r)

    @property
    def kept(self) -> tuple[RejectedFace, ...]:
        return tuple(self._kept)
