"""The report and the HTTP report API's bodies as typed frozen records (the wire side of
pipeline/report.py's ``dff.report/1``), and the media and sampling records the ``accepted`` message shares.

``done.report``, ``GET /v1/reports/{id}``, ``GET /v1/reports/{id}/frames`` and ``GET /v1/reports`` are
decoded once into these (``decode_report``, ``Record.from_json``): no client indexes a report by string,
and a label is shown as the server decided it, never re-derived. The JSON is exactly what the server
stores and sends; ``Record.to_json()`` writes it back. Pure, like stream/protocol.py, which re-exports them.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from stream.provenance import Provenance
from stream.records import ProtocolError, Record, constrained

REPORT_SCHEMA = "dff.report/1"  # the report format pipeline/report.py writes (a test keeps them equal)
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
SHA256_PATTERN = r"^([0-9a-f]{64}|untrained)$"

SampleModeName = Literal["every_s", "count", "keyframes", "all"]  # pipeline.types.SampleMode
StrategyName = Literal["mean", "max_frame", "confident", "per_person"]  # pipeline.types.Strategy
ThresholdSource = Literal["request", "settings", "model card", "default"]
LabelName = Literal["real", "fake", "inconclusive", "no_face"]  # pipeline.types.Label
JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]  # stream.store.Status
MediaKindName = Literal["file", "live"]  # pipeline.types.MediaKind
FaceGateName = Literal["geometry", "probability"]  # pipeline.types.FACE_GATES


@dataclass(frozen=True, slots=True)
class Media(Record):
    """Facts about the input (pipeline's MediaInfo). Width/height after rotation. A ``live`` source has no
    file: ``size_bytes`` and ``sha256`` are null (a ``file`` always has both)."""

    name: str
    size_bytes: int | None = constrained(minimum=0)
    sha256: str | None = constrained(pattern=r"^[0-9a-f]{64}$")
    container: str
    codec: str
    width: int = constrained(minimum=1)
    height: int = constrained(minimum=1)
    fps: float | None
    duration_s: float | None
    rotation_deg: int
    is_image: bool
    frame_count: int | None
    kind: MediaKindName = "file"  # pipeline.types.MediaKind; reports and accepted from before it are files


@dataclass(frozen=True, slots=True)
class Policy(Record):
    """The sampling policy a job runs with (all fields resolved)."""

    mode: SampleModeName
    every_s: float = constrained(exclusiveMinimum=0)
    count: int = constrained(minimum=1)
    max_frames: int | None = constrained(minimum=1)


# ---------------------------------------------------------------------------------------------- reports
# The report (schema ``dff.report/1``, pipeline/report.py's report_to_dict) as ``done`` carries it and
# ``GET /v1/reports/{id}`` returns it: decoded once into these, so no client indexes a report by string.


@dataclass(frozen=True, slots=True)
class Profile(Record):
    """How the model wants its faces (pipeline's PreprocessProfile): crop, resize, scale, normalise."""

    name: str
    crop_px: int = constrained(minimum=1)
    margin_px: int = constrained(minimum=0)
    input_px: int = constrained(minimum=1)
    resize: str
    scale: float
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class ReportModel(Record):
    """The model a report was made with (pipeline's ModelInfo); card fields from its model card, if any."""

    name: str
    sha256: str = constrained(pattern=SHA256_PATTERN)
    profile: Profile
    device: str
    untrained: bool  # True = random weights: the scores mean nothing
    card_name: str | None = None
    card_summary: str | None = None
    temperature: float = constrained(1.0, exclusiveMinimum=0)
    calibrated_threshold: float | None = constrained(None, exclusiveMinimum=0, exclusiveMaximum=1)
    precision: str = "fp32"
    detector: str = "seed-irv1"  # its architecture (pipeline/detectors/registry.py)


@dataclass(frozen=True, slots=True)
class FaceRow(Record):
    """A face as the report keeps it (no overlay). ``xyxy`` in pixels of the original (rotated) frame."""

    face_index: int = constrained(minimum=0)
    xyxy: tuple[float, float, float, float]
    detector_prob: float = constrained(minimum=0, maximum=1)
    fake_prob: float = constrained(minimum=0, maximum=1)
    track_id: int = constrained(minimum=0)
    detector_probs: tuple[float, ...] = ()  # an ensemble's: each detector's P(fake), in Report.detectors order


@dataclass(frozen=True, slots=True)
class FrameRow(Record):
    """A sampled frame as the report (and ``GET /v1/reports/{id}/frames``) keeps it; ``score`` null = no face."""

    index: int = constrained(minimum=0)
    time_s: float
    score: float | None = constrained(minimum=0, maximum=1)
    faces: tuple[FaceRow, ...]

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if (self.score is None) != (not self.faces):
            raise ProtocolError("bad_message", "score must be null exactly when the frame has no faces")


@dataclass(frozen=True, slots=True)
class Track(Record):
    """One person across the sampled frames, with the label the server decided (the video's rule:
    threshold and inconclusive band; FAKE also needs ``confident_fake``). Clients show it, never redo it."""

    track_id: int = constrained(minimum=0)
    frame_indices: tuple[int, ...]
    first_time_s: float
    last_time_s: float
    fake_probs: tuple[float, ...]  # one per face, in frame order
    score: float | None = constrained(minimum=0, maximum=1)
    label: LabelName
    confident_fake: bool = False  # enough of the person's faces agree that they are fake
    # seen in enough sampled frames to be a person; false: kept for the record, labelled inconclusive, and its
    # faces count in no score (reports from before the field: every track was a person)
    supported: bool = True

    @property
    def n_faces(self) -> int:
        return len(self.fake_probs)


@dataclass(frozen=True, slots=True)
class Segment(Record):
    """A run of sampled frames scoring above the threshold; ``track_id`` null = frame-level segment."""

    start_s: float
    end_s: float
    peak_s: float
    peak_prob: float = constrained(minimum=0, maximum=1)
    n_frames: int = constrained(minimum=1)
    track_id: int | None = constrained(None, minimum=0)


@dataclass(frozen=True, slots=True)
class RejectedFace(Record):
    """A detection that failed a face gate (pipeline/face_gates.py): never scored, tracked or counted.
    ``xyxy`` in pixels of the original (rotated) frame; ``reason`` in a few words."""

    frame_index: int = constrained(minimum=0)
    time_s: float
    xyxy: tuple[float, float, float, float]
    detector_prob: float = constrained(minimum=0, maximum=1)
    gate: FaceGateName
    reason: str


@dataclass(frozen=True, slots=True)
class Timings(Record):
    """Wall seconds per stage (pipeline's StageTimings)."""

    decode_s: float = constrained(0.0, minimum=0)
    detect_s: float = constrained(0.0, minimum=0)
    classify_s: float = constrained(0.0, minimum=0)
    total_s: float = constrained(0.0, minimum=0)


EndReasonName = Literal["ended", "stopped", "failed"]  # pipeline.session_types.EndReason


@dataclass(frozen=True, slots=True)
class LiveCounters(Record):
    """A live source's counters (pipeline's LiveStats): frames decoded, sampled at the rate, dropped
    unanalysed because analysis was behind (newest first), handed to analysis; reconnect attempts."""

    decoded: int = constrained(minimum=0)
    sampled: int = constrained(minimum=0)
    dropped: int = constrained(minimum=0)
    delivered: int = constrained(minimum=0)
    reconnects: int = constrained(minimum=0)


@dataclass(frozen=True, slots=True)
class Session(Record):
    """What a live report adds (pipeline's LiveSession): wall times (unix s), why it stopped, counters,
    capture-to-verdict lag percentiles (s). A live report's ``frames`` is empty: the frames are stored
    as they come (``GET /v1/reports/{id}/frames``)."""

    started_s: float
    stopped_s: float
    end: EndReasonName
    end_message: str | None
    stats: LiveCounters
    frames_analysed: int = constrained(minimum=0)
    lag_p50_s: float | None = constrained(minimum=0)
    lag_p95_s: float | None = constrained(minimum=0)


@dataclass(frozen=True, slots=True)
class Summary(Record):
    """Counts derived from the report, written beside it for readers that want no arithmetic."""

    n_frames: int = constrained(minimum=0)
    n_faces: int = constrained(minimum=0)
    n_people: int = constrained(minimum=0)
    n_segments: int = constrained(minimum=0)  # frame-level segments
    untrained_model: bool


@dataclass(frozen=True, slots=True)
class Report(Record):
    """A finished analysis (schema ``dff.report/1``). ``score`` null without a scored face; ``label`` is the
    verdict; ``incomplete`` says why the analysis stopped early, if it did."""

    schema: Literal["dff.report/1"]
    media: Media
    policy: Policy
    model: ReportModel
    strategy: StrategyName
    threshold: float = constrained(exclusiveMinimum=0, exclusiveMaximum=1)
    score: float | None = constrained(minimum=0, maximum=1)
    label: LabelName
    frames: tuple[FrameRow, ...]
    tracks: tuple[Track, ...]
    segments: tuple[Segment, ...]
    timings: Timings
    version: str
    summary: Summary
    incomplete: str | None = None
    threshold_source: ThresholdSource = "settings"  # reports from before the field used the server's setting
    session: Session | None = None  # a live session's times and counters; null for a file
    detectors: tuple[ReportModel, ...] = ()  # an ensemble's detectors (``model`` names the ensemble); else empty
    fusion: str | None = None  # how an ensemble's P(fake)s became ``fake_prob``
    # detections the face gates refused, in frame order: the first 200 of ``n_rejected``
    rejected: tuple[RejectedFace, ...] = ()
    n_rejected: int = constrained(0, minimum=0)
    provenance: Provenance | None = None  # what the file says about itself; null for a live source and old reports

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if self.score is None and self.label not in ("no_face", "inconclusive"):
            raise ProtocolError("bad_message", f"a {self.label} report needs a score")
        if self.n_rejected < len(self.rejected):
            raise ProtocolError("bad_message", f"n_rejected {self.n_rejected} < the {len(self.rejected)} listed")

    @property
    def frame_segments(self) -> tuple[Segment, ...]:
        """The frame-level segments (per-person ones have a ``track_id``)."""
        return tuple(s for s in self.segments if s.track_id is None)


def decode_report(data: object) -> Report:
    """A report JSON object (``GET /v1/reports/{id}``) -> Report; ProtocolError ``bad_message`` if it is not one."""
    return typing.cast(Report, Report.from_json(data, "report"))


@dataclass(frozen=True, slots=True)
class ReportHead(Record):
    """What an index of stored reports needs of one (``dff scan --json`` resuming), decoded without
    building the whole Report: which bytes, which model, how it was sampled and aggregated, and whether
    it ran to the end."""

    media_sha256: str
    model_sha256: str
    policy: Policy
    strategy: StrategyName
    incomplete: str | None


def decode_report_head(data: object) -> ReportHead:
    """A report JSON object -> its ReportHead; ProtocolError ``bad_message`` if it is not one of ours."""
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise ProtocolError("bad_message", f"not a {REPORT_SCHEMA} report")
    media, model = data.get("media"), data.get("model")
    if not isinstance(media, dict) or not isinstance(model, dict):
        raise ProtocolError("bad_message", "a report needs its media and model objects")
    return ReportHead(
        media.get("sha256"),
        model.get("sha256"),
        Policy.from_json(data.get("policy"), "policy"),
        data.get("strategy"),
        data.get("incomplete"),
    )


# ------------------------------------------------------------------------------------ HTTP report API


@dataclass(frozen=True, slots=True)
class StoredFrames(Record):
    """``GET /v1/reports/{id}/frames``: a job's stored frames, also for a job that did not finish."""

    id: str = constrained(pattern=JOB_ID_PATTERN)
    status: JobStatus
    frames: tuple[FrameRow, ...]


@dataclass(frozen=True, slots=True)
class JobModel(Record):
    """The model of a listed job (``sha256`` null before the job started)."""

    name: str
    sha256: str | None


@dataclass(frozen=True, slots=True)
class JobError(Record):
    """Why a listed job failed."""

    code: str
    message: str | None


@dataclass(frozen=True, slots=True)
class JobListing(Record):
    """One past job in ``GET /v1/reports`` (no frames, no report body). Times in unix seconds."""

    id: str = constrained(pattern=JOB_ID_PATTERN)
    status: JobStatus
    created_s: float
    finished_s: float | None
    name: str  # a live job's: its URL (credentials removed) or the pushing client's name
    size_bytes: int = constrained(minimum=0)  # 0 for a live job
    media_sha256: str | None
    model: JobModel | None
    label: LabelName | None
    score: float | None = constrained(minimum=0, maximum=1)
    n_frames: int = constrained(minimum=0)
    error: JobError | None
    kind: MediaKindName = "file"


@dataclass(frozen=True, slots=True)
class ReportPage(Record):
    """``GET /v1/reports``: past jobs, newest first; ``next`` is the cursor of the next (older) page."""

    reports: tuple[JobListing, ...]
    next: str | None
