"""The service under load: ``python -m bench.load [--clients 8] [--extra 4] [--quick]``.

Against the real service (``dff serve`` in its own process, on a free loopback port; nothing else is
reached), on the bench's generated clip (720p30, 10 s, 3 faces; ``--quick``: the 2-s 360p clip):

1. **solo**: one client, one job (after an untimed warm-up): the reference report and its first-frame time;
2. **load**: ``--clients`` websocket clients at once, exactly the server's capacity (``max_jobs`` running +
   ``max_queue`` waiting); once every one holds its slot, ``--extra`` more connect: each must get ``busy``
   at once (no crash, no hang). Every loaded client must finish with a report whose per-face fake_prob
   equals the solo report's to 1e-6. Measured: first-frame latency (start of upload -> first ``frame``),
   p50/p95 over the clients, and total frames/s (all clients' frames ÷ the wall time of the whole load);
3. **contention**: the solo job again, alternately quiet and beside ``--busy`` processes that each spin
   one core (``while True: pass``); the ratio of the two throughputs (1.0 = unaffected) shows whether the
   thread settings the ``dff`` entry point chooses hold up on a shared CPU (target: >= 0.5).

Bounded: at most ``clients + extra`` connections at once, every phase under ``--timeout-s``. Prints a table
and writes ``bench/results/<date>-<host>-load.json`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.config import CLIP_720P, CLIP_QUICK, RESULTS_DIR, bench_cache

PROB_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Job:
    """What one client saw: seconds from the start of its upload; ``error`` is the server's code, if any."""

    first_frame_s: float | None
    done_s: float
    frames: int
    error: str | None = None
    probs: tuple[tuple[int, int, float], ...] = ()  # (frame index, face index, fake_prob) from ``done``


def face_probs(report: dict[str, Any]) -> tuple[tuple[int, int, float], ...]:
    """Every face's fake_prob in a ``dff.report/1`` dict, keyed by frame and face index."""
    return tuple(
        (frame["index"], face["face_index"], float(face["fake_prob"]))
        for frame in report["frames"]
        for face in frame["faces"]
    )


def max_prob_difference(a: Job, b: Job) -> float:
    """Largest |Δ fake_prob| between two jobs' faces; inf when they found different faces."""
    if [k[:2] for k in a.probs] != [k[:2] for k in b.probs]:
        return math.inf
    return max((abs(x[2] - y[2]) for x, y in zip(a.probs, b.probs, strict=True)), default=0.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def run_job(url: str, clip: Path, every_s: float, holding: asyncio.Event | None = None) -> Job:
    """Upload ``clip`` and follow the job to its end; ``holding`` is set once the server gave it a slot
    (``progress(uploading)``) or refused it."""
    from stream import protocol as p
    from ui.client import ClientError, analyze_file

    started = time.perf_counter()
    first = None
    frames = 0
    try:
        async for message in analyze_file(clip, url, options=p.Options(every_s=every_s)):
            if isinstance(message, (p.Progress, p.Error)) and holding is not None:
                holding.set()
            if isinstance(message, p.FrameResult):
                frames += 1
                if first is None:
                    first = time.perf_counter() - started
            elif isinstance(message, p.Error):
                return Job(first, time.perf_counter() - started, frames, error=message.code)
            elif isinstance(message, p.Done):
                return Job(first, time.perf_counter() - started, frames, probs=face_probs(message.report.to_json()))
    except ClientError as err:  # the conversation broke (refused, reset): a result of the load, recorded
        return Job(first, time.perf_counter() - started, frames, error=f"client {err.code}: {err}")
    finally:
        if holding is not None:
            holding.set()
    return Job(first, time.perf_counter() - started, frames, error="no_done")


async def run_load(
    url: str, clip: Path, every_s: float, clients: int, extra: int
) -> tuple[list[Job], list[Job], float]:
    """``clients`` jobs at once; once each holds its slot, ``extra`` more. Returns (loaded jobs, extra jobs,
    wall seconds of the loaded jobs)."""
    started = time.perf_counter()
    held = [asyncio.Event() for _ in range(clients)]
    loaded = [asyncio.create_task(run_job(url, clip, every_s, h)) for h in held]
    await asyncio.gather(*(h.wait() for h in held))
    extras = await asyncio.gather(*(run_job(url, clip, every_s) for _ in range(extra)))
    jobs = await asyncio.gather(*loaded)
    return list(jobs), list(extras), time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The figures ``python -m bench.load`` prints and writes (seconds, frames/s)."""

    clip: str
    every_s: float
    max_jobs: int
    max_queue: int
    clients: int
    completed: int
    identical: int  # loaded reports equal to the solo one to PROB_TOLERANCE
    max_prob_diff: float
    extra: int
    extra_busy: int
    extra_other: list[str]
    solo_first_frame_s: float
    solo_frames_per_s: float
    first_frame_p50_s: float
    first_frame_p95_s: float
    total_frames_per_s: float
    busy_processes: int
    quiet_frames_per_s: list[float]
    contended_frames_per_s: list[float]
    contention_ratio: float
    thread_settings: dict[str, str]
    wall_s: float

    def table(self) -> str:
        rows = [
            ("solo: first frame", f"{self.solo_first_frame_s:.2f} s"),
            ("solo: throughput", f"{self.solo_frames_per_s:.2f} frames/s"),
            (f"{self.clients} clients: completed", f"{self.completed}/{self.clients}"),
            (f"{self.clients} clients: reports = solo (1e-6)", f"{self.identical}/{self.clients}"),
            (f"{self.clients} clients: max |Δ fake_prob|", f"{self.max_prob_diff:.2e}"),
            (f"{self.clients} clients: first frame p50", f"{self.first_frame_p50_s:.2f} s"),
            (f"{self.clients} clients: first frame p95", f"{self.first_frame_p95_s:.2f} s"),
            (f"{self.clients} clients: total throughput", f"{self.total_frames_per_s:.2f} frames/s"),
            (f"+{self.extra} past capacity: busy", f"{self.extra_busy}/{self.extra}"),
            (f"beside {self.busy_processes} busy processes ÷ quiet", f"{self.contention_ratio:.2f}"),
        ]
        width = max(len(k) for k, _ in rows)
        head = (
            f"load: {self.clip}, 1 frame every {self.every_s:g} s, capacity {self.max_jobs} + {self.max_queue} queued"
        )
        return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _thread_settings() -> dict[str, str]:
    """The thread settings the server process runs with: the user's, else what ``dff`` adds at its entry."""
    from pipeline.threads import entry_thread_environment

    env = {**entry_thread_environment(os.environ), **os.environ}
    return {k: env[k] for k in ("OMP_WAIT_POLICY", "DFF_TORCH_THREADS") if k in env}


def measure(
    clip: Path,
    checkpoint: Path,
    *,
    clients: int = 8,
    extra: int = 4,
    every_s: float = 1.0,
    busy: int = 2,
    rounds: int = 2,
    timeout_s: float = 900.0,
) -> LoadResult:
    """Run the three phases of the module docstring against a fresh ``dff serve``."""
    from bench.contention import busy_processes
    from bench.serve import served

    max_jobs = max(1, clients // 2)
    max_queue = clients - max_jobs
    # every client is 127.0.0.1: lift the per-client cap so capacity is the server's, not one client's share
    env = {"DFF_MAX_JOBS": str(max_jobs), "DFF_MAX_QUEUE": str(max_queue), "DFF_MAX_JOBS_PER_CLIENT": "0"}

    def bounded(coro):  # every phase has a deadline: a hang is a failure, not a stuck benchmark
        return asyncio.run(asyncio.wait_for(coro, timeout_s))

    t0 = time.perf_counter()
    with served(checkpoint, env) as (_, url):
        bounded(run_job(url, clip, every_s))  # warm-up: first calls build kernels
        solo = bounded(run_job(url, clip, every_s))
        if solo.error is not None:
            raise RuntimeError(f"the solo job failed: {solo.error}")
        jobs, extras, load_wall = bounded(run_load(url, clip, every_s, clients, extra))
        quiet, contended = [], []
        for _ in range(rounds):
            quiet.append(_fps(bounded(run_job(url, clip, every_s))))
            with busy_processes(busy):
                contended.append(_fps(bounded(run_job(url, clip, every_s))))
    done = [j for j in jobs if j.error is None]
    diffs = [max_prob_difference(solo, j) for j in done]
    firsts = [j.first_frame_s for j in done if j.first_frame_s is not None]
    return LoadResult(
        clip=clip.name,
        every_s=every_s,
        max_jobs=max_jobs,
        max_queue=max_queue,
        clients=clients,
        completed=len(done),
        identical=sum(d <= PROB_TOLERANCE for d in diffs),
        max_prob_diff=max(diffs, default=math.nan),
        extra=extra,
        extra_busy=sum(j.error == "busy" for j in extras),
        extra_other=[j.error or "completed" for j in extras if j.error != "busy"],
        solo_first_frame_s=solo.first_frame_s or math.nan,
        solo_frames_per_s=_fps(solo),
        first_frame_p50_s=percentile(firsts, 50),
        first_frame_p95_s=percentile(firsts, 95),
        total_frames_per_s=sum(j.frames for j in done) / load_wall,
        busy_processes=busy,
        quiet_frames_per_s=quiet,
        contended_frames_per_s=contended,
        contention_ratio=statistics.median(contended) / statistics.median(quiet),
        thread_settings=_thread_settings(),
        wall_s=time.perf_counter() - t0,
    )


def _fps(job: Job) -> float:
    if job.error is not None:
        raise RuntimeError(f"a reference job failed: {job.error}")
    return job.frames / job.done_s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8, help="clients at once = the server's capacity (default 8)")
    ap.add_argument("--extra", type=int, default=4, help="clients past capacity, each must get busy (default 4)")
    ap.add_argument("--busy", type=int, default=2, help="spinning processes in the contention phase (default 2)")
    ap.add_argument("--rounds", type=int, help="quiet/contended pairs (default 3; quick 1)")
    ap.add_argument("--every-s", type=float, help="sampling interval (default 1 s; quick 0.5 s)")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="deadline of each phase (default 900 s)")
    ap.add_argument("--quick", action="store_true", help="the tiny clip, one contention round (smoke test)")
    ap.add_argument("--out", type=Path, help=f"write the JSON here (default {RESULTS_DIR}/<date>-<host>-load.json)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from bench.media import make_clip
    from bench.weights import calibrated_checkpoint

    cache = bench_cache()
    clip = make_clip(CLIP_QUICK if args.quick else CLIP_720P, cache)
    result = measure(
        clip,
        calibrated_checkpoint(cache),
        clients=args.clients,
        extra=args.extra,
        every_s=args.every_s or (0.5 if args.quick else 1.0),
        busy=args.busy,
        rounds=args.rounds or (1 if args.quick else 3),
        timeout_s=args.timeout_s,
    )
    print(result.table())
    if not args.no_write:
        from bench.report import results_header, results_path, write_json

        out = write_json(args.out or results_path("load", args.quick), {**results_header(args.quick), **asdict(result)})
        print(f"bench.load: wrote {out}")
    ok = result.completed == result.clients == result.identical and result.extra_busy == result.extra
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
