"""``dff scan`` (analyse files on this machine) and ``dff client`` (stream a file to a running server),
with the Settings both build from their flags. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def settings_from_args(args: argparse.Namespace):  # -> pipeline.config.Settings
    from pipeline.config import Settings
    from pipeline.types import SampleMode, Strategy

    mode = None
    if args.every_s is not None:
        mode = SampleMode.EVERY_S
    elif args.count is not None:
        mode = SampleMode.COUNT
    elif args.keyframes:
        mode = SampleMode.KEYFRAMES
    elif args.all_frames:
        mode = SampleMode.ALL
    return Settings.from_env(
        checkpoint=args.checkpoint,
        device=args.device,
        precision=args.precision,
        sample_mode=mode,
        every_s=args.every_s,
        sample_count=args.count,
        max_frames=args.max_frames,
        strategy=Strategy(args.strategy) if args.strategy else None,
        threshold=args.threshold,
        inconclusive_band=args.band,
        min_face_px=args.min_face_px,
        video_min_face_px=args.min_face_px,
        detect_prob_floor=args.detect_prob,
        classify_batch=args.classify_batch,
    )


def verdict_line(report) -> str:  # report: pipeline.types.Report
    """``name: FAKE 0.91 (3 people, 2 suspicious segments)``, flagged when the model is untrained."""
    people = len(report.tracks)
    segments = sum(1 for s in report.segments if s.track_id is None)
    score = "-" if report.score is None else f"{report.score:.2f}"
    parts = [f"{people} {'person' if people == 1 else 'people'}"]
    if not report.media.is_image:
        parts.append(f"{segments} suspicious segment{'' if segments == 1 else 's'}")
    if report.threshold_source == "model card":  # say so: the cut is not the familiar 0.5
        parts.append(f"calibrated threshold {report.threshold:.2f}")
    line = f"{report.media.name}: {report.label.value.upper().replace('_', ' ')} {score} ({', '.join(parts)})"
    if report.incomplete:
        line += f" [INCOMPLETE: {report.incomplete}]"
    if report.model.untrained:
        line = "UNTRAINED MODEL — " + line
    return line


def scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from tqdm import tqdm

    from pipeline.engine import Engine
    from pipeline.errors import DffError, ModelError
    from pipeline.report import report_to_csv, report_to_json
    from pipeline.run import analyze
    from pipeline.types import AnalysisStart, FrameVerdict, Report

    try:
        settings = settings_from_args(args)
        engine = Engine.open(settings, allow_untrained=args.allow_untrained)
    except (ModelError, DffError) as e:
        print(f"dff scan: {e}", file=err)
        return EXIT_USAGE
    if engine.info.untrained:
        print("dff scan: UNTRAINED MODEL — scores are random and mean nothing (--allow-untrained)", file=err)
    for directory in (args.json, args.csv):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    failed = 0
    with engine:
        for path in args.files:
            bar = None
            report = None
            faces = 0
            try:
                for event in analyze(path, engine, settings):
                    if isinstance(event, AnalysisStart):
                        bar = tqdm(
                            total=event.planned_frames,
                            desc=event.media.name,
                            unit="frame",
                            file=err,
                            disable=args.quiet,
                            leave=False,
                        )
                    elif isinstance(event, FrameVerdict):
                        faces += len(event.faces)
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(faces=faces, refresh=False)
                    elif isinstance(event, Report):
                        report = event
            except DffError as e:
                failed += 1
                print(f"{Path(path).name}: error: {e}", file=err)
                continue
            finally:
                if bar is not None:
                    bar.close()
            assert report is not None, "analyze() always ends with a Report"
            print(verdict_line(report), file=out)
            if report.incomplete:
                failed += 1
            stem = Path(path).name
            if args.json is not None:
                (args.json / f"{stem}.json").write_text(report_to_json(report))
            if args.csv is not None:
                (args.csv / f"{stem}.csv").write_text(report_to_csv(report))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def client(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import asyncio
    import json

    from pipeline.config import Settings
    from pipeline.report import report_from_dict
    from stream import protocol as p
    from ui.client import ClientError, accepted_line, analyze_file, attach, frame_line

    if (args.file is None) == (args.attach is None):
        print("dff client: give a FILE to analyse or --attach JOB_ID", file=err)
        return EXIT_USAGE
    settings = Settings.from_env()
    url = args.url or f"ws://{settings.host}:{settings.port}/v1/analyze"
    token = args.token or settings.token
    mode = "every_s" if args.every_s else "count" if args.count else "keyframes" if args.keyframes else None
    mode = "all" if args.all_frames else mode
    try:
        options = p.Options(
            sample_mode=mode,
            every_s=args.every_s,
            count=args.count,
            max_frames=args.max_frames,
            strategy=args.strategy,
            threshold=args.threshold,
            overlays=args.overlays is not None,
        )
    except p.ProtocolError as e:
        print(f"dff client: {e}", file=err)
        return EXIT_USAGE
    if args.overlays is not None:
        args.overlays.mkdir(parents=True, exist_ok=True)

    async def run() -> int:
        if args.file is not None:
            messages = analyze_file(args.file, url, token=token, options=options)
        else:
            messages = attach(args.attach, url, token=token)
        async for message in messages:
            if isinstance(message, p.Hello) and message.status != "ready":
                print(f"dff client: server status: {message.status}", file=err)
            elif isinstance(message, p.Accepted):
                print(accepted_line(message), file=out)
            elif isinstance(message, p.FrameResult):
                print(frame_line(message), file=out, flush=True)
                for face in message.faces:
                    jpeg = face.overlay_jpeg()
                    if jpeg is not None and args.overlays is not None:
                        name = f"frame{message.index:06d}_face{face.face_index}.jpg"
                        (args.overlays / name).write_bytes(jpeg)
            elif isinstance(message, p.Done):
                if args.json is not None:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(message.report, indent=2))
                report = report_from_dict(message.report)
                print(verdict_line(report), file=out)
                return EXIT_SOME_FAILED if report.incomplete else EXIT_OK
            elif isinstance(message, p.Error):
                print(f"dff client: {message.code}: {message.message}", file=err)
                return EXIT_SOME_FAILED
        return EXIT_SOME_FAILED

    try:
        return asyncio.run(run())
    except ClientError as e:
        print(f"dff client: {e}", file=err)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"dff client: {e.filename}: no such file", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dff client: interrupted; the server cancels the job", file=err)
        return EXIT_SOME_FAILED
