"""The Ray rows' records and arithmetic (``python -m bench.ray``): samples in, summaries and the table out.

Pure: no servers, no timing. A ``Sample`` is one workload run once on one configuration; a ``Summary``
is a configuration's workload over every round: per-round figures (total rate, percentiles over the jobs
of that round), then the median over the rounds; every report is compared with the solo local one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.load import PROB_TOLERANCE, Job, max_prob_difference, percentile

SOLO = "1 video"
VIDEOS = "4 videos"
PHOTOS = "8 photos"
WORKLOADS = {SOLO: 1, VIDEOS: 4, PHOTOS: 8}  # workload -> jobs at once


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of ``workload`` on ``config``: its jobs as their clients saw them; ``wall_s`` from the first
    upload's start to the last job's end."""

    config: str
    workload: str
    round: int
    wall_s: float
    jobs: tuple[Job, ...]

    def to_json(self) -> dict[str, Any]:
        jobs = [{k: v for k, v in asdict(j).items() if k != "probs"} for j in self.jobs]
        return {
            "config": self.config,
            "workload": self.workload,
            "round": self.round,
            "wall_s": self.wall_s,
            "jobs": jobs,
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """``config``'s ``workload`` over ``rounds``: counts over every job; rates (frames/s, or photos/s for
    photos: a round's completed jobs' ÷ its wall time) and seconds (first frame, done: p50/p95 over a round's
    completed jobs, from the start of each upload) are medians over the rounds."""

    config: str
    workload: str
    rounds: int
    jobs: int
    completed: int
    identical: int  # reports equal to the solo local one to PROB_TOLERANCE
    max_prob_diff: float
    per_s: float
    first_frame_p50_s: float
    first_frame_p95_s: float
    done_p50_s: float
    done_p95_s: float


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _frame_rate(jobs: list[Job], wall_s: float) -> float:
    return sum(j.frames for j in jobs) / wall_s


def _photo_rate(jobs: list[Job], wall_s: float) -> float:
    return len(jobs) / wall_s


def _pct(attr: str, q: float) -> Callable[[list[Job], float], float]:
    """The q-th percentile of the jobs' ``attr`` (a figure of one round)."""
    return lambda jobs, _: percentile([v for j in jobs if (v := getattr(j, attr)) is not None], q)


def summarise(samples: Sequence[Sample], reference: Mapping[str, Job]) -> list[Summary]:
    """One Summary per (config, workload), in first-seen order; ``reference``: the solo local job per kind of
    input (``"video"``, ``"photo"``) whose report every job's must equal."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.config, s.workload), []).append(s)
    out = []
    for (config, workload), group in groups.items():
        ref = reference["photo" if workload == PHOTOS else "video"]
        jobs = [j for s in group for j in s.jobs]
        done = [j for j in jobs if j.error is None]
        diffs = [max_prob_difference(ref, j) for j in done]

        def per_round(figure: Callable[[list[Job], float], float], group: list[Sample] = group) -> float:
            return _median([figure([j for j in s.jobs if j.error is None], s.wall_s) for s in group])

        rate = _photo_rate if workload == PHOTOS else _frame_rate
        out.append(
            Summary(
                config=config,
                workload=workload,
                rounds=len(group),
                jobs=len(jobs),
                completed=len(done),
                identical=sum(d <= PROB_TOLERANCE for d in diffs),
                max_prob_diff=max(diffs, default=math.nan),
                per_s=per_round(rate),
                first_frame_p50_s=per_round(_pct("first_frame_s", 50)),
                first_frame_p95_s=per_round(_pct("first_frame_s", 95)),
                done_p50_s=per_round(_pct("done_s", 50)),
                done_p95_s=per_round(_pct("done_s", 95)),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Row:
    """One comparison: ``workload`` on config ``a`` vs config ``b``, the figures ``metrics`` (Summary fields);
    ``labels``: the two columns' headings (default: the config names)."""

    title: str
    workload: str
    a: str
    b: str
    metrics: tuple[str, ...]
    labels: tuple[str, str] | None = None


LABELS = {  # Summary field -> (printed name, unit; "rate" = frames/s or photos/s)
    "per_s": ("throughput", "rate"),
    "first_frame_p50_s": ("first frame p50", "s"),
    "first_frame_p95_s": ("first frame p95", "s"),
    "done_p50_s": ("done p50", "s"),
    "done_p95_s": ("done p95", "s"),
    "identical": ("reports = solo local (1e-6)", "count"),
}


def _cell(s: Summary, metric: str) -> str:
    value = getattr(s, metric)
    unit = LABELS[metric][1]
    if unit == "count":
        return f"{value}/{s.jobs}"
    if unit == "rate":
        return f"{value:.2f} {'photos' if s.workload == PHOTOS else 'frames'}/s"
    return f"{value:.2f} s"


def table(rows: Sequence[Row], summaries: Sequence[Summary], head: str) -> str:
    """``head``, then per row its two configurations side by side and b ÷ a (medians over rounds)."""
    by_key = {(s.config, s.workload): s for s in summaries}
    lines: list[tuple[str, str, str, str]] = []
    for row in rows:
        a, b = by_key.get((row.a, row.workload)), by_key.get((row.b, row.workload))
        if a is None or b is None:
            continue
        la, lb = row.labels or (row.a, row.b)
        lines.append((row.title, la, lb, f"{lb} ÷ {la}"))
        for metric in row.metrics:
            va, vb = getattr(a, metric), getattr(b, metric)
            ratio = "" if LABELS[metric][1] == "count" or not va else f"{vb / va:.2f}"
            lines.append((f"  {LABELS[metric][0]}", _cell(a, metric), _cell(b, metric), ratio))
    widths = [max((len(line[i]) for line in lines), default=0) for i in range(4)]
    body = []
    for line in lines:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        body.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join([head, *body])


def all_good(summaries: Sequence[Summary]) -> bool:
    """Every job of every configuration completed, each with the solo local report (to 1e-6)."""
    return bool(summaries) and all(s.completed == s.identical == s.jobs for s in summaries)
