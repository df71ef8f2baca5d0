"""``JobState``: a job's one lifecycle. ``stream.jobs.Job`` owns a job's state and moves it; the store
persists the same values in ``jobs.status`` (all but ``uploading``, which is never stored).

    UPLOADING ──submit──▶ QUEUED ──accepted──▶ RUNNING ──▶ DONE | FAILED | CANCELLED | INTERRUPTED
        (any unfinished state may also end FAILED, CANCELLED or INTERRUPTED)
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    def can_move_to(self, other: JobState) -> bool:
        return other in _MOVES.get(self, frozenset())


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})
ENDS_WITHOUT_REPORT = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})
_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.UPLOADING: frozenset({JobState.QUEUED}) | ENDS_WITHOUT_REPORT,
    JobState.QUEUED: frozenset({JobState.RUNNING}) | ENDS_WITHOUT_REPORT,
    JobState.RUNNING: frozenset({JobState.DONE}) | ENDS_WITHOUT_REPORT,
}
