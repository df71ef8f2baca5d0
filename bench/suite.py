"""What runs when: the side-by-side rounds on the generated clip, the shared media, the fresh-process
memory runs, and the targets P1-P5 computed from them.

Each round runs every measurement once, back to back, so a ratio compares numbers taken seconds apart on
the same (shared, noisy) CPU; rounds repeat and every reported number is the median over rounds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from bench.child import ChildResult, run_child
from bench.config import BenchConfig, bench_cache
from bench.measure import (
    DecodeResult,
    PipelineResult,
    batch_sizes,
    classifier_only,
    decode_limit,
    measure_peak,
    mode_settings,
    run_pipeline,
    sample_crops,
)
from bench.media import loop_clip, make_clip, shared_videos
from bench.naive import NaiveLoop, NaiveResult
from bench.precision import Agreement, agreement, describe, labelled_images, summary
from bench.report import Row, Target, format_table, format_targets, median, summarise, write_json
from bench.weights import calibrated_checkpoint
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.types import SampleMode

T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[T, float, float, float]:
    """``fn()``, wall seconds, CPU cores used (process CPU s ÷ wall s), peak RSS MiB inside the call."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with measure_peak() as peak:
        value = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return value, wall, cpu / wall if wall > 0 else 0.0, peak.mib


def _decode_rows(name: str, rep: int, dec: DecodeResult) -> list[Row]:
    return [
        Row(name, "decode (PyAV, no RGB)", rep, dec.frames, 0, dec.raw_s, {"decode": dec.raw_s}),
        Row(name, "decode + RGB", rep, dec.frames, 0, dec.rgb_s, {"decode": dec.rgb_s}),
    ]


def _naive_row(name: str, rep: int, res: NaiveResult, cores: float, peak: float) -> Row:
    return Row(
        name,
        "naive",
        rep,
        res.frames,
        res.faces,
        res.wall_s,
        dict(res.seconds),
        peak,
        cores,
        {"mean_fake_prob": median(res.fake_probs)},
    )


def _pipeline_row(name: str, run: str, rep: int, res: PipelineResult, cores: float, peak: float, s: Settings) -> Row:
    sizes = batch_sizes(res.faces_per_frame, s)
    return Row(
        name,
        run,
        rep,
        res.frames,
        res.faces,
        res.wall_s,
        dict(res.seconds),
        peak,
        cores,
        {
            "first_verdict_s": res.first_verdict_s,
            "video_s": res.video_s,
            "video_s_per_wall_s": res.realtime,
            "classify_batches": dict(Counter(sizes)),
            "mean_fake_prob": median(res.fake_probs),
        },
    )


def _child_row(name: str, rep: int, res: ChildResult) -> Row:
    return Row(
        name,
        "pipeline 1/s, fresh process",
        rep,
        res.frames,
        res.faces,
        res.wall_s,
        {},
        res.peak_rss_mib,
        None,
        {
            "first_verdict_s_cold": res.first_verdict_s,
            "video_s": res.video_s,
            "video_s_per_wall_s": res.realtime,
            "rss_after_open_mib": res.rss_after_open_mib,
            "engine_open_s": res.open_s,
        },
    )


def _p2_note(p2_cpu: list[tuple[float, float]]) -> str:
    """How much CPU the P2 runs got: on a shared machine the wall-clock ratio says more about the neighbours."""
    per_cpu_s = median(v for v, _ in p2_cpu)
    cores = median(c for _, c in p2_cpu)
    if per_cpu_s is None or cores is None:
        return ""
    return f"got {cores:.2f} of {os.cpu_count()} cores; {per_cpu_s:.2f} video s per process CPU-second"


def _machine(device: torch.device, engine_precision: str) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "device": str(device),
        "precision": engine_precision,
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def run_suite(cfg: BenchConfig) -> dict[str, Any]:
    """Run everything ``cfg`` asks for, print the table and targets, write the JSON; returns the payload."""
    log = cfg.log
    load_start = os.getloadavg()
    base = Settings.from_env()
    cache = bench_cache(cfg.cache_dir)
    t_setup = time.perf_counter()
    ckpt = calibrated_checkpoint(cache)
    clip = make_clip(cfg.clip, cache)
    settings = dataclasses.replace(base, checkpoint=ckpt)
    s_all = mode_settings(settings, SampleMode.ALL, max_frames=cfg.all_frames)
    s_1s = mode_settings(settings, SampleMode.EVERY_S, every_s=1.0)
    engine = Engine.open(settings)
    device = torch.device(engine.info.device)
    # the same model in fp32 beside the service's precision: speed and verdicts compared on the same inputs
    ref = Engine.open(dataclasses.replace(settings, precision="fp32")) if engine.info.precision != "fp32" else None
    agreements: list[Agreement] = []
    p2_fp32: list[float] = []
    naive = NaiveLoop(ckpt, device, min_face_px=20, prob_floor=settings.detect_prob_floor)
    log(f"bench: setup {time.perf_counter() - t_setup:.1f} s (cache {cache}, device {device})")
    notes: list[str] = []
    if device.type != "cuda":
        notes.append("no GPU on this machine: CPU numbers only (no GPU numbers were measured)")
        if not os.environ.get("OMP_WAIT_POLICY") and (os.cpu_count() or 1) <= 4:
            notes.append(
                "OMP_WAIT_POLICY is unset: torch's OpenMP threads spin while they wait; on a CPU shared with "
                "other busy processes that made the same forward pass 3-20x slower (OMP_WAIT_POLICY=PASSIVE "
                "avoids it), on an otherwise idle CPU the default was the faster one"
            )
    rows: list[Row] = []
    samples: dict[str, list[float]] = {"P1": [], "P2": [], "P3": [], "P5": []}
    p2_cpu: list[tuple[float, float]] = []  # (video s per process CPU s, cores the run got)
    try:
        # untimed warm-up: first calls build oneDNN kernels and allocator pools
        run_pipeline(clip, engine, mode_settings(settings, SampleMode.ALL, max_frames=2))
        naive.run(clip, 1)
        crops = sample_crops(clip, engine, settings, settings.classify_batch)
        name = clip.name
        for rep in range(cfg.repeats):
            log(f"bench: round {rep + 1}/{cfg.repeats} on {name}")
            rows += _decode_rows(name, rep, decode_limit(clip))
            nres, _, cores, peak = _timed(lambda: naive.run(clip, cfg.naive_frames))
            rows.append(_naive_row(name, rep, nres, cores, peak))
            pall, _, cores, peak = _timed(lambda: run_pipeline(clip, engine, s_all))
            rows.append(_pipeline_row(name, "pipeline all frames", rep, pall, cores, peak, s_all))
            p1s, _, cores, peak = _timed(lambda: run_pipeline(clip, engine, s_1s))
            rows.append(_pipeline_row(name, "pipeline 1/s", rep, p1s, cores, peak, s_1s))
            if cores > 0:
                p2_cpu.append((p1s.realtime / cores, cores))
            if ref is not None:
                p1r, _, cores, peak = _timed(lambda: run_pipeline(clip, ref, s_1s))
                rows.append(_pipeline_row(name, "pipeline 1/s, fp32", rep, p1r, cores, peak, s_1s))
                p2_fp32.append(p1r.realtime)
                if rep == 0:
                    agreements.append(agreement(name, p1r, p1s))
            sizes = batch_sizes(pall.faces_per_frame, s_all)
            # the batch size that scored the most faces in the every-frame run
            batch = max(Counter(sizes).items(), key=lambda kv: kv[0] * kv[1])[0] if sizes else settings.classify_batch
            clf, _, cores, peak = _timed(lambda b=batch: classifier_only(engine, crops, b, cfg.classifier_s))
            rows.append(
                Row(
                    name,
                    f"classifier only, batch {batch}",
                    rep,
                    0,
                    clf.faces,
                    clf.wall_s,
                    {"classify": clf.wall_s},
                    peak,
                    cores,
                    {"batch": batch},
                )
            )
            if nres.fps > 0:
                samples["P1"].append(pall.fps / nres.fps)
            samples["P2"].append(p1s.realtime)
            if p1s.first_verdict_s is not None:
                samples["P3"].append(p1s.first_verdict_s)
            if clf.faces_per_s > 0 and pall.faces:
                samples["P5"].append(pall.faces_per_s / clf.faces_per_s)
        for video in shared_videos(cfg.media_dir):
            log(f"bench: {video.name}")
            try:
                dec = decode_limit(video)
                rows += _decode_rows(video.name, 0, dec)
                nres, _, cores, peak = _timed(lambda v=video: naive.run(v, cfg.naive_frames))
                rows.append(_naive_row(video.name, 0, nres, cores, peak))
                pall, _, cores, peak = _timed(lambda v=video: run_pipeline(v, engine, s_all))
                rows.append(_pipeline_row(video.name, "pipeline all frames", 0, pall, cores, peak, s_all))
                p1s, _, cores, peak = _timed(lambda v=video: run_pipeline(v, engine, s_1s))
                rows.append(_pipeline_row(video.name, "pipeline 1/s", 0, p1s, cores, peak, s_1s))
                if ref is not None:
                    p1r, _, cores, peak = _timed(lambda v=video: run_pipeline(v, ref, s_1s))
                    rows.append(_pipeline_row(video.name, "pipeline 1/s, fp32", 0, p1r, cores, peak, s_1s))
                    agreements.append(agreement(video.name, p1r, p1s))
            except Exception as err:  # one bad file must not sink the benchmark; it is reported
                notes.append(f"{video.name}: {type(err).__name__}: {err}")
        if cfg.media_dir is not None and not shared_videos(cfg.media_dir):
            notes.append(f"no shared media at {cfg.media_dir}: only the generated clip was measured")
        if ref is not None:
            images = labelled_images(cfg.labelled_dir)
            log(f"bench: precision check on {len(images)} labelled frames")
            for image in images:
                low_run, ref_run = run_pipeline(image, engine, settings), run_pipeline(image, ref, settings)
                agreements.append(agreement(f"{image.parent.name}/{image.name}", ref_run, low_run))
    finally:
        naive.close()
        engine.close()
        if ref is not None:
            ref.close()
    precision = summary(engine.info.precision, agreements) if ref is not None else None
    if precision is not None:
        notes.append(describe(precision))
        notes.append(
            f"P2 with the trunk in fp32 (same rounds): {median(p2_fp32):.2f}x real time; "
            f"the pipeline rows run at precision {engine.info.precision}"
        )

    p4: list[float] = []
    cold: list[float] = []
    if cfg.rss:
        short = loop_clip(clip, cfg.short_repeats, cache / f"{clip.stem}-x{cfg.short_repeats}.mp4")
        long = loop_clip(clip, cfg.long_repeats, cache / f"{clip.stem}-x{cfg.long_repeats}.mp4")
        short_peaks = []
        for rep in range(cfg.rss_repeats):
            log(f"bench: fresh process {rep + 1}/{cfg.rss_repeats}, {short.name}")
            res = run_child(short, ckpt)
            rows.append(_child_row(short.name, rep, res))
            short_peaks.append(res.peak_rss_mib)
            if res.first_verdict_s is not None:
                cold.append(res.first_verdict_s)
        log(f"bench: fresh process, {long.name} ({cfg.long_repeats}x the clip)")
        res = run_child(long, ckpt)
        rows.append(_child_row(long.name, 0, res))
        p4.append(res.peak_rss_mib / (median(short_peaks) or float("nan")))
        notes.append(
            f"P4 and the cold first-frame time come from fresh processes running analyze() at 1 sample/s with "
            f"max_frames=None on the clip played {cfg.short_repeats}x and {cfg.long_repeats}x (remuxed, same frames)"
        )

    long_s = cfg.clip.seconds * cfg.long_repeats
    short_s = cfg.clip.seconds * cfg.short_repeats
    long_name = f"{long_s / 60:g}-min" if long_s >= 60 else f"{long_s:g}-s"
    targets = [
        Target(
            "P1",
            f"pipeline ÷ naive frames/s, every frame, {cfg.clip.width}×{cfg.clip.height}, {cfg.clip.n_faces} faces",
            5.0,
            True,
            tuple(samples["P1"]),
            note=f"naive on the first {cfg.naive_frames} frames, pipeline on the first {cfg.all_frames}",
        ),
        Target(
            "P2", "video seconds per wall second at 1 sample/s", 4.0, True, tuple(samples["P2"]), note=_p2_note(p2_cpu)
        ),
        Target(
            "P3",
            "analyze() call -> first FrameVerdict, warm engine, 1 sample/s",
            1.0,
            False,
            tuple(samples["P3"]),
            unit=" s",
            note=f"cold (fresh process): {median(cold):.2f} s" if cold else "",
        ),
        Target("P4", f"peak RSS {long_name} clip ÷ {short_s:g}-s clip", 1.1, False, tuple(p4)),
        Target("P5", "pipeline faces/s ÷ classifier-only faces/s at the same batch", 0.4, True, tuple(samples["P5"])),
    ]
    payload: dict[str, Any] = {
        "schema": 1,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "machine": {
            **_machine(device, engine.info.precision),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()},
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items() if k != "log"},
        "clip": dataclasses.asdict(cfg.clip),
        "summary": summarise(rows),
        "targets": [t.to_json() for t in targets],
        "rows": [r.to_json() for r in rows],
        "notes": notes,
        "precision_check": precision,
    }
    log("")
    log(format_table(rows))
    log("")
    log(format_targets(targets))
    for note in notes:
        log(f"note: {note}")
    if cfg.out_dir is not None:
        host = socket.gethostname().split(".")[0] or "host"
        name = f"{dt.date.today().isoformat()}-{host}{'-quick' if cfg.quick else ''}.json"
        path = write_json(cfg.out_dir / name, payload)
        log(f"bench: wrote {path}")
        payload["path"] = str(path)
    return payload
