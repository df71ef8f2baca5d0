"""The ``dff`` command. Settings come from the environment (``DFF_*``) and flags override them.

Heavy imports (torch, the pipeline) happen inside the subcommands so ``dff --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that analyses media."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint file (.pth). Default: $DFF_CHECKPOINT, else the newest file in the models "
        "directory ($DFF_MODELS_DIR, default ~/.local/share/dff/models)",
    )
    m.add_argument(
        "--allow-untrained",
        action="store_true",
        help="with no checkpoint, score with RANDOM weights (tests and demos only; every output says UNTRAINED MODEL)",
    )
    m.add_argument("--device", help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:1, ...")

    s = p.add_argument_group("sampling (pick one; default: one frame per second)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--every-s", type=float, metavar="SECONDS", help="one frame every SECONDS of video time")
    g.add_argument("--count", type=int, metavar="N", help="N frames spread evenly over the video")
    g.add_argument("--keyframes", action="store_true", help="every keyframe")
    g.add_argument("--all-frames", action="store_true", help="every frame (slow)")
    s.add_argument("--max-frames", type=int, metavar="N", help="never more than N frames per video (default 300)")

    v = p.add_argument_group("verdict")
    v.add_argument(
        "--strategy",
        choices=["per_person", "mean", "max_frame", "confident"],
        help="how face scores become a video score (default per_person)",
    )
    v.add_argument("--threshold", type=float, help="P(fake) at or above which a score means FAKE (default 0.5)")
    v.add_argument(
        "--band", type=float, help="scores within this distance of the threshold are INCONCLUSIVE (default 0.05)"
    )

    d = p.add_argument_group("detection and batching")
    d.add_argument(
        "--min-face-px",
        type=int,
        help="smallest face to detect, in original pixels (default 20 in photos, 40 in videos)",
    )
    d.add_argument("--detect-prob", type=float, help="detector confidence floor (default 0.9)")
    d.add_argument("--classify-batch", type=int, help="faces per classifier batch (default 32)")


def _settings_from_args(args: argparse.Namespace):  # -> pipeline.config.Settings
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
    line = f"{report.media.name}: {report.label.value.upper().replace('_', ' ')} {score} ({', '.join(parts)})"
    if report.incomplete:
        line += f" [INCOMPLETE: {report.incomplete}]"
    if report.model.untrained:
        line = "UNTRAINED MODEL — " + line
    return line


def _scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from tqdm import tqdm

    from pipeline.engine import Engine
    from pipeline.errors import DffError, ModelError
    from pipeline.report import report_to_csv, report_to_json
    from pipeline.run import analyze
    from pipeline.types import AnalysisStart, FrameVerdict, Report

    try:
        settings = _settings_from_args(args)
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


def mount_web_ui(app, settings) -> str | None:  # app: starlette.applications.Starlette, settings: Settings
    """Mount the web UI on the stream app (same port as the websocket and HTTP APIs); returns its path.

    This is where the Gradio UI is mounted: ``ui/app.py`` builds a ``gradio.Blocks`` that is a websocket
    client of ``/v1/analyze`` (through ui/client.py), and this function calls
    ``gradio.mount_gradio_app(app, blocks, path="/")``. The stream routes are registered first, so they
    keep precedence over a UI mounted at "/". No UI exists yet, so nothing is mounted and this returns None.
    """
    return None


def _serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import dataclasses
    import logging

    from pipeline.errors import DffError
    from stream.auth import is_loopback
    from stream.server import create_app, make_server

    try:
        settings = dataclasses.replace(
            _settings_from_args(args),
            **{
                k: v
                for k, v in {
                    "host": args.host,
                    "port": args.port,
                    "data_dir": args.data_dir,
                    "models_dir": args.models_dir,
                    "max_upload_mb": args.max_upload_mb,
                    "max_jobs": args.max_jobs,
                    "max_queue": args.max_queue,
                    "keep_uploads": args.keep_uploads or None,
                }.items()
                if v is not None
            },
        )
    except DffError as e:
        print(f"dff serve: {e}", file=err)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    if not settings.token and not is_loopback(settings.host):
        print(
            f"dff serve: WARNING: listening on {settings.host} without DFF_TOKEN: anyone who can reach this port "
            "can analyse files and read reports; model upload/activation is disabled",
            file=err,
        )
    app = create_app(settings, allow_untrained=args.allow_untrained)
    ui_path = mount_web_ui(app, settings)
    base = f"{settings.host}:{settings.port}"
    print(f"dff serve: websocket API ws://{base}/v1/analyze, reports http://{base}/v1/reports", file=err)
    print(f"dff serve: web UI {'http://' + base + ui_path if ui_path else 'not built yet (API only)'}", file=err)
    try:
        make_server(app, settings, log_level=args.log_level).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after its graceful shutdown
        return 130
    return EXIT_OK


def _client(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dff",
        description="DeepFake Forensics: are the faces in this photo or video real or deepfaked?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = sub.add_parser(
        "scan",
        help="analyse photos and videos on this machine",
        description="Analyse each file: a progress bar per file, a verdict line per file, optional JSON "
        "report and per-face CSV. Exit code 0 when every file was analysed, 1 when some failed (each "
        "with a one-line reason; the others are still processed), 2 when nothing could start "
        "(no model, bad option).",
    )
    scan.add_argument("files", nargs="+", type=Path, help="photos (jpg, png, webp, bmp, gif) or videos")
    scan.add_argument("--json", type=Path, metavar="DIR", help="write DIR/<file>.json reports")
    scan.add_argument("--csv", type=Path, metavar="DIR", help="write DIR/<file>.csv, one row per face")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_analysis_options(scan)
    scan.set_defaults(func=_scan)

    serve = sub.add_parser(
        "serve",
        help="run the service: websocket + HTTP API (and the web UI) on one port",
        description="Serve ws://HOST:PORT/v1/analyze (stream files, get frames live) and the HTTP report API "
        "(/v1/reports, /healthz) on one port. Reports persist in the data directory. Settings come from "
        "DFF_* variables (DFF_TOKEN enables bearer auth); flags override them. SIGTERM/SIGINT: running "
        "jobs get DFF_SHUTDOWN_GRACE_S to finish, the rest are stored as interrupted.",
    )
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, help="port (default 7860; 0 = any free port)")
    serve.add_argument("--data-dir", type=Path, help="reports database and uploads (default ~/.local/share/dff)")
    serve.add_argument("--models-dir", type=Path, help="checkpoints (default DATA_DIR/models)")
    serve.add_argument("--max-upload-mb", type=float, help="largest upload accepted (default 500)")
    serve.add_argument("--max-jobs", type=int, help="jobs analysed at once, interleaved on one model (default 4)")
    serve.add_argument("--max-queue", type=int, help="more jobs that may wait before clients get busy (default 8)")
    serve.add_argument("--keep-uploads", action="store_true", help="keep uploaded media (default: delete)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_analysis_options(serve)
    serve.set_defaults(func=_serve)

    client = sub.add_parser(
        "client",
        help="stream a file to a running server and print frames as they arrive",
        description="Upload FILE to a running `dff serve`, print each analysed frame as it arrives, then the "
        "verdict line. Exit code 0 on a complete report, 1 when the server reports an error, 2 when the "
        "server cannot be reached or refuses the connection.",
    )
    client.add_argument("file", nargs="?", type=Path, help="photo or video to analyse")
    client.add_argument("--attach", metavar="JOB_ID", help="follow a job started elsewhere instead")
    client.add_argument("--url", help="websocket URL (default ws://$DFF_HOST:$DFF_PORT/v1/analyze)")
    client.add_argument("--token", help="bearer token (default $DFF_TOKEN)")
    client.add_argument("--json", type=Path, metavar="FILE", help="write the report JSON to FILE")
    client.add_argument("--overlays", type=Path, metavar="DIR", help="ask for Grad-CAM overlays; save JPEGs in DIR")
    cs = client.add_argument_group("analysis options (default: the server's)")
    g = cs.add_mutually_exclusive_group()
    g.add_argument("--every-s", type=float, metavar="SECONDS", help="one frame every SECONDS")
    g.add_argument("--count", type=int, metavar="N", help="N frames spread evenly")
    g.add_argument("--keyframes", action="store_true", help="every keyframe")
    g.add_argument("--all-frames", action="store_true", help="every frame")
    cs.add_argument("--max-frames", type=int, metavar="N", help="at most N frames")
    cs.add_argument("--strategy", choices=["per_person", "mean", "max_frame", "confident"])
    cs.add_argument("--threshold", type=float, help="P(fake) at or above which a score means FAKE")
    client.set_defaults(func=_client)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
