"""Result records, the targets P1-P5, the printed table and the JSON written to ``bench/results``.

Pure: no torch, no timing. Every number in a row is a median over its repeats.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.config import RESULTS_DIR

STAGES = ("decode", "detect", "classify", "cam")


@dataclass
class Row:
    """One timed run. ``stage_s``: wall seconds per stage (summed over frames); ``cpu_cores``: process CPU
    seconds ÷ wall seconds (2.0 = both cores busy for us; less = waiting or sharing the CPU)."""

    input: str
    run: str
    repeat: int
    frames: int
    faces: int
    wall_s: float
    stage_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    cpu_cores: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float | None:
        """Frames per wall second; None for runs that have no frames (decode-free classifier runs)."""
        return self.frames / self.wall_s if self.wall_s > 0 and self.frames else None

    @property
    def faces_per_s(self) -> float | None:
        return self.faces / self.wall_s if self.wall_s > 0 and self.faces else None

    def ms_per_frame(self, stage: str) -> float | None:
        if stage not in self.stage_s or not self.frames:
            return None
        return 1000.0 * self.stage_s[stage] / self.frames

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = self.fps
        d["faces_per_s"] = self.faces_per_s
        return d


def median(values: Iterable[float | None]) -> float | None:
    """Median of the non-None, non-NaN values; None when there are none."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else None


@dataclass(frozen=True, slots=True)
class Target:
    """``value`` (median of ``samples``) must be >= ``bound`` (``higher_is_better``) or <= it."""

    id: str
    what: str
    bound: float
    higher_is_better: bool
    samples: tuple[float, ...]
    unit: str = "x"
    note: str = ""

    @property
    def value(self) -> float | None:
        return median(self.samples)

    @property
    def passed(self) -> bool | None:
        v = self.value
        if v is None:
            return None
        return v >= self.bound if self.higher_is_better else v <= self.bound

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "what": self.what,
            "value": self.value,
            "target": f"{'>=' if self.higher_is_better else '<='} {self.bound:g}{self.unit}",
            "passed": self.passed,
            "samples": list(self.samples),
            "note": self.note,
        }


def summarise(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One dict per (input, run) in first-seen order: medians over repeats of every printed number."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.input, row.run), []).append(row)
    out = []
    for (inp, run), rs in groups.items():
        out.append(
            {
                "input": inp,
                "run": run,
                "repeats": len(rs),
                "frames": rs[0].frames,
                "faces": rs[0].faces,
                "fps": median(r.fps for r in rs),
                "faces_per_s": median(r.faces_per_s for r in rs),
                **{f"{s}_ms": median(r.ms_per_frame(s) for r in rs) for s in STAGES},
                "peak_rss_mib": median(r.peak_rss_mib for r in rs),
                "cpu_cores": median(r.cpu_cores for r in rs),
            }
        )
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(rows: Sequence[Row]) -> str:
    """The printed table: per-frame stage times in ms, rates per wall second, medians over repeats."""
    head = (
        "input",
        "run",
        "n",
        "frames",
        "faces",
        "frames/s",
        "faces/s",
        *[f"{s} ms/f" for s in STAGES],
        "peak RSS MiB",
        "cores",
    )
    lines = [head]
    for s in summarise(rows):
        lines.append(
            (
                s["input"],
                s["run"],
                str(s["repeats"]),
                str(s["frames"]),
                str(s["faces"]),
                _fmt(s["fps"], 2),
                _fmt(s["faces_per_s"], 2),
                *[_fmt(s[f"{st}_ms"]) for st in STAGES],
                _fmt(s["peak_rss_mib"], 0),
                _fmt(s["cpu_cores"], 2),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for k, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        text.append("  ".join(cells))
        if k == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_targets(targets: Sequence[Target]) -> str:
    """One line per target: value, bound, PASS/FAIL, the per-repeat samples."""
    lines = []
    for t in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t.passed]
        op = ">=" if t.higher_is_better else "<="
        samples = ", ".join(f"{s:.3g}" for s in t.samples)
        lines.append(
            f"{t.id}  {_fmt(t.value, 2):>7}{t.unit}  (target {op} {t.bound:g}{t.unit})  {verdict:4}  "
            f"{t.what}  [{samples}]" + (f"  {t.note}" if t.note else "")
        )
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (atomically: a .tmp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def results_header(quick: bool) -> dict[str, Any]:
    """The fields every results JSON opens with: ``schema``, ``date`` (local time, ISO), ``quick``, ``host``,
    ``cpu_count`` and ``loadavg_end`` (1/5/15-min load averages at the end: a busy machine explains noise)."""
    return {
        "schema": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "quick": quick,
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
    }


def results_path(kind: str, quick: bool, directory: Path = RESULTS_DIR) -> Path:
    """``directory/<date>-<host>-<kind>[-quick].json``, e.g. ``bench/results/2026-12-01-vm-load.json``."""
    host = socket.gethostname().split(".")[0] or "host"
    return directory / f"{time.strftime('%Y-%m-%d')}-{host}-{kind}{'-quick' if quick else ''}.json"
