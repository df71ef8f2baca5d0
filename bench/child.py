"""One analysis in a fresh process, for clean peak-RSS numbers: ``python -m bench.child CLIP CKPT``.

Prints one JSON object on the last stdout line: peak RSS (MiB, VmHWM of this process: ``ru_maxrss`` would
count the parent's pages copied at fork, which exec folds into it on Linux), RSS after
``Engine.open``, wall seconds, seconds to the first FrameVerdict (a *cold* engine: the first analysis
this process runs), frames, faces and the video seconds gone through.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.measure import mode_settings, peak_rss_mib, rss_mib, run_pipeline
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.types import SampleMode


@dataclass(frozen=True, slots=True)
class ChildResult:
    """What one child process reports (see the module docstring)."""

    peak_rss_mib: float
    ru_maxrss_mib: float  # for comparison: includes what the parent held at fork (see module docstring)
    rss_after_open_mib: float | None
    open_s: float
    wall_s: float
    first_verdict_s: float | None
    frames: int
    faces: int
    video_s: float

    @property
    def realtime(self) -> float:
        """Seconds of video per wall second of ``analyze()``."""
        return self.video_s / self.wall_s if self.wall_s > 0 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__)
    ap.add_argument("clip", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--mode", default="every_s", choices=[m.value for m in SampleMode])
    ap.add_argument("--max-frames", type=int, default=0, help="0 = no cap (the whole clip)")
    ap.add_argument(
        "--warmup", action="store_true", help="analyse 2 frames first, untimed: a warm engine's steady state"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    settings = Settings.from_env(checkpoint=args.checkpoint)
    settings = mode_settings(settings, SampleMode(args.mode), max_frames=args.max_frames or None)
    with Engine.open(settings) as engine:
        open_s = time.perf_counter() - t0
        after_open = rss_mib()
        if args.warmup:  # first calls build oneDNN kernels and allocator pools
            run_pipeline(args.clip, engine, mode_settings(settings, SampleMode.ALL, max_frames=2))
        result = run_pipeline(args.clip, engine, settings)
    peak = peak_rss_mib()
    out = ChildResult(
        peak_rss_mib=peak,
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        rss_after_open_mib=after_open,
        open_s=open_s,
        wall_s=result.wall_s,
        first_verdict_s=result.first_verdict_s,
        frames=result.frames,
        faces=result.faces,
        video_s=result.video_s,
    )
    print(json.dumps({k: getattr(out, k) for k in ChildResult.__dataclass_fields__}))
    return 0


def run_child(
    clip: Path,
    checkpoint: Path,
    *,
    mode: str = "every_s",
    max_frames: int = 0,
    warmup: bool = False,
    env: Mapping[str, str] | None = None,
) -> ChildResult:
    """Run :func:`main` in a fresh interpreter and parse its report. ``env``: the child's whole environment
    (default: this process's), e.g. to set ``OMP_WAIT_POLICY`` before the child imports torch."""
    import subprocess

    cmd = [sys.executable, "-m", "bench.child", str(clip), str(checkpoint), "--mode", mode]
    cmd += ["--max-frames", str(max_frames)] + (["--warmup"] if warmup else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=None if env is None else dict(env))
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return ChildResult(**data)


if __name__ == "__main__":
    sys.exit(main())
