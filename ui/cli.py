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
    v.add_argument(
        "--threshold",
        type=float,
        help="P(fake) at or above which a score means FAKE (default: the model card's calibrated threshold, else 0.5)",
    )
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
    if report.threshold_source == "model card":  # say so: the cut is not the familiar 0.5
        parts.append(f"calibrated threshold {report.threshold:.2f}")
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
    keep precedence over a UI mounted at "/".
    The page learns the server's option defaults, upload cap and auth rule from ``settings``; the example
    clip is generated into the data directory on the first start.
    """
    import gradio as gr

    from stream.auth import is_loopback
    from ui.app import RecordAddress, ServerAddress, UiConfig, build_blocks, mount_options
    from ui.examples import example_files

    cfg = UiConfig.from_settings(
        settings, host_is_loopback=is_loopback(settings.host), examples=example_files(settings.data_dir)
    )
    address = ServerAddress()  # the page dials its own server; the middleware learns where that is
    app.add_middleware(RecordAddress, address=address)
    gr.mount_gradio_app(app, build_blocks(cfg, address), path="/", **mount_options(cfg))
    return "/"


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


def _train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.config import Settings
    from pipeline.errors import DffError
    from pipeline.train.trainer import TrainConfig, train

    if args.out.exists() and not (args.resume or args.overwrite):
        print(f"dff train: {args.out} exists; pass --resume to continue it or --overwrite to start over", file=err)
        return EXIT_USAGE
    options = {
        "out": args.out,
        "real_dirs": tuple(args.real),
        "fake_dirs": tuple(args.fake or ()),
        "self_blend": args.self_blend,
        "init": args.init,
        "resume": args.resume,
        "name": args.name,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "val_fraction": args.val_fraction,
        "input_px": args.input_px,
        "trainable": args.trainable,
        "every_s": args.every_s,
        "max_frames": args.max_frames,
        "max_steps": args.max_steps,
        "time_budget_s": args.max_minutes * 60 if args.max_minutes is not None else None,
        "augment": not args.no_augment,
        "seed": args.seed,
        "cache_dir": args.cache,
    }
    try:
        settings = Settings.from_env(device=args.device, torch_threads=args.threads)
        config = TrainConfig(**{k: v for k, v in options.items() if v is not None})
        result = train(config, settings, err, show_bar=not args.quiet)
    except DffError as e:
        print(f"dff train: {e}", file=err)
        return EXIT_USAGE
    last = result.history[-1] if result.history else {}
    auc = last.get("val_auc")
    where = f"epoch {last.get('epoch', 0)}{'' if last.get('complete', True) else ' (part of it)'}"
    print(
        f"{result.checkpoint}: {result.stopped} at {where}; last validation AUC "
        f"{'n/a' if auc is None else format(auc, '.3f')} ({result.n_train} training / {result.n_val} validation "
        f"faces); model card {result.card}",
        file=out,
    )
    print(f"next: dff eval {result.checkpoint} --real DIR --fake DIR --report DIR [--calibrate]", file=out)
    return EXIT_OK


def _eval(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.config import Settings
    from pipeline.errors import DffError
    from pipeline.train.evaluate import evaluate, format_metrics
    from pipeline.types import SampleMode

    mode = SampleMode.EVERY_S if args.every_s is not None else SampleMode.COUNT if args.count is not None else None
    try:
        settings = Settings.from_env(
            device=args.device,
            torch_threads=args.threads,
            sample_mode=mode,
            every_s=args.every_s,
            sample_count=args.count,
            max_frames=args.max_frames,
            min_face_px=args.min_face_px,
            video_min_face_px=args.min_face_px,
            classify_batch=args.classify_batch,
        )
        if args.threshold is not None and not 0 < args.threshold < 1:
            raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
        if not 0 <= args.target_fpr < 1:
            raise ValueError(f"--target-fpr must be in [0, 1), got {args.target_fpr}")
        outcome = evaluate(
            args.checkpoint,
            list(args.real),
            list(args.fake),
            args.report,
            settings,
            err,
            calibrate=args.calibrate,
            target_fpr=args.target_fpr,
            threshold=args.threshold,
            show_bar=not args.quiet,
        )
    except (DffError, ValueError) as e:
        print(f"dff eval: {e}", file=err)
        return EXIT_USAGE
    print(format_metrics(outcome.metrics), file=out)
    print(f"report: {args.report / 'metrics.json'} (+ roc.png, reliability.png, worst/)", file=out)
    return EXIT_OK


def _models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.config import Settings
    from pipeline.errors import DffError
    from pipeline.train.card import format_models, list_models

    try:
        directory = Settings.from_env(models_dir=args.dir).resolved_models_dir
    except DffError as e:
        print(f"dff models: {e}", file=err)
        return EXIT_USAGE
    print(format_models(directory, list_models(directory)), file=out)
    return EXIT_OK


def _bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import dataclasses

    from bench.__main__ import config_from_args
    from bench.suite import run_suite

    def log(message: str) -> None:
        print(message, file=out, flush=True)

    run_suite(dataclasses.replace(config_from_args(args), log=log))
    return EXIT_OK


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
    train = sub.add_parser(
        "train",
        help="train a checkpoint from folders of real (and fake) faces; --self-blend needs no fakes",
        description="Train the one-logit InceptionResnetV1 on the faces MTCNN finds in folders of photos and "
        "videos (cached after the first run), split by source file. --self-blend makes pseudo-fakes from the "
        "real faces (Shiohara & Yamasaki, CVPR 2022), so a folder of real videos is enough. Saves OUT and "
        "OUT.card.json after every epoch; --resume continues from OUT. Exit code 0 when done, 2 on bad input.",
    )
    train.add_argument(
        "--real", type=Path, action="append", required=True, metavar="DIR", help="real photos/videos (repeatable)"
    )
    train.add_argument("--fake", type=Path, action="append", metavar="DIR", help="fake photos/videos (repeatable)")
    train.add_argument("--self-blend", action="store_true", help="add a self-blended pseudo-fake of every real face")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pth); its card goes beside it")
    train.add_argument(
        "--init",
        type=Path,
        metavar="CKPT",
        help="start from a checkpoint (seed format, ours, or a "
        "facenet VGGFace2/CASIA backbone file); default: random weights",
    )
    train.add_argument("--resume", action="store_true", help="continue training OUT from its last epoch")
    train.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    train.add_argument("--name", help="model name for the card (default: OUT's file name without suffix)")
    train.add_argument("--epochs", type=int, help="epochs (default 10)")
    train.add_argument("--batch-size", type=int, help="faces per step, blends included (default 16)")
    train.add_argument("--lr", type=float, help="peak AdamW learning rate (default 3e-4)")
    train.add_argument("--val-fraction", type=float, help="share of faces held out by source file (default 0.2)")
    train.add_argument("--input-px", type=int, help="model input size (default: the init checkpoint's, 256 for new)")
    train.add_argument("--trainable", choices=["all", "top", "head"], help="layers to train (default all)")
    train.add_argument("--every-s", type=float, metavar="SECONDS", help="video sampling for training (default 0.5)")
    train.add_argument("--max-frames", type=int, metavar="N", help="frames per video at most (default 60)")
    train.add_argument("--max-steps", type=int, metavar="N", help="stop at N optimiser steps (a resumed run counts on)")
    train.add_argument("--max-minutes", type=float, help="stop (and save) after this wall time, face finding included")
    train.add_argument("--no-augment", action="store_true", help="no JPEG/blur/resize/colour/flip augmentation")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--cache", type=Path, metavar="DIR", help="face cache (default DATA_DIR/face_cache)")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "eval",
        help="measure a checkpoint on labelled folders: AUC, EER, calibration, plots, worst mistakes",
        description="Run the service's own analysis over --real and --fake folders and report frame-level and "
        "video-level (one row per aggregation strategy) AUC, EER, accuracy, TPR at 1% FPR, log-loss and ECE. "
        "Writes REPORT/metrics.json, roc.png, reliability.png and worst/ (Grad-CAM overlays), and adds the "
        "numbers to the checkpoint's model card. --calibrate fits temperature scaling and a threshold for "
        "--target-fpr on this data and stores them in the card; the service then applies them.",
    )
    evaluate.add_argument("checkpoint", type=Path, help="checkpoint file (.pth)")
    evaluate.add_argument(
        "--real", type=Path, action="append", required=True, metavar="DIR", help="real media (repeatable)"
    )
    evaluate.add_argument(
        "--fake", type=Path, action="append", required=True, metavar="DIR", help="fake media (repeatable)"
    )
    evaluate.add_argument("--report", type=Path, required=True, metavar="DIR", help="where to write the report")
    evaluate.add_argument(
        "--calibrate", action="store_true", help="fit temperature + threshold; store them in the card"
    )
    evaluate.add_argument(
        "--target-fpr", type=float, default=0.01, help="FPR the calibrated threshold aims at (default 0.01)"
    )
    evaluate.add_argument("--threshold", type=float, help="P(fake) threshold for accuracy (default: card's, else 0.5)")
    eg = evaluate.add_mutually_exclusive_group()
    eg.add_argument("--every-s", type=float, metavar="SECONDS", help="video sampling: one frame every SECONDS")
    eg.add_argument("--count", type=int, metavar="N", help="video sampling: N frames spread evenly")
    evaluate.add_argument("--max-frames", type=int, metavar="N", help="at most N frames per video (default 300)")
    evaluate.add_argument("--min-face-px", type=int, help="smallest face to detect (default 20 photos, 40 videos)")
    evaluate.add_argument("--classify-batch", type=int, help="faces per classifier batch (default 32)")
    evaluate.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_eval)

    models = sub.add_parser(
        "models",
        help="list the checkpoints the service can load, with their model cards",
        description="List *.pth/*.pt in the models directory (newest first: the one the service loads by "
        "default) with each model card's name, training data, metrics and calibration.",
    )
    models.add_argument("--dir", type=Path, help="models directory (default $DFF_MODELS_DIR or DATA_DIR/models)")
    models.set_defaults(func=_models)

    bench = sub.add_parser(
        "bench",
        help="benchmark: naive loop vs the pipeline, decode limit, first-frame latency, memory",
        description="Generate a 720p30 clip with 3 moving faces (from examples/astronaut.jpg), run the naive "
        "per-face loop and analyze() side by side on it (and on ../shared/media videos when present), print "
        "frames/s, faces/s, ms per stage, peak RSS and the targets P1-P5, and write bench/results/<date>-<host>.json. "
        "Uses a calibrated random checkpoint: no model needed.",
    )
    from bench.__main__ import add_arguments as _bench_arguments

    _bench_arguments(bench)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
