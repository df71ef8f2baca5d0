"""The wire: every websocket message as a typed frozen record, ``encode``/``decode``, and its JSON Schema.

Every message is one JSON object with ``type`` and ``v`` (the protocol version, ``PROTOCOL_VERSION``).
An upload travels as binary websocket messages after ``start``, pushed frames after ``push``; nothing else
is binary.

    client -> server   start (file name, size_bytes, options), then size_bytes of binary messages
                       or attach (job_id): the job's messages so far, then the live ones
                       or watch (url, options): a live source the server opens (rtsp/http(s)/udp/...)
                       or push (name, options), then one binary message per frame (PUSH_FRAME below)
                       stop: ends a live session (watch or push) now; its report follows as done
    server -> client   hello, progress(uploading), progress(queued), accepted, progress(analyzing),
                       frame per sampled frame, done -- or error (code + message) at any point;
                       the server closes the connection after done or error
                       live sessions also get notice (connected, reconnecting, refused frame) and,
                       after each frame, live (lag, every person's current verdict, counters)

A pushed frame is one binary message: an 8-byte big-endian IEEE-754 double, the frame's time in seconds of
the client's stream (non-decreasing), then the picture as JPEG or PNG bytes. Frames are sampled at the
session's rate by those times; when analysis is behind, the oldest waiting frames are dropped (counted in
``live.stats.dropped``). A bad frame is refused with a ``notice`` and the session goes on.

Version 2 added watch, push, stop, notice, live, ``Options.rate_hz``, a null ``size_bytes``/``sha256``
for live media and ``Report.session``; a version-1 client's messages are not accepted (``bad_version``).

Pure: no I/O, no numpy, no torch, no pipeline import (the web client imports only this module).
The records are the single source of truth: ``decode`` validates against their type hints and field
constraints, constructing a record validates it the same way, and ``json_schema()`` is generated from
them (checked in as ``protocol.schema.json``; ``python -m stream.protocol`` rewrites it).
Within one version the schema is closed: unknown fields are rejected, so a typo in an option fails
loudly instead of being ignored. Any change to the records is a new ``PROTOCOL_VERSION``.
"""

from __future__ import annotations

import base64
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from stream.protocol_live import LiveStatus, Notice, NoticeKind, Options, Person, Push, Stop, Watch  # noqa: F401
from stream.provenance import (  # noqa: F401  (clients import stream.protocol only)
    PROVENANCE_SCHEMA,
    C2paAction,
    C2paIngredient,
    C2paManifest,
    C2paResult,
    C2paStateName,
    C2paStatus,
    MetadataFlag,
    MetadataTag,
    Provenance,
    ProvenanceMetadata,
    SectionError,
)
from stream.records import MessageRecord, ProtocolError, Record, constrained, json_type, record_schema
from stream.reports import (  # noqa: F401  (clients import stream.protocol only)
    JOB_ID_PATTERN,
    REPORT_SCHEMA,
    SHA256_PATTERN,
    FaceGateName,
    FaceRow,
    FrameRow,
    JobError,
    JobListing,
    JobModel,
    JobStatus,
    LabelName,
    LiveCounters,
    Media,
    MediaKindName,
    Policy,
    Profile,
    RejectedFace,
    Report,
    ReportHead,
    ReportModel,
    ReportPage,
    SampleModeName,
    Segment,
    Session,
    StoredFrames,
    StrategyName,
    Summary,
    ThresholdSource,
    Timings,
    Track,
    decode_report,
    decode_report_head,
)

PROTOCOL_VERSION = 2
PUSH_HEADER_BYTES = 8  # a pushed frame's time: big-endian float64 seconds, before its JPEG/PNG bytes
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # largest single websocket message the server accepts
CHUNK_BYTES = 1024 * 1024  # how clients slice an upload into binary messages
SCHEMA_PATH = Path(__file__).with_name("protocol.schema.json")

ServerStatus = Literal["ready", "no_model", "shutting_down"]
Stage = Literal["uploading", "queued", "analyzing"]

_CODE_PATTERN = r"^[a-z][a-z_]*$"

ERROR_CODES: dict[str, str] = {
    # the conversation
    "bad_json": "a text message that is not JSON (or nested deeper than the parser goes)",
    "bad_message": "JSON that is not a valid message of this protocol version (see the message text)",
    "bad_version": "a message with another protocol version",
    "unknown_type": "a message whose type this protocol does not have",
    "unexpected_binary": "binary data outside an upload (e.g. before start)",
    "unexpected_message": "a valid message at the wrong moment (e.g. a second start)",
    "too_large": "upload over the server's cap (also: media over a pixel or duration cap)",
    "size_mismatch": "more bytes arrived than start.size_bytes declared",
    "timeout": "the client sent nothing for too long (first message, or mid-upload), or uploads below the minimum rate",
    "busy": "the job queue is full, or this client already holds its share of it; try again later",
    "shutting_down": "the server is stopping and takes no new jobs",
    "unknown_job": "no running or finished job with that id",
    "too_many_watchers": "too many clients are attached to that job",
    "interrupted": "the server stopped before the job finished; frames so far are stored",
    "cancelled": "every client left the job, so it was stopped; frames so far are stored",
    "internal": "a server bug; details are in the server log, never on the wire",
    "worker_lost": "the Ray actor (or node) running the job died; a live session or a second loss is not retried",
    # live sources
    "unsupported_source": "a live URL this server will not open (its scheme is not allowed, or it is malformed)",
    "source_unavailable": "the live source could not be opened, or broke and did not come back",
    "source_timeout": "the live source (or the pushing client) sent nothing within the timeout",
    # the server's database (stream/store.py): nothing stored before is lost
    "storage_full": "the server's disk or database is full; the job could not be stored",
    "store_read_only": "the server's database is read-only",
    "store_busy": "the server's database stayed locked by another process",
    "store_error": "the server's database failed otherwise",
    # the pipeline's error tree (pipeline/errors.py): the error's ``code``
    "bad_media": "the file is not usable media",
    "not_found": "the media file vanished",
    "empty_file": "the file has zero bytes",
    "unsupported_media": "not a photo or video this server can decode",
    "decode_error": "decoding broke before anything could be analysed",
    "model_error": "the model failed",
    "no_model": "the server has no model; install one with PUT /v1/models/{name}",
    "bad_checkpoint": "the checkpoint cannot be used",
    "bad_config": "an option is invalid, or asks for more than the server allows (e.g. max_frames)",
}


_Message = MessageRecord


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ModelSummary(Record):
    """The model a job runs on (or the server has loaded). ``sha256`` of the weights file."""

    name: str
    sha256: str = constrained(pattern=SHA256_PATTERN)
    device: str
    untrained: bool  # True = random weights: scores mean nothing
    detectors: tuple[str, ...] = ()  # an ensemble's detectors (their file names), in order; else empty


@dataclass(frozen=True, slots=True)
class Face(Record):
    """One face of a ``frame``. ``xyxy`` in pixels of the original (rotated) frame.

    ``overlay_jpeg_b64``: the Grad-CAM heatmap colour-mapped over the face crop, a base64 JPEG
    (crop_px × crop_px, 160 for the seed model), when the job asked for overlays; else null.
    An ensemble's face also has ``detector_probs`` (each detector's P(fake); ``fake_prob`` is their fusion)
    and, with overlays, ``detector_overlays_jpeg_b64`` (each detector's Grad-CAM over its own crop), both in
    the order of ``accepted.model.detectors``.
    """

    face_index: int = constrained(minimum=0)
    xyxy: tuple[float, float, float, float]
    detector_prob: float = constrained(minimum=0, maximum=1)
    fake_prob: float = constrained(minimum=0, maximum=1)
    track_id: int = constrained(minimum=0)
    overlay_jpeg_b64: str | None = constrained(None, contentEncoding="base64")
    detector_probs: tuple[float, ...] = ()
    detector_overlays_jpeg_b64: tuple[str, ...] = ()

    def overlay_jpeg(self) -> bytes | None:
        """The overlay's JPEG bytes, or None."""
        return None if self.overlay_jpeg_b64 is None else base64.b64decode(self.overlay_jpeg_b64)


# --------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Start(_Message):
    """Client: analyse a file. ``size_bytes`` of binary messages follow (none for an empty file)."""

    TYPE: ClassVar[str] = "start"
    name: str = constrained(minLength=1, maxLength=255)
    size_bytes: int = constrained(minimum=0)
    options: Options = field(default_factory=lambda: Options())


@dataclass(frozen=True, slots=True)
class Attach(_Message):
    """Client: follow a job started elsewhere (another tab, before a reconnect)."""

    TYPE: ClassVar[str] = "attach"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """Server, first on every connection: what this server is and accepts."""

    TYPE: ClassVar[str] = "hello"
    server_version: str
    status: ServerStatus
    model: ModelSummary | None
    max_upload_bytes: int = constrained(minimum=0)
    max_message_bytes: int = constrained(minimum=1)  # slice uploads into binary messages no larger than this


@dataclass(frozen=True, slots=True)
class Progress(_Message):
    """Server: where the job stands. ``uploading``: start accepted, send the bytes (the job id is final);
    ``queued``: uploaded, waiting for the worker (``queue_position`` 0 = next); ``analyzing``: running."""

    TYPE: ClassVar[str] = "progress"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    stage: Stage
    frames_done: int = constrained(minimum=0)
    frames_planned: int | None = constrained(minimum=0)
    queue_position: int | None = constrained(None, minimum=0)


@dataclass(frozen=True, slots=True)
class Accepted(_Message):
    """Server: the file opened as media and analysis begins. ``planned_frames`` None = not known ahead."""

    TYPE: ClassVar[str] = "accepted"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    media: Media
    planned_frames: int | None = constrained(minimum=0)
    policy: Policy
    strategy: StrategyName
    threshold: float = constrained(exclusiveMinimum=0, exclusiveMaximum=1)
    overlays: bool
    model: ModelSummary
    threshold_source: ThresholdSource = "settings"  # where the threshold came from; "model card" = calibrated
    # |score - threshold| < band is INCONCLUSIVE (Settings.inconclusive_band); 0.05 before the field
    inconclusive_band: float = constrained(0.05, minimum=0, exclusiveMaximum=0.5)
    # what the file says about itself (C2PA, EXIF/XMP, container tags), known before the first frame;
    # null for a live source. Evidence beside the verdict, never part of it.
    provenance: Provenance | None = None


@dataclass(frozen=True, slots=True)
class FrameResult(_Message):
    """Server: one sampled frame, sent as soon as all its faces are scored; frames of a job in order.

    ``seq``: 0, 1, 2, ... per job; ``index``: position in the decoded stream; ``score``: max fake_prob
    over the faces, null when the frame has no face (never a made-up 0.5).
    """

    TYPE: ClassVar[str] = "frame"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    seq: int = constrained(minimum=0)
    index: int = constrained(minimum=0)
    time_s: float
    score: float | None = constrained(minimum=0, maximum=1)
    faces: tuple[Face, ...]

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if (self.score is None) != (not self.faces):
            raise ProtocolError("bad_message", "score must be null exactly when the frame has no faces")


@dataclass(frozen=True, slots=True)
class Done(_Message):
    """Server: the analysis finished and its report is stored (``GET /v1/reports/{job_id}`` returns the same).

    ``report``: the full report (schema ``dff.report/1``, pipeline/report.py), decoded into a ``Report``;
    a server may build the message from the report's JSON object.
    """

    TYPE: ClassVar[str] = "done"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    report: Report


@dataclass(frozen=True, slots=True)
class Error(_Message):
    """Server: the job (or the request) failed; the server closes the connection after it.

    ``code``: one of ``ERROR_CODES`` (clients should treat unknown codes as generic failures).
    """

    TYPE: ClassVar[str] = "error"
    code: str = constrained(pattern=_CODE_PATTERN)
    message: str
    job_id: str | None = constrained(None, pattern=JOB_ID_PATTERN)


CLIENT_MESSAGES: tuple[type[_Message], ...] = (Start, Attach, Watch, Push, Stop)
SERVER_MESSAGES: tuple[type[_Message], ...] = (Hello, Progress, Accepted, FrameResult, Notice, LiveStatus, Done, Error)
FINAL_MESSAGES: tuple[type[_Message], ...] = (Done, Error)  # a conversation ends with exactly one of these
Message = (
    Start
    | Attach
    | Watch
    | Push
    | Stop
    | Hello
    | Progress
    | Accepted
    | FrameResult
    | Notice
    | LiveStatus
    | Done
    | Error
)
_BY_TYPE: dict[str, type[_Message]] = {m.TYPE: m for m in CLIENT_MESSAGES + SERVER_MESSAGES}
_RECORDS: tuple[type[Record], ...] = (
    Options,
    ModelSummary,
    Media,
    Person,
    LiveCounters,
    Session,
    Policy,
    Face,
    Profile,
    ReportModel,
    FaceRow,
    FrameRow,
    Track,
    RejectedFace,
    Segment,
    Timings,
    Summary,
    C2paAction,
    C2paIngredient,
    C2paStatus,
    C2paManifest,
    C2paResult,
    MetadataTag,
    MetadataFlag,
    SectionError,
    ProvenanceMetadata,
    Provenance,
    Report,
    StoredFrames,
    JobModel,
    JobError,
    JobListing,
    ReportPage,
)


# ----------------------------------------------------------------------------------------- encode/decode


def encode(message: Message) -> str:
    """One message -> compact JSON text with ``type`` and ``v`` first. The record is already valid."""
    body = {"type": message.TYPE, "v": PROTOCOL_VERSION, **message.to_json()}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """JSON numbers beyond float range (1e309) would decode as inf, which ``encode`` cannot write back."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text:.40} is out of float range")
    return value


def decode(text: str | bytes, allowed: tuple[type[_Message], ...] | None = None) -> Message:
    """JSON text -> the message record. ``allowed`` restricts the types (e.g. ``CLIENT_MESSAGES``).

    Raises ProtocolError: ``bad_json`` (not JSON, NaN/Infinity, or nested too deeply), ``bad_message`` (not an object, a
    missing/unknown/ill-typed field), ``bad_version``, ``unknown_type`` (or a type not in ``allowed``).
    """
    try:
        data = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError("bad_json", f"not JSON: {err}") from None
    except RecursionError:  # "[[[[..." 100,000 deep: the parser's own recursion limit
        raise ProtocolError("bad_json", "not JSON this server reads: nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", f"a message is a JSON object, got {json_type(data)}")
    version = data.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError("bad_version", f"this server speaks protocol v={PROTOCOL_VERSION}, got v={version!r}")
    kind = data.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None or (allowed is not None and cls not in allowed):
        names = sorted(m.TYPE for m in (allowed or tuple(_BY_TYPE.values())))
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of {names}")
    body = {k: v for k, v in data.items() if k not in ("type", "v")}
    return typing.cast(Message, cls.from_json(body, kind))


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of every message; ``protocol.schema.json`` is this, pretty-printed."""
    messages = CLIENT_MESSAGES + SERVER_MESSAGES
    defs = {cls.__name__: record_schema(cls, {"type": cls.TYPE, "v": PROTOCOL_VERSION}) for cls in messages}
    defs.update({cls.__name__: record_schema(cls) for cls in _RECORDS})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://deepfake-forensics.invalid/protocol/v{PROTOCOL_VERSION}.schema.json",
        "title": f"DeepFake Forensics websocket protocol v{PROTOCOL_VERSION}",
        "description": (
            "Text messages of ws://HOST:PORT/v1/analyze; an upload travels as binary messages, and so do pushed "
            f"frames ({PUSH_HEADER_BYTES}-byte big-endian float64 time in seconds, then JPEG or PNG bytes)."
        ),
        "oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in messages],
        "$defs": defs,
        "x-error-codes": ERROR_CODES,
    }


def schema_text() -> str:
    """``json_schema()`` as the checked-in file's exact text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH}")
