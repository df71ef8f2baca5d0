"""Small faces in large frames: ``python -m bench.recovery [--quick] [--rounds N] [--frames N]``.

On a generated 1920×1080 clip with six 40-60 px faces a frame (``bench.media.small_faces_clip``; the
layout tests/pipeline/test_faces_recovery.py paints), every frame sampled, side by side in one run
(variants alternate within each round; speeds are medians over the rounds):

- **fast pass**: ``recover_small_faces`` off, the 640-wide pass alone (today's service before recovery);
- **recovery**: the default budget (``recover_budget`` 0.25), and budget 1.0 (every frame that wants a
  pass gets one: the recall ceiling of the rule).

Each row: painted faces found (a box whose centre lies in a painted tile), boxes elsewhere, frames with at
least one face, recovery passes, frames/s of detection alone (decoded frames held in memory) and of the
whole ``analyze()`` with the bench checkpoint (decode, detection, classify + Grad-CAM of every face found).
Prints a table and writes ``bench/results/<date>-<host>-recovery[-quick].json`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import RESULTS_DIR, bench_cache

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.detect import FaceDetector
    from pipeline.engine import Engine
    from pipeline.types import FaceBox, Frame, MediaInfo

# (name, recover_small_faces, recover_budget)
VARIANTS: tuple[tuple[str, bool, float], ...] = (
    ("fast pass", False, 0.25),
    ("recovery, budget 0.25", True, 0.25),
    ("recovery, budget 1.0", True, 1.0),
)


@dataclass(frozen=True, slots=True)
class Found:
    """What one variant's detection found over the clip (the same every round: detection is deterministic)."""

    painted: int  # faces painted, summed over frames
    found: int  # painted faces with a box whose centre is in the tile
    elsewhere: int  # boxes whose centre is in no painted tile
    frames_with_face: int
    passes: int  # recovery passes run


@dataclass(frozen=True, slots=True)
class Round:
    """One variant in one round: wall seconds of detection alone and of analyze(), and what analyze() saw."""

    detect_s: float
    analyze_s: float
    analyze_frames: int
    analyze_faces: int


class _Counting:
    """Delegates to a FaceDetector and counts the calls made at another side than ``fast_side_px``."""

    def __init__(self, inner: FaceDetector, fast_side_px: int) -> None:
        self.inner, self.fast_side_px, self.passes = inner, fast_side_px, 0

    def detect(self, frames: Sequence[Frame], min_face_px: int, max_side_px: int) -> list[list[FaceBox]]:
        self.passes += max_side_px != self.fast_side_px
        return self.inner.detect(frames, min_face_px, max_side_px)


def score_found(found: Sequence[tuple[Frame, Sequence[FaceBox]]], passes: int) -> Found:
    """Match boxes to the painted tiles of ``bench.media.small_face_spots`` by box centre."""
    from bench.media import small_face_spots

    painted = hit = elsewhere = with_face = 0
    for frame, boxes in found:
        spots = small_face_spots(frame.index)
        painted += len(spots)
        with_face += bool(boxes)
        centres = [((b.xyxy[0] + b.xyxy[2]) / 2, (b.xyxy[1] + b.xyxy[3]) / 2) for b in boxes]
        inside = [[x <= cx <= x + s and y <= cy <= y + s for x, y, s in spots] for cx, cy in centres]
        hit += sum(any(row[k] for row in inside) for k in range(len(spots)))
        elsewhere += sum(not any(row) for row in inside)
    return Found(painted, hit, elsewhere, with_face, passes)


def detect_run(frames: Sequence[Frame], info: MediaInfo, engine: Engine, settings: Settings) -> tuple[Found, float]:
    """Detection alone over ``frames`` as analyze() runs it (``pipeline.faces.detect_faces``); wall seconds."""
    from pipeline.faces import detect_faces, detect_params

    params = detect_params(info, settings)
    counting = _Counting(engine.detector, params.max_side_px)
    t0 = time.perf_counter()
    found = list(detect_faces(frames, counting, params))  # type: ignore[arg-type]
    return score_found(found, counting.passes), time.perf_counter() - t0


def measure(clip: Path, checkpoint: Path, rounds: int, log: Any = print) -> dict[str, Any]:
    """Every variant ``rounds`` times, alternating; the JSON payload (less the header)."""
    from bench.measure import run_pipeline
    from pipeline.config import Settings
    from pipeline.detect import crop_faces
    from pipeline.engine import Engine
    from pipeline.sources import open_media_for
    from pipeline.types import SampleMode

    base = dataclasses.replace(Settings.from_env(), checkpoint=checkpoint, sample_mode=SampleMode.ALL, max_frames=None)
    with open_media_for(clip, base) as source:
        info, frames = source.info, list(source.frames())
    found: dict[str, Found] = {}
    runs: dict[str, list[Round]] = {name: [] for name, _, _ in VARIANTS}
    with Engine.open(base) as engine:
        for side in (base.detect_max_side_px, base.photo_detect_max_side_px):  # untimed: kernels, pools
            (boxes,) = engine.detector.detect(frames[:1], base.video_min_face_px, side)
        engine.score(crop_faces(frames[0].image, boxes, engine.info.profile), boxes)
        for r in range(rounds):
            for name, on, budget in VARIANTS:
                settings = dataclasses.replace(base, recover_small_faces=on, recover_budget=budget)
                seen, detect_s = detect_run(frames, info, engine, settings)
                if found.setdefault(name, seen) != seen:
                    raise AssertionError(f"{name}: detection differed between rounds: {found[name]} vs {seen}")
                result = run_pipeline(clip, engine, settings)
                runs[name].append(Round(detect_s, result.wall_s, result.frames, result.faces))
                log(
                    f"round {r + 1}/{rounds} {name}: {seen.found}/{seen.painted} found, {seen.passes} passes, "
                    f"detect {len(frames) / detect_s:.2f} frames/s, analyze {result.fps:.2f} frames/s"
                )
        device, precision = engine.info.device, engine.info.precision
    rows = []
    for name, _, _ in VARIANTS:
        seen, rs = found[name], runs[name]
        rows.append(
            {
                "run": name,
                **dataclasses.asdict(seen),
                "frames": len(frames),
                "detect_fps": len(frames) / statistics.median(r.detect_s for r in rs),
                "analyze_fps": statistics.median(r.analyze_frames / r.analyze_s for r in rs),
                "analyze_faces": statistics.median(r.analyze_faces for r in rs),
                "rounds": [dataclasses.asdict(r) for r in rs],
            }
        )
    return {
        "clip": {"name": clip.name, "width": info.width, "height": info.height, "frames": len(frames)},
        "machine": {"device": device, "precision": precision},
        "rounds": rounds,
        "rows": rows,
    }


def table(payload: dict[str, Any]) -> str:
    """The printed table, one row per variant."""
    clip = payload["clip"]
    head = ("run", "painted found", "elsewhere", "frames >=1 face", "passes", "detect frames/s", "analyze frames/s")
    lines = [head]
    for row in payload["rows"]:
        lines.append(
            (
                row["run"],
                f"{row['found']}/{row['painted']} ({100 * row['found'] / row['painted']:.0f}%)",
                str(row["elsewhere"]),
                f"{row['frames_with_face']}/{row['frames']}",
                str(row["passes"]),
                f"{row['detect_fps']:.2f}",
                f"{row['analyze_fps']:.2f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        f"{clip['name']} ({clip['width']}×{clip['height']}, {clip['frames']} frames, medians of {payload['rounds']})"
    ]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 frames, one round (smoke test)")
    ap.add_argument("--frames", type=int, help="frames in the clip (default 40; quick 8)")
    ap.add_argument("--rounds", type=int, help="rounds of all variants (default 3; quick 1)")
    ap.add_argument("--cache", type=Path, metavar="DIR", help="clips and checkpoint (default DATA_DIR/bench-cache)")
    ap.add_argument("--out", type=Path, help=f"write the JSON here (default {RESULTS_DIR}/<date>-<host>-recovery.json)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from pipeline.threads import apply_entry_thread_environment

    apply_entry_thread_environment()  # the thread settings `dff` runs with (before torch loads)
    from bench.media import small_faces_clip
    from bench.weights import calibrated_checkpoint

    cache = bench_cache(args.cache)
    clip = small_faces_clip(cache, args.frames or (8 if args.quick else 40))
    payload = measure(clip, calibrated_checkpoint(cache), args.rounds or (1 if args.quick else 3))
    print(table(payload))
    if not args.no_write:
        from bench.report import results_header, results_path, write_json

        out = write_json(args.out or results_path("recovery", args.quick), {**results_header(args.quick), **payload})
        print(f"bench.recovery: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
