"""Throughput beside busy CPU processes: ``python -m bench.contention [--quick] [--matrix] [--busy 2]``.

Runs ``analyze()`` in a fresh process (``bench.child``, warm engine, every frame of the bench clip) on a
quiet machine, then beside ``--busy`` processes that each spin one core (``while True: pass``), and
reports the **contention ratio**: frames/s with the busy processes ÷ frames/s quiet, measured side by side
in one run (quiet, busy, quiet, busy, ... so a drift in the machine's load hits both alike).

``--matrix`` measures it for each thread setting the entry point could choose (torch's default threads vs
one thread, OpenMP's default spin-wait vs ``OMP_WAIT_POLICY=PASSIVE``, set in the child's environment
before it imports torch) and prints ms/frame quiet vs contended for each; without it, only the setting the
``dff`` entry point applies (:func:`pipeline.threads.entry_thread_environment`) is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.child import run_child
from bench.config import CLIP_720P, CLIP_QUICK, RESULTS_DIR, ClipSpec, bench_cache

BUSY_LOOP = "while True: pass"


@contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` child processes that each keep one core busy until the block ends (then they are killed)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    try:
        time.sleep(0.3)  # let them get scheduled before the measurement starts
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@dataclass(frozen=True, slots=True)
class Variant:
    """A thread setting: environment variables given to the child before it imports torch (``None`` value =
    removed from the environment: the library default)."""

    name: str
    env: tuple[tuple[str, str | None], ...]

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        for key, value in self.env:
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


# DFF_TORCH_THREADS=0 means "torch's default" (one thread per core); OMP_WAIT_POLICY unset = libgomp spins.
MATRIX = (
    Variant("default threads, OMP spin", (("DFF_TORCH_THREADS", "0"), ("OMP_WAIT_POLICY", None))),
    Variant("1 thread, OMP spin", (("DFF_TORCH_THREADS", "1"), ("OMP_WAIT_POLICY", None))),
    Variant("default threads, OMP passive", (("DFF_TORCH_THREADS", "0"), ("OMP_WAIT_POLICY", "PASSIVE"))),
    Variant("1 thread, OMP passive", (("DFF_TORCH_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE"))),
)


@dataclass(frozen=True, slots=True)
class Contention:
    """One variant's frames/s quiet and beside ``busy`` spinning processes (medians over ``rounds``)."""

    variant: str
    busy: int
    rounds: int
    frames: int
    quiet_fps: list[float]
    busy_fps: list[float]
    loadavg_before: list[float]  # 1-min load average before each quiet run: how quiet "quiet" was

    @property
    def quiet_ms_per_frame(self) -> float:
        return 1000.0 / statistics.median(self.quiet_fps)

    @property
    def busy_ms_per_frame(self) -> float:
        return 1000.0 / statistics.median(self.busy_fps)

    @property
    def ratio(self) -> float:
        """Throughput beside the busy processes ÷ quiet throughput (1.0 = unaffected)."""
        return statistics.median(self.busy_fps) / statistics.median(self.quiet_fps)

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "quiet_ms_per_frame": round(self.quiet_ms_per_frame, 1),
            "busy_ms_per_frame": round(self.busy_ms_per_frame, 1),
            "ratio": round(self.ratio, 3),
        }


def measure(
    clip: Path, checkpoint: Path, variants: Sequence[Variant], *, busy: int = 2, rounds: int = 1, frames: int = 20
) -> list[Contention]:
    """Frames/s of ``analyze()`` (every frame, the first ``frames``) in a fresh process per run, with each
    variant's environment: quiet, then beside ``busy`` spinning processes. Rounds go over every variant in
    turn, so a change in the machine's own load spreads over all of them."""
    quiet: dict[str, list[float]] = {v.name: [] for v in variants}
    loaded: dict[str, list[float]] = {v.name: [] for v in variants}
    load: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            env = variant.environ(os.environ)
            load[variant.name].append(round(os.getloadavg()[0], 2))
            res = run_child(clip, checkpoint, mode="all", max_frames=frames, warmup=True, env=env)
            quiet[variant.name].append(res.frames / res.wall_s)
            with busy_processes(busy):
                res = run_child(clip, checkpoint, mode="all", max_frames=frames, warmup=True, env=env)
            loaded[variant.name].append(res.frames / res.wall_s)
    return [Contention(v.name, busy, rounds, frames, quiet[v.name], loaded[v.name], load[v.name]) for v in variants]


def entry_variant() -> Variant:
    """The thread setting the ``dff`` entry point applies (what the service runs with)."""
    from pipeline.threads import entry_thread_environment

    applied = entry_thread_environment(os.environ)
    return Variant(
        "entry point: " + ", ".join(f"{k}={v}" for k, v in sorted(applied.items())) if applied else "entry point",
        tuple(applied.items()),
    )


def format_table(results: Sequence[Contention]) -> str:
    head = f"{'thread setting':40s} {'quiet ms/frame':>15s} {'busy ms/frame':>14s} {'ratio':>6s}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.variant:40s} {r.quiet_ms_per_frame:15.1f} {r.busy_ms_per_frame:14.1f} {r.ratio:6.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny clip, one round (smoke test)")
    ap.add_argument("--matrix", action="store_true", help="every thread setting, not only the entry point's")
    ap.add_argument("--only", type=int, nargs="+", metavar="I", help="with --matrix: only these variants (0-3)")
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the pipeline (default 2)")
    ap.add_argument("--rounds", type=int, help="quiet/busy pairs per setting (default 3; quick 1)")
    ap.add_argument("--frames", type=int, help="frames analysed per run (default 30; quick 10)")
    ap.add_argument(
        "--out", type=Path, help=f"write the JSON here (default {RESULTS_DIR}/<date>-<host>-contention.json)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from bench.media import make_clip
    from bench.weights import calibrated_checkpoint

    spec: ClipSpec = CLIP_QUICK if args.quick else CLIP_720P
    cache = bench_cache()
    clip, ckpt = make_clip(spec, cache), calibrated_checkpoint(cache)
    rounds = args.rounds or (1 if args.quick else 3)
    frames = args.frames or (10 if args.quick else 30)
    variants = (tuple(MATRIX[i] for i in args.only) if args.only else MATRIX) if args.matrix else (entry_variant(),)
    names = ", ".join(v.name for v in variants)
    print(f"bench.contention: {names}: {rounds} round(s), {frames} frames of {clip.name}, {args.busy} busy", flush=True)
    results = measure(clip, ckpt, variants, busy=args.busy, rounds=rounds, frames=frames)
    print(format_table(results))
    payload = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "clip": clip.name,
        "cpu_count": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
        "results": [r.to_json() for r in results],
    }
    if not args.no_write:
        from bench.report import write_json

        out = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-{os.uname().nodename}-contention.json"
        print(f"bench.contention: wrote {write_json(out, payload)}")
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
