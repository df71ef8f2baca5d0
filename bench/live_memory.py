"""``python -m bench.live_memory [--hours 2] [--rate 0.5]``: a live session's memory over hours of stream
time, fed faster than real time. Target L2: RSS after the whole stream <= 1.10 × RSS after 5 minutes.

A PushSource gets synthetic 256×144 frames (two people of the bench's face tile; every 90 s of stream time
one of them leaves and, 20 s later, a new one comes, so people are closed and summarised all along) in
lock step with ``watch()`` (one frame pushed, its verdict taken: nothing is dropped, every frame is
analysed), with the real detector and the bench's calibrated classifier. Every verdict's row goes to a
JSON Lines file as ``dff watch --json`` writes it. RSS (VmRSS) is read every 10 minutes of stream time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import bench_cache
from bench.measure import rss_mib
from bench.media import _background, face_tile
from bench.weights import calibrated_checkpoint
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.live_types import LiveOptions, LiveUpdate
from pipeline.run import watch
from pipeline.sources.push import PushSource
from pipeline.types import FrameRow, Report

TARGET_RATIO = 1.10
WARM_S = 300.0  # the reference point: RSS after 5 minutes of stream
STEP_S = 600.0  # an RSS sample every 10 minutes of stream
FACE_PX = 64


@dataclass(frozen=True, slots=True)
class MemoryResult:
    hours: float
    rate_hz: float
    frames: int
    faces: int
    people: int
    wall_s: float
    rss_warm_mib: float
    rss_end_mib: float
    curve_mib: tuple[tuple[float, float], ...]  # (stream minutes, RSS MiB)

    @property
    def ratio(self) -> float:
        return self.rss_end_mib / self.rss_warm_mib

    @property
    def passed(self) -> bool:
        return self.ratio <= TARGET_RATIO


def scene(time_s: float, tile: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Two seats; the right one is empty for 20 s of every 90 s, so a new person sits down each time."""
    frame = background.copy()
    drift = int(6 * np.sin(time_s / 7.0))
    frame[30 : 30 + FACE_PX, 20 + drift : 20 + drift + FACE_PX] = tile
    if time_s % 90.0 >= 20.0:
        frame[40 : 40 + FACE_PX, 160 - drift : 160 - drift + FACE_PX] = tile[:, ::-1]
    return frame


def run(
    hours: float,
    rate_hz: float,
    settings: Settings,
    rows_path: Path,
    log=print,
    *,
    warm_s: float = WARM_S,
    step_s: float = STEP_S,
) -> MemoryResult:
    """Analyse ``hours`` of stream at ``rate_hz`` as fast as the machine can; RSS at ``warm_s`` of stream,
    then every ``step_s``, and at the end."""
    options = LiveOptions(rate_hz=rate_hz, queue_frames=4, read_timeout_s=600.0, open_timeout_s=600.0)
    source = PushSource("bench-live-memory", options)
    tile, background = face_tile(FACE_PX), _background(256, 144)
    n_frames = round(hours * 3600 * rate_hz)
    curve: list[tuple[float, float]] = []
    faces = 0
    report: Report | None = None
    started = time.perf_counter()
    with Engine.open(settings) as engine, rows_path.open("w") as rows:
        source.push_image(scene(0.0, tile, background), 0.0)
        events = watch(source, engine, settings, options)
        next_sample_s = warm_s
        pushed = 1
        for event in events:
            if isinstance(event, Report):
                report = event
                break
            if not isinstance(event, LiveUpdate):
                continue
            row = FrameRow.of(event.verdict)
            rows.write(json.dumps(dataclasses.asdict(row), separators=(",", ":")) + "\n")
            faces += len(row.faces)
            t = event.verdict.time_s
            if t + 1e-9 >= next_sample_s:
                gc.collect()
                rss = rss_mib() or 0.0
                curve.append((t / 60.0, rss))
                log(f"  {t / 60:6.1f} min of stream: RSS {rss:7.1f} MiB ({time.perf_counter() - started:5.0f} s)")
                next_sample_s = step_s if next_sample_s < step_s else next_sample_s + step_s
            if pushed < n_frames:
                time_s = pushed / rate_hz
                source.push_image(scene(time_s, tile, background), time_s)
                pushed += 1
            else:
                source.finish()
    gc.collect()
    end = rss_mib() or 0.0
    curve.append((n_frames / rate_hz / 60.0, end))
    people = len(report.tracks) if report is not None else 0
    return MemoryResult(
        hours, rate_hz, n_frames, faces, people, time.perf_counter() - started, curve[0][1], end, tuple(curve)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_memory", description=__doc__)
    parser.add_argument("--hours", type=float, default=2.0, help="stream time to analyse (default 2)")
    parser.add_argument("--rate", type=float, default=0.5, help="sampled frames per second of stream (default 0.5)")
    parser.add_argument("--cache", type=Path, help="the bench checkpoint's folder (default the bench cache)")
    args = parser.parse_args(argv)
    if args.hours * 3600 <= WARM_S:
        parser.error(f"--hours must be more than {WARM_S / 60:g} minutes")
    from pipeline.threads import apply_entry_thread_environment

    apply_entry_thread_environment()
    base = Settings.from_env()
    cache = bench_cache(args.cache)
    settings = dataclasses.replace(base, checkpoint=calibrated_checkpoint(cache))
    print(f"live memory: {args.hours:g} h of stream at {args.rate:g} frames/s, fed as fast as analysis goes")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.hours, args.rate, settings, Path(tmp) / "rows.jsonl")
    verdict = "PASS" if result.passed else "FAIL"
    print(
        f"L2 {verdict}: RSS {result.rss_end_mib:.1f} MiB after {result.hours:g} h vs {result.rss_warm_mib:.1f} MiB "
        f"after 5 min = x{result.ratio:.3f} (target <= x{TARGET_RATIO:.2f}); {result.frames} frames, "
        f"{result.faces} faces, {result.people} people, {result.wall_s:.0f} s wall"
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
