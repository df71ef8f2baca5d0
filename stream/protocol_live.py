"""The analysis ``Options`` every request carries, and the live-session messages of the wire (protocol
v2): ``watch``/``push``/``stop`` from the client, ``notice``/``live`` from the server. Pure;
stream/protocol.py re-exports them and owns encode/decode and the schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from stream.records import MessageRecord, Record, constrained
from stream.reports import JOB_ID_PATTERN, LabelName, LiveCounters, SampleModeName, StrategyName

_Message = MessageRecord


@dataclass(frozen=True, slots=True)
class Options(Record):
    """Analysis options of a ``start``; ``None`` means the server's default (its Settings)."""

    sample_mode: SampleModeName | None = None
    every_s: float | None = constrained(None, exclusiveMinimum=0)  # seconds between sampled frames (every_s mode)
    count: int | None = constrained(None, minimum=1)  # frames spread over the video (count mode)
    max_frames: int | None = constrained(None, minimum=1)  # cap on sampled frames in every mode
    strategy: StrategyName | None = None
    threshold: float | None = constrained(None, exclusiveMinimum=0, exclusiveMaximum=1)  # P(fake) that means fake
    overlays: bool = False  # send a Grad-CAM overlay JPEG per face in ``frame`` messages
    rate_hz: float | None = constrained(None, exclusiveMinimum=0, maximum=60)  # live: sampled frames per second


@dataclass(frozen=True, slots=True)
class Watch(_Message):
    """Client: analyse a live source by URL (schemes: rtsp, rtsps, http, https, udp, rtp, srt, tcp) until
    it ends, the client sends ``stop`` or leaves; then ``done`` carries the session's report."""

    TYPE: ClassVar[str] = "watch"
    url: str = constrained(minLength=1, maxLength=2048)
    options: Options = field(default_factory=lambda: Options())


@dataclass(frozen=True, slots=True)
class Push(_Message):
    """Client: analyse frames this client sends (a webcam): one binary message per frame follows."""

    TYPE: ClassVar[str] = "push"
    name: str = constrained(minLength=1, maxLength=255)
    options: Options = field(default_factory=lambda: Options())


@dataclass(frozen=True, slots=True)
class Stop(_Message):
    """Client: end the live session now (its report follows as ``done``)."""

    TYPE: ClassVar[str] = "stop"


NoticeKind = Literal["connected", "reconnecting", "refused"]


@dataclass(frozen=True, slots=True)
class Notice(_Message):
    """Server, live sessions: the source connected (``attempt`` 0, or N after the Nth reconnect), is
    reconnecting (attempt ``attempt`` of ``limit`` after ``delay_s``), or a pushed frame was refused."""

    TYPE: ClassVar[str] = "notice"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    kind: NoticeKind
    message: str
    attempt: int = constrained(0, minimum=0)
    limit: int | None = constrained(None, minimum=0)
    delay_s: float | None = constrained(None, minimum=0)


@dataclass(frozen=True, slots=True)
class Person(Record):
    """One person of a live session as it stands: ``score``/``label`` over their faces of the last window
    (``window_faces``); ``n_faces`` over their whole life; times in stream seconds."""

    track_id: int = constrained(minimum=0)
    first_s: float
    last_s: float
    n_faces: int = constrained(minimum=0)
    window_faces: int = constrained(minimum=0)
    score: float | None = constrained(minimum=0, maximum=1)
    label: LabelName
    confident_fake: bool


@dataclass(frozen=True, slots=True)
class LiveStatus(_Message):
    """Server, live sessions, after the frame ``seq``: its capture-to-verdict lag, every person being
    tracked, and the source's counters. A slow client gets only the newest (they are coalesced)."""

    TYPE: ClassVar[str] = "live"
    job_id: str = constrained(pattern=JOB_ID_PATTERN)
    seq: int = constrained(minimum=0)
    lag_s: float = constrained(minimum=0)
    people: tuple[Person, ...]
    stats: LiveCounters
