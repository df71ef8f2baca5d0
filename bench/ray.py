"""The Ray scale-out rows: ``python -m bench.ray [--quick] [--rounds N] [--no-write] [--out PATH]``.

Against the real service (``dff serve``, each configuration its own server process on a free loopback
port, started once; nothing else is reached), on the bench's generated clip (720p30, 10 s, 3 faces, 1
sample/s; ``--quick``: the 2-s 360p clip at 2 samples/s, one round) and a photo of it (its first frame as
a JPEG: the same 3 faces). Every server allows 4 running + 4 queued jobs and no per-client cap (all
clients are 127.0.0.1). A Ray server starts a Ray of its own inside its process (no ``DFF_RAY_ADDRESS``;
``RAY_ADDRESS=local``, see ``ray_env``) and is used once every actor is alive. Each server first gets
untimed warm-up jobs (a video and a photo per actor, at once). The rows (seconds from the start of each
upload; medians over the rounds):

1. **one job, local vs Ray**: ``local`` (the in-process worker, torch on both cores) vs ``ray`` (one actor
   reserving both CPUs, so its torch runs as many threads: the difference is Ray's path, not compute).
   One client at a time: first-frame latency and the job's frames/s;
2. **4 jobs at once, 1 vs 2 actors** of one CPU each (``1 actor``, ``2 actors``): total frames/s (all
   frames ÷ the wall time of the 4), first frame p50/p95 over the 4 clients;
3. **cross-job batching on vs off** on one actor of one CPU (``1 actor`` vs ``unbatched``:
   ``DFF_RAY_SHARED_BATCHES=on``/``off``): the 4 videos (row 2's 1-actor runs, reused), with done p50/p95
   too; and 8 photos at once (the server's whole capacity: 4 run, 4 queue): photos/s, latency p50/p95.

Side by side: row 1's two servers are up together, then rows 2-3's three (started one after another); in
every round each configuration runs the workload in turn, the order rotating round by round, so only one
server is busy at any moment and the drifts of a shared machine hit all alike. Every report must equal
the solo local one (per-face fake_prob to 1e-6). Every phase has a deadline (``--timeout-s``). Prints a
table, writes ``bench/results/<date>-<host>-ray[-quick].json`` (``--no-write``: print only); exit status 0
only when every job completed with the reference report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench.config import CLIP_720P, CLIP_QUICK, RESULTS_DIR, bench_cache
from bench.load import Job, run_job
from bench.ray_rows import PHOTOS, SOLO, VIDEOS, WORKLOADS, Row, Sample, all_good, summarise, table

T = TypeVar("T")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
WORKERS_TIMEOUT_S = 180.0  # a Ray server's actors must all be alive this long after /healthz said ok

# every server: 4 running + 4 waiting, no per-client cap (every client is 127.0.0.1)
CAPACITY = {"DFF_MAX_JOBS": "4", "DFF_MAX_QUEUE": "4", "DFF_MAX_JOBS_PER_CLIENT": "0"}


def ray_env(actors: int, cpus: int, shared_batches: bool = True) -> dict[str, str]:
    """A Ray server's variables: a local Ray of its own, ``actors`` actors reserving ``cpus`` CPUs each."""
    return {
        "DFF_BACKEND": "ray",
        "DFF_RAY_ACTORS": str(actors),
        "DFF_RAY_ACTOR_CPUS": str(cpus),
        "DFF_RAY_SHARED_BATCHES": "on" if shared_batches else "off",
        # DFF_RAY_ADDRESS unset means ray.init(address=None), which joins the cluster named in
        # /tmp/ray/ray_current_cluster when there is one (`ray start`, a test's ray.cluster_utils.Cluster,
        # even a stale one); "local" makes Ray start a fresh instance in the server, whatever else runs here
        "RAY_ADDRESS": "local",
    }


ROW1 = {"local": {"DFF_BACKEND": "local"}, "ray": ray_env(1, 2)}
ROW23 = {"1 actor": ray_env(1, 1), "2 actors": ray_env(2, 1), "unbatched": ray_env(1, 1, shared_batches=False)}
REFERENCE = {"video": SOLO, "photo": PHOTOS}  # each kind of input's solo local job is the reference
ROWS = (
    Row("1. one job: local vs ray (1 actor, 2 CPUs)", SOLO, "local", "ray",
        ("first_frame_p50_s", "per_s", "identical")),
    Row("2. 4 jobs: 1 vs 2 actors (1 CPU each)", VIDEOS, "1 actor", "2 actors",
        ("per_s", "first_frame_p50_s", "first_frame_p95_s", "identical")),
    Row("3. 4 jobs on 1 actor: batching", VIDEOS, "1 actor", "unbatched",
        ("per_s", "first_frame_p50_s", "first_frame_p95_s", "done_p50_s", "done_p95_s", "identical"), ("on", "off")),
    Row("3. 8 photos on 1 actor: batching", PHOTOS, "1 actor", "unbatched",
        ("per_s", "done_p50_s", "done_p95_s", "identical"), ("on", "off")),
)  # fmt: skip


def make_photo(clip: Path, cache_dir: Path) -> Path:
    """``cache_dir/<clip>-photo.jpg``: the clip's first frame as a JPEG (quality 95), made once."""
    import av

    path = cache_dir / f"{clip.stem}-photo.jpg"
    if not path.is_file():
        with av.open(str(clip)) as container:
            image = next(container.decode(video=0)).to_image()
        tmp = path.with_suffix(".part.jpg")
        image.save(tmp, quality=95)
        tmp.replace(path)
    return path


def _workers(base: str) -> list[str]:
    with _NO_PROXY.open(f"{base}/healthz", timeout=5) as r:
        return [w["state"] for w in json.loads(r.read()).get("workers", [])]


def _wait_workers(base: str, actors: int, timeout_s: float = WORKERS_TIMEOUT_S) -> None:
    """Until ``/healthz`` lists ``actors`` actors, every one alive (a Ray server is ready with its first)."""
    deadline = time.monotonic() + timeout_s
    while (states := _workers(base)) != ["alive"] * actors:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base}: actors {states} after {timeout_s:.0f} s, want {actors} alive")
        time.sleep(0.5)


@contextmanager
def servers(checkpoint: Path, configs: Mapping[str, Mapping[str, str]]) -> Iterator[dict[str, str]]:
    """Every configuration's ``dff serve`` (bench/serve.py's ``served``), ready (a Ray one: every actor alive);
    yields ``{config: websocket url}``; all stopped at the end. Started one after another (on a shared
    2-core machine Ray servers starting together missed ``served``'s 120-s readiness limit), each given a
    second try."""
    from bench.serve import served

    def start(stack: ExitStack, env: Mapping[str, str]) -> tuple[str, str]:
        try:
            return stack.enter_context(served(checkpoint, {**CAPACITY, **env}))
        except RuntimeError:  # not ready in time on a busy machine (startup is not measured): once more
            return stack.enter_context(served(checkpoint, {**CAPACITY, **env}))

    with ExitStack() as stack:
        bases, urls = {}, {}
        for name, env in configs.items():
            bases[name], urls[name] = start(stack, env)
        for name, env in configs.items():  # the later actors came up while the next server started
            _wait_workers(bases[name], int(env["DFF_RAY_ACTORS"]) if env["DFF_BACKEND"] == "ray" else 0)
        yield urls


async def _jobs(url: str, path: Path, every_s: float, n: int) -> tuple[list[Job], float]:
    started = time.perf_counter()
    jobs = await asyncio.gather(*(run_job(url, path, every_s) for _ in range(n)))
    return list(jobs), time.perf_counter() - started


def rotated(names: Sequence[str], r: int) -> list[str]:
    """``names`` starting at the ``r``-th (round ``r``'s order: each configuration goes first in turn)."""
    k = r % len(names)
    return [*names[k:], *names[:k]]


class Bench:
    """The runs of one ``python -m bench.ray``: every phase under ``timeout_s``, the samples collected."""

    def __init__(self, clip: Path, photo: Path, every_s: float, timeout_s: float, log: Any = print) -> None:
        self.inputs = {SOLO: clip, VIDEOS: clip, PHOTOS: photo}
        self.every_s, self.timeout_s, self._log = every_s, timeout_s, log
        self.samples: list[Sample] = []
        self._t0 = time.perf_counter()

    def log(self, message: str) -> None:
        self._log(f"[{time.perf_counter() - self._t0:5.0f} s] {message}")

    def bounded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` with a deadline: a hang is a failure, not a stuck benchmark."""
        return asyncio.run(asyncio.wait_for(coro, self.timeout_s))

    def jobs(self, url: str, workload: str, n: int | None = None) -> tuple[list[Job], float]:
        n = WORKLOADS[workload] if n is None else n
        return self.bounded(_jobs(url, self.inputs[workload], self.every_s, n))

    def warm_up(self, urls: Mapping[str, str], configs: Mapping[str, Mapping[str, str]]) -> None:
        """Untimed: one video and one photo job per actor at once (first calls build kernels)."""
        self.log(f"servers ready; warming up {', '.join(urls)}")
        for name, url in urls.items():
            n = int(configs[name].get("DFF_RAY_ACTORS", "1"))
            for workload in (SOLO, PHOTOS):
                jobs, _ = self.jobs(url, workload, n)
                if any(j.error for j in jobs):
                    raise RuntimeError(f"{name}: a warm-up job failed: {[j.error for j in jobs]}")

    def round(self, urls: Mapping[str, str], workload: str, names: Sequence[str], r: int) -> None:
        """Round ``r`` of ``workload``: once on each of ``names`` in turn, in ``rotated`` order."""
        for name in rotated(names, r):
            jobs, wall_s = self.jobs(urls[name], workload)
            self.samples.append(Sample(name, workload, r, wall_s, tuple(jobs)))
            errors = [j.error for j in jobs if j.error]
            self.log(f"round {r + 1}: {name:<9} {workload:<8} {wall_s:6.2f} s {errors or ''}")


def measure(
    clip: Path, photo: Path, checkpoint: Path, *, every_s: float, rounds: int, timeout_s: float, log: Any = print
) -> dict[str, Any]:
    """Both phases of the module docstring; returns the JSON body (reference, summaries, samples)."""
    t0 = time.perf_counter()
    bench = Bench(clip, photo, every_s, timeout_s, log)
    bench.log(f"starting {', '.join(ROW1)}")
    with servers(checkpoint, ROW1) as urls:
        bench.warm_up(urls, ROW1)
        reference = {kind: bench.jobs(urls["local"], workload, 1)[0][0] for kind, workload in REFERENCE.items()}
        for kind, job in reference.items():
            if job.error is not None:
                raise RuntimeError(f"the solo local {kind} job (the reference) failed: {job.error}")
        for r in range(rounds):
            bench.round(urls, SOLO, list(ROW1), r)
    bench.log(f"starting {', '.join(ROW23)}")
    with servers(checkpoint, ROW23) as urls:
        bench.warm_up(urls, ROW23)
        for r in range(rounds):  # a round of each workload in turn, so that the rows share a round's noise
            bench.round(urls, VIDEOS, list(ROW23), r)
            bench.round(urls, PHOTOS, ["1 actor", "unbatched"], r)
    summaries = summarise(bench.samples, reference)
    facts = {k: {"frames": j.frames, "faces": len(j.probs), "done_s": j.done_s} for k, j in reference.items()}
    return {
        "clip": clip.name,
        "photo": photo.name,
        "every_s": every_s,
        "rounds": rounds,
        "configs": {name: {**CAPACITY, **env} for name, env in {**ROW1, **ROW23}.items()},
        "reference": facts,
        "ok": all_good(summaries),
        "summaries": summaries,
        "samples": [s.to_json() for s in bench.samples],
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ray", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, help="rounds of every workload (default 3; quick 1)")
    ap.add_argument("--every-s", type=float, help="sampling interval (default 1 s; quick 0.5 s)")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="deadline of each phase (default 600 s)")
    ap.add_argument("--quick", action="store_true", help="the tiny clip, one round (smoke test)")
    ap.add_argument("--out", type=Path, help=f"write the JSON here (default {RESULTS_DIR}/<date>-<host>-ray.json)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from dataclasses import asdict

    from bench.media import make_clip
    from bench.report import results_header, results_path, write_json
    from bench.weights import calibrated_checkpoint

    cache = bench_cache()
    clip = make_clip(CLIP_QUICK if args.quick else CLIP_720P, cache)
    every_s = args.every_s or (0.5 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 3)
    photo = make_photo(clip, cache)
    result = measure(
        clip, photo, calibrated_checkpoint(cache), every_s=every_s, rounds=rounds, timeout_s=args.timeout_s
    )
    head = (
        f"ray: {clip.name} (1 frame every {every_s:g} s) and {photo.name}; 4 running + 4 queued per server; "
        f"medians of {rounds} round(s); {result['wall_s']:.0f} s in all"
    )
    print(table(ROWS, result["summaries"], head))
    result["summaries"] = [asdict(s) for s in result["summaries"]]
    if not args.no_write:
        out = write_json(args.out or results_path("ray", args.quick), {**results_header(args.quick), **result})
        print(f"bench.ray: wrote {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
