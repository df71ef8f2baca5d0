"""Streaming numbers: ``python -m bench.serve [--clients 4] [--repeats 3] [--quick]``.

Starts the real service (``dff serve``, its own process, on a free port) with the bench's calibrated
checkpoint and, on the bench's generated clip (720p30, 10 s, 3 faces; 1 sample/s unless ``--every-s``):

1. latency: seconds from the start of the upload to the first ``frame`` message, one client at a time
   (an upper bound of "end of upload -> first frame": on localhost the upload itself takes milliseconds);
2. throughput: frames/s with 1 client, then in total with N clients at once (one model serves all).

Prints a small table and one JSON line; writes nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.config import CLIP_720P, CLIP_QUICK, bench_cache
from bench.media import make_clip
from bench.weights import calibrated_checkpoint
from stream import protocol as p
from ui.client import analyze_file

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class ClientRun:
    """One client's analysis as it saw it (seconds from the ``start`` message)."""

    first_frame_s: float
    done_s: float
    frames: int


async def _one(url: str, clip: Path, every_s: float) -> ClientRun:
    started = time.perf_counter()
    first = None
    frames = 0
    async for message in analyze_file(clip, url, options=p.Options(every_s=every_s)):
        if isinstance(message, p.FrameResult):
            frames += 1
            if first is None:
                first = time.perf_counter() - started
        elif isinstance(message, p.Error):
            raise RuntimeError(f"the server refused the job: {message.code}: {message.message}")
    if first is None:
        raise RuntimeError("the job streamed no frame")
    return ClientRun(first, time.perf_counter() - started, frames)


async def _many(url: str, clip: Path, every_s: float, n: int) -> tuple[list[ClientRun], float]:
    started = time.perf_counter()
    runs = await asyncio.gather(*(_one(url, clip, every_s) for _ in range(n)))
    return list(runs), time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dff serve exited with {proc.returncode}")
        try:
            with _NO_PROXY.open(f"{base}/healthz", timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("dff serve did not become ready")


@contextmanager
def served(checkpoint: Path, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """``dff serve`` with ``checkpoint`` in its own process on a free loopback port and a temporary data
    directory, ready (``/healthz`` ok); yields ``(http base, websocket url)``; terminated (then killed,
    after 60 s) at the end. ``env``: extra variables for the server (``DFF_MAX_JOBS``...)."""
    port = _free_port()
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/analyze"
    with tempfile.TemporaryDirectory(prefix="dff-bench-serve-") as data:
        cmd = [sys.executable, "-m", "ui.cli", "serve", "--port", str(port), "--checkpoint", str(checkpoint),
               "--data-dir", data, "--log-level", "warning"]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
        try:
            _wait_ready(base, proc)
            yield base, url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(clip: Path, checkpoint: Path, *, clients: int, repeats: int, every_s: float) -> dict[str, object]:
    """Run the service in a child process and measure latency and 1-vs-N throughput against it."""
    # one loopback address for every client: lift the per-client cap, keep room for all of them
    env = {"DFF_MAX_JOBS": str(max(4, clients)), "DFF_MAX_QUEUE": str(clients), "DFF_MAX_JOBS_PER_CLIENT": "0"}
    with served(checkpoint, env) as (_, url):
        asyncio.run(_one(url, clip, every_s))  # warm-up: first-call kernel setup is not the service's steady state
        solo = [asyncio.run(_one(url, clip, every_s)) for _ in range(repeats)]
        group, group_wall = asyncio.run(_many(url, clip, every_s, clients))
    solo_fps = statistics.median(r.frames / r.done_s for r in solo)
    return {
        "clip": clip.name,
        "every_s": every_s,
        "first_frame_s": [round(r.first_frame_s, 3) for r in solo],
        "first_frame_s_median": round(statistics.median(r.first_frame_s for r in solo), 3),
        "solo_frames_per_s": round(solo_fps, 2),
        "clients": clients,
        "group_frames_per_s_total": round(sum(r.frames for r in group) / group_wall, 2),
        "group_first_frame_s": [round(r.first_frame_s, 3) for r in group],
        "group_runs": [asdict(r) for r in group],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4, help="clients at once in the throughput run (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="solo runs for the latency median (default 3)")
    ap.add_argument("--every-s", type=float, default=1.0, help="sampling interval (default 1 s)")
    ap.add_argument("--quick", action="store_true", help="the tiny clip (smoke test)")
    args = ap.parse_args(argv)
    cache = bench_cache()
    clip = make_clip(CLIP_QUICK if args.quick else CLIP_720P, cache)
    result = measure(
        clip, calibrated_checkpoint(cache), clients=args.clients, repeats=args.repeats, every_s=args.every_s
    )
    print(f"{result['clip']}, 1 frame every {args.every_s:g} s")
    print(f"  start of upload -> first frame: {result['first_frame_s_median']} s (median of {args.repeats})")
    print(f"  1 client:  {result['solo_frames_per_s']} frames/s")
    print(f"  {args.clients} clients: {result['group_frames_per_s_total']} frames/s in total")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
