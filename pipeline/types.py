"""Frozen records that cross stage boundaries. Arrays are allowed, dicts are not.

Coordinates are pixels of the original (rotation-applied) frame, ``xyxy`` = (x1, y1, x2, y2).
Probabilities are floats in [0, 1]; ``fake_prob`` = P(fake) = sigmoid(logit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from pipeline.provenance.records import Provenance
from pipeline.session_types import LiveSession


class Label(str, Enum):
    REAL = "real"
    FAKE = "fake"
    INCONCLUSIVE = "inconclusive"
    NO_FACE = "no_face"


class Strategy(str, Enum):
    MEAN = "mean"
    MAX_FRAME = "max_frame"
    CONFIDENT = "confident"
    PER_PERSON = "per_person"


class SampleMode(str, Enum):
    EVERY_S = "every_s"  # one frame every ``every_s`` seconds of presentation time
    COUNT = "count"  # ``count`` frames spread evenly over the duration
    KEYFRAMES = "keyframes"  # every keyframe
    ALL = "all"  # every decoded frame


def _check_prob(name: str, value: float) -> None:
    if not (isinstance(value, (float, int)) and 0.0 <= value <= 1.0 and not math.isnan(value)):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    """How frames are picked. ``max_frames`` caps every mode (None = no cap)."""

    mode: SampleMode = SampleMode.EVERY_S
    every_s: float = 1.0
    count: int = 16
    max_frames: int | None = 300

    def __post_init__(self) -> None:
        if not isinstance(self.mode, SampleMode):
            raise ValueError(f"mode must be a SampleMode, got {self.mode!r}")
        if not self.every_s > 0:
            raise ValueError(f"every_s must be > 0 seconds, got {self.every_s!r}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames!r}")


class MediaKind(str, Enum):
    FILE = "file"  # a file: its size and SHA-256 are known
    LIVE = "live"  # frames with no file behind them (a stream, pushed frames): no size, no SHA-256


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """Facts about the input. ``width``/``height`` are after rotation. Unknowns are None.

    A ``FILE`` has ``size_bytes`` and ``sha256``; a ``LIVE`` source has neither (and usually no duration).
    """

    name: str
    size_bytes: int | None
    sha256: str | None
    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    rotation_deg: int
    is_image: bool
    frame_count: int | None
    kind: MediaKind = MediaKind.FILE

    def __post_init__(self) -> None:
        if not isinstance(self.kind, MediaKind):
            raise ValueError(f"MediaInfo.kind must be a MediaKind, got {self.kind!r}")
        has_file = (self.size_bytes is not None, self.sha256 is not None)
        if self.kind is MediaKind.FILE and has_file != (True, True):
            raise ValueError(
                f"a file's MediaInfo needs size_bytes and sha256, got {self.size_bytes!r}, {self.sha256!r}"
            )
        if self.kind is MediaKind.LIVE and any(has_file):
            raise ValueError("a live source has no size_bytes or sha256 (it has no file)")


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame. ``index`` is its position in the decoded stream (0-based)."""

    index: int
    time_s: float
    image: np.ndarray  # H×W×3 uint8 RGB, rotation applied
    captured_s: float | None = None  # live sources: wall time (unix s) the frame was decoded or received

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"Frame.image must be H×W×3 uint8 RGB, got {got}")
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A detected face. ``landmarks`` is 5×2 float32 (eyes, nose, mouth corners) or None."""

    frame_index: int
    face_index: int
    xyxy: tuple[float, float, float, float]
    detector_prob: float
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.xyxy) != 4:
            raise ValueError(f"FaceBox.xyxy must have 4 numbers, got {self.xyxy!r}")
        x1, y1, x2, y2 = self.xyxy
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"FaceBox.xyxy must have x2 > x1 and y2 > y1, got {self.xyxy!r}")
        _check_prob("FaceBox.detector_prob", self.detector_prob)
        if self.landmarks is not None and self.landmarks.shape != (5, 2):
            raise ValueError(f"FaceBox.landmarks must be 5×2, got {self.landmarks.shape}")

    @property
    def width_px(self) -> float:
        return self.xyxy[2] - self.xyxy[0]

    @property
    def height_px(self) -> float:
        return self.xyxy[3] - self.xyxy[1]


@dataclass(frozen=True, slots=True)
class MemberScore:
    """One detector's view of a face in an ensemble: its calibrated P(fake), its Grad-CAM (h×w float32 in
    [0, 1]) and the crop it saw (S×S×3 uint8 RGB, its own profile's)."""

    fake_prob: float
    heatmap: np.ndarray
    crop: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_prob("MemberScore.fake_prob", self.fake_prob)


@dataclass(frozen=True, slots=True)
class FaceScore:
    """What the classifier says about one face, before tracking.

    ``heatmap``: h×w float32 in [0, 1], Grad-CAM over the model input, which covers the crop.
    ``embedding``: 512 float32, the layer before ``logits`` (used by the tracker, not serialised).
    """

    box: FaceBox
    fake_prob: float
    heatmap: np.ndarray
    embedding: np.ndarray
    crop: np.ndarray | None = None  # the crop the model saw, S×S×3 uint8 RGB (for overlays)
    # an ensemble's detectors, in Report.detectors order (``fake_prob`` is then their fusion); else empty
    members: tuple[MemberScore, ...] = ()

    def __post_init__(self) -> None:
        _check_prob("FaceScore.fake_prob", self.fake_prob)
        if self.heatmap.ndim != 2 or self.heatmap.dtype != np.float32:
            raise ValueError(f"heatmap must be h×w float32, got {self.heatmap.dtype} {self.heatmap.shape}")
        if self.embedding.ndim != 1:
            raise ValueError(f"embedding must be 1-D, got shape {self.embedding.shape}")


FaceCrop = np.ndarray | tuple[np.ndarray, ...]  # one face's crop; an ensemble's: one per detector


@dataclass(frozen=True, slots=True)
class CroppedFrame:
    """A frame after detection and cropping; the full image is dropped here to bound memory.

    ``crops[i]`` belongs to ``boxes[i]``: crop_px×crop_px×3 uint8 RGB per the model's profile; for an
    ensemble a tuple of such crops, one per detector (``pipeline.ensemble``).
    """

    index: int
    time_s: float
    boxes: tuple[FaceBox, ...]
    crops: tuple[FaceCrop, ...]

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.crops):
            raise ValueError(f"CroppedFrame has {len(self.boxes)} boxes but {len(self.crops)} crops")


@dataclass(frozen=True, slots=True)
class ScoredFrame:
    """A frame whose faces are all scored (``scores[i]`` for face i), not yet tracked."""

    index: int
    time_s: float
    scores: tuple[FaceScore, ...]


@dataclass(frozen=True, slots=True)
class FaceVerdict:
    """A scored face with its person track. ``heatmap`` as in FaceScore."""

    box: FaceBox
    fake_prob: float
    heatmap: np.ndarray
    track_id: int
    crop: np.ndarray | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    members: tuple[MemberScore, ...] = ()  # as in FaceScore

    def __post_init__(self) -> None:
        _check_prob("FaceVerdict.fake_prob", self.fake_prob)
        if self.track_id < 0:
            raise ValueError(f"track_id must be >= 0, got {self.track_id}")


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """All faces of one sampled frame. ``score`` is max fake_prob over faces; None when no face."""

    index: int
    time_s: float
    faces: tuple[FaceVerdict, ...]
    score: float | None

    def __post_init__(self) -> None:
        if not self.faces and self.score is not None:
            raise ValueError("FrameVerdict with no faces must have score None, never a made-up number")
        if self.faces and self.score is None:
            raise ValueError("FrameVerdict with faces must have a score")
        if self.score is not None:
            _check_prob("FrameVerdict.score", self.score)


@dataclass(frozen=True, slots=True)
class FaceRow:
    """A face as the report keeps it: no pixels, so reports stay small for long videos."""

    face_index: int
    xyxy: tuple[float, float, float, float]
    detector_prob: float
    fake_prob: float
    track_id: int
    detector_probs: tuple[float, ...] = ()  # an ensemble's: each detector's P(fake), Report.detectors order


@dataclass(frozen=True, slots=True)
class FrameRow:
    """A sampled frame as the report keeps it. ``score`` None = no face."""

    index: int
    time_s: float
    score: float | None
    faces: tuple[FaceRow, ...]

    @staticmethod
    def of(verdict: FrameVerdict) -> FrameRow:
        return FrameRow(
            index=verdict.index,
            time_s=verdict.time_s,
            score=verdict.score,
            faces=tuple(
                FaceRow(
                    f.box.face_index,
                    f.box.xyxy,
                    f.box.detector_prob,
                    f.fake_prob,
                    f.track_id,
                    tuple(m.fake_prob for m in f.members),
                )
                for f in verdict.faces
            ),
        )


@dataclass(frozen=True, slots=True)
class TrackObservations:
    """One person's raw record, from :mod:`pipeline.track` to :func:`pipeline.aggregate.build_tracks`: one
    entry per face, in order.

    ``frame_indices``: decoded-stream frame indices; ``times_s``: seconds; ``fake_probs``: P(fake).
    """

    track_id: int
    frame_indices: tuple[int, ...]
    times_s: tuple[float, ...]
    fake_probs: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.frame_indices)
        if n == 0 or len(self.times_s) != n or len(self.fake_probs) != n:
            raise ValueError(
                "TrackObservations needs one or more faces with one index, time and prob each, got "
                f"{n} indices, {len(self.times_s)} times, {len(self.fake_probs)} probs"
            )


@dataclass(frozen=True, slots=True)
class Track:
    """One person across sampled frames."""

    track_id: int
    frame_indices: tuple[int, ...]
    first_time_s: float
    last_time_s: float
    fake_probs: tuple[float, ...]  # one per face, in frame order
    score: float | None
    label: Label  # by the video's rule, threshold and band (pipeline.aggregate.track_label)
    confident_fake: bool = False  # enough faces agree that the person is fake (the per_person video score's rule)
    # seen in enough sampled frames to be a person (pipeline/face_gates.py); an unsupported track is kept for
    # the record, labelled INCONCLUSIVE, never a confident fake, and none of its faces count towards the verdict
    supported: bool = True

    @property
    def n_faces(self) -> int:
        return len(self.fake_probs)


FACE_GATES = ("geometry", "probability")  # RejectedFace.gate: the gate that refused it (pipeline/face_gates.py)


@dataclass(frozen=True, slots=True)
class RejectedFace:
    """A detection that failed a face gate: never cropped, scored or tracked. ``xyxy`` in frame pixels;
    ``reason`` says why in a few words, e.g. "roll 72° (limit 60°)"."""

    frame_index: int
    time_s: float
    xyxy: tuple[float, float, float, float]
    detector_prob: float
    gate: str  # one of FACE_GATES
    reason: str

    def __post_init__(self) -> None:
        if self.gate not in FACE_GATES:
            raise ValueError(f"RejectedFace.gate must be one of {FACE_GATES}, got {self.gate!r}")
        _check_prob("RejectedFace.detector_prob", self.detector_prob)


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous run of sampled frames whose score is above the threshold."""

    start_s: float
    end_s: float
    peak_s: float
    peak_prob: float
    n_frames: int
    track_id: int | None = None  # None = frame-level segment

    def __post_init__(self) -> None:
        if not (self.start_s <= self.peak_s <= self.end_s):
            raise ValueError(f"Segment needs start_s <= peak_s <= end_s, got {self}")


@dataclass(frozen=True, slots=True)
class PreprocessProfile:
    """How a checkpoint expects its faces: crop ``crop_px`` with ``margin_px`` (MTCNN semantics),
    resize to ``input_px`` with ``resize``, scale RGB by ``scale``, then (x - mean) / std if given."""

    name: str
    crop_px: int
    margin_px: int
    input_px: int
    resize: str  # "bilinear" or "bicubic" (both stages: the crop and the resize to input_px)
    scale: float
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    sha256: str
    profile: PreprocessProfile
    device: str
    untrained: bool  # True when scoring with random weights (tests/demos only)
    # From the model card beside the checkpoint (``<checkpoint>.card.json``), when one describes these weights:
    card_name: str | None = None
    card_summary: str | None = None  # one line: headline metrics and the data they were measured on
    temperature: float = 1.0  # calibration folded into the logit: fake_prob = sigmoid(logit / temperature)
    calibrated_threshold: float | None = None  # P(fake) operating point the card recommends (target FPR)
    precision: str = "fp32"  # the classifier trunk's dtype on ``device`` ("fp32", "bf16", "fp16")
    detector: str = "seed-irv1"  # its architecture: a name in pipeline/detectors/registry.py


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Wall seconds spent per stage. On CPU the stages run one after another and add up to ~total_s; on an
    accelerator decode and detection are prefetched in a thread while classification runs, so their sum
    can exceed total_s."""

    decode_s: float = 0.0
    detect_s: float = 0.0
    classify_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AnalysisStart:
    """First item ``analyze()`` yields: what is about to be analysed."""

    media: MediaInfo
    planned_frames: int | None
    policy: SamplingPolicy
    model: ModelInfo
    threshold: float = 0.5  # the P(fake) threshold this analysis uses (Settings.operating_threshold)
    threshold_source: str = "default"  # "request" | "settings" | "model card" | "default"
    inconclusive_band: float = 0.05  # Settings.inconclusive_band: |score - threshold| < band is INCONCLUSIVE
    detectors: tuple[ModelInfo, ...] = ()  # an ensemble's detectors (``model`` names the ensemble); else empty
    provenance: Provenance | None = None  # what the file says about itself (Source.provenance); None: no file


@dataclass(frozen=True, slots=True)
class Report:
    """The final result of one analysis. ``incomplete`` says why the analysis stopped early, if it did."""

    media: MediaInfo
    policy: SamplingPolicy
    model: ModelInfo
    strategy: Strategy
    threshold: float
    score: float | None
    label: Label
    frames: tuple[FrameRow, ...]
    tracks: tuple[Track, ...]
    segments: tuple[Segment, ...]
    timings: StageTimings
    version: str
    incomplete: str | None = None
    threshold_source: str = "default"  # where ``threshold`` came from: see AnalysisStart
    session: LiveSession | None = None  # a live session's times and counters (then ``frames`` is empty)
    # an ensemble: every detector (``model`` then describes the ensemble) and how their scores were fused
    detectors: tuple[ModelInfo, ...] = ()
    fusion: str | None = None
    # detections that failed a face gate, in frame order: the first MAX_REJECTED (pipeline/face_gates.py) of
    # ``n_rejected``
    rejected: tuple[RejectedFace, ...] = ()
    n_rejected: int = 0
    # C2PA, EXIF/XMP and container tags: evidence beside the verdict, never part of ``score``; None: no file
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        if self.score is None and self.label not in (Label.NO_FACE, Label.INCONCLUSIVE):
            raise ValueError(f"a {self.label.value} label needs a score")
        if self.n_rejected < len(self.rejected):
            raise ValueError(f"n_rejected ({self.n_rejected}) counts fewer than the {len(self.rejected)} listed")
        if self.score is not None:
            _check_prob("Report.score", self.score)

    @property
    def n_faces(self) -> int:
        if self.session is not None:  # a live report keeps no frame rows: every face is in a person's track
            return sum(t.n_faces for t in self.tracks)
        return sum(len(f.faces) for f in self.frames)
