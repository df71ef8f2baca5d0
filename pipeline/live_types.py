"""Records of a live session: what a live source reports beside its frames, and what ``watch()`` yields.

    LiveSource.events() ─▶ SourceConnected, Frame, Frame, ..., SourceReconnecting, SourceConnected, Frame ...
    watch()             ─▶ AnalysisStart, LiveUpdate*, SourceReconnecting*, PersonGone*, ..., Report (last)

Times: ``*_s`` on a ``Frame`` are stream seconds; ``wall_s``/``captured_s``/``started_s`` are unix seconds
(``time.time()``), so a lag is a difference of two wall times taken on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.session_types import EndReason, LiveSession, LiveStats
from pipeline.types import FrameVerdict, Label, MediaInfo

__all__ = [
    "LIVE_SCHEMES",
    "EndReason",
    "LiveOptions",
    "LiveSession",
    "LiveStats",
    "LiveUpdate",
    "PersonGone",
    "PersonNow",
    "SourceConnected",
    "SourceNotice",
    "SourceReconnecting",
]

# Schemes a live URL may use. Never file:, concat:, subfile:, pipe: or any FFmpeg protocol that reads local
# files or other URLs' bytes: a URL names one network source.
LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "rtp", "srt", "tcp")


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How a live source is read and a live session is judged. Units in the names.

    ``queue_frames``: sampled frames held for analysis; when analysis falls behind, the oldest is dropped
    (newest frame first), so the capture-to-verdict lag stays bounded by about queue_frames / rate_hz plus
    one analysis step.
    """

    rate_hz: float = 2.0  # sampled frames per second of stream time
    queue_frames: int = 2
    open_timeout_s: float = 10.0  # connect + first packet
    read_timeout_s: float = 10.0  # no packet for this long = a stalled source
    reconnects: int = 5  # attempts after a network error before the session fails; 0 = none
    backoff_s: float = 0.5  # first reconnect delay; doubles each attempt ...
    backoff_max_s: float = 8.0  # ... up to this
    window_s: float = 30.0  # a person's current verdict is over their faces of the last window_s
    gone_s: float = 10.0  # a person unseen for this long (stream time) is closed and summarised
    max_pixels: int = 50_000_000  # a stream whose frames are larger is refused

    def __post_init__(self) -> None:
        checks = [
            (0 < self.rate_hz <= 60, f"rate_hz must be in (0, 60], got {self.rate_hz}"),
            (1 <= self.queue_frames <= 64, f"queue_frames must be in 1..64, got {self.queue_frames}"),
            (self.open_timeout_s > 0, f"open_timeout_s must be > 0, got {self.open_timeout_s}"),
            (self.read_timeout_s > 0, f"read_timeout_s must be > 0, got {self.read_timeout_s}"),
            (self.reconnects >= 0, f"reconnects must be >= 0, got {self.reconnects}"),
            (self.backoff_s > 0, f"backoff_s must be > 0, got {self.backoff_s}"),
            (self.backoff_max_s >= self.backoff_s, f"backoff_max_s must be >= backoff_s, got {self.backoff_max_s}"),
            (self.window_s > 0, f"window_s must be > 0, got {self.window_s}"),
            (self.gone_s > 0, f"gone_s must be > 0, got {self.gone_s}"),
            (self.max_pixels > 0, f"max_pixels must be > 0, got {self.max_pixels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def every_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True, slots=True)
class SourceConnected:
    """The source is open (first time, or again after a reconnect); ``info`` as read from its stream."""

    info: MediaInfo
    wall_s: float
    attempt: int = 0  # 0 = the first connection; N = after the Nth reconnect attempt


@dataclass(frozen=True, slots=True)
class SourceReconnecting:
    """A network error broke the source; attempt ``attempt`` of ``limit`` follows after ``delay_s``."""

    attempt: int
    limit: int
    delay_s: float
    reason: str  # for people: what broke (FFmpeg's message, or "no packet for 10 s")
    wall_s: float


SourceNotice = SourceConnected | SourceReconnecting


@dataclass(frozen=True, slots=True)
class PersonNow:
    """One person as the session stands: their faces of the last ``window_s`` decide ``label``.

    ``score``: the track rule's score over the window (None when the window has no face); ``n_faces``:
    faces of the person's whole life so far.
    """

    track_id: int
    first_s: float
    last_s: float
    n_faces: int
    window_faces: int
    score: float | None
    label: Label
    confident_fake: bool


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """One analysed live frame: its verdict, how late it came, and every person being tracked."""

    verdict: FrameVerdict
    captured_s: float  # wall time the frame was decoded
    lag_s: float  # wall time of the verdict - captured_s
    people: tuple[PersonNow, ...]
    stats: LiveStats


@dataclass(frozen=True, slots=True)
class PersonGone:
    """A person unseen for ``gone_s`` was closed: their whole-life verdict (they no longer take memory)."""

    person: PersonNow  # score/label over every face of the person's life here, not a window
