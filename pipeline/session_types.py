"""The live-session records a ``Report`` carries (a leaf module: ``pipeline.types`` imports it, and the rest
of the live records, in ``pipeline.live_types``, import both)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class EndReason(str, Enum):
    """Why a live session stopped."""

    ENDED = "ended"  # the source ended cleanly (end of stream)
    STOPPED = "stopped"  # the user stopped it (Ctrl-C, Stop, --for elapsed, client gone)
    FAILED = "failed"  # the source failed after its reconnect limit, or timed out


@dataclass(frozen=True, slots=True)
class LiveStats:
    """Counters of one live source since it was opened (a snapshot; the source keeps counting).

    ``decoded``: frames decoded from the stream; ``sampled``: taken at ``rate_hz``; ``dropped``: sampled
    but dropped unanalysed because analysis was behind (newest first); ``delivered``: handed to analysis.
    """

    decoded: int = 0
    sampled: int = 0
    dropped: int = 0
    delivered: int = 0
    reconnects: int = 0

    @property
    def dropped_fraction(self) -> float:
        return self.dropped / self.sampled if self.sampled else 0.0


@dataclass(frozen=True, slots=True)
class LiveSession:
    """What a live report adds: when it ran, why it stopped, and its counters. ``Report.frames`` of a live
    report is empty: the per-frame rows went to the store (or a JSONL file) as they came."""

    started_s: float  # wall time
    stopped_s: float
    end: EndReason
    end_message: str | None  # why it failed / who stopped it, for people
    stats: LiveStats
    frames_analysed: int
    lag_p50_s: float | None
    lag_p95_s: float | None
