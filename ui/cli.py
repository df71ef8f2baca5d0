"""The ``dff`` command. Settings come from the environment (``DFF_*``) and flags override them.

Heavy imports (torch, the pipeline) happen inside the subcommands so ``dff --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pipeline.config import PRECISIONS, Settings
from pipeline.threads import apply_entry_thread_environment
from pipeline.types import SampleMode
from ui import cmd_analyze, cmd_models, cmd_scan_ray, cmd_serve, cmd_watch
from ui.cmd_flags import add_sampling_flags, add_strategy_flag


def _default(name: str) -> object:
    """A Settings field's default, for help texts (so the number is written once, in Settings)."""
    return Settings.__dataclass_fields__[name].default


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that analyses media."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="checkpoint file (.pth/.pt, or MesoNet's Keras .h5); twice or more: an ensemble, every face scored "
        "by each and their P(fake)s averaged ($DFF_ENSEMBLE=a,b). Default: $DFF_CHECKPOINT, else the newest "
        "file in the models directory ($DFF_MODELS_DIR, default ~/.local/share/dff/models)",
    )
    m.add_argument(
        "--allow-untrained",
        action="store_true",
        help="with no checkpoint, score with RANDOM weights (tests and demos only; every output says UNTRAINED MODEL)",
    )
    m.add_argument("--device", help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:1, ...")
    m.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the classifier trunk's precision (default auto: bf16 where the hardware has it natively, else "
        "fp32; Grad-CAM's block and the head always run in fp32)",
    )

    s = p.add_argument_group(f"sampling (pick one; default: one frame every {_default('every_s'):g} s)")
    add_sampling_flags(s, max_frames_default=f"default {_default('max_frames')}")

    v = p.add_argument_group("verdict")
    add_strategy_flag(v, default=f"default {_default('strategy').value}")
    v.add_argument(
        "--threshold",
        type=float,
        help="P(fake) at or above which a score means FAKE (default: the model card's calibrated threshold, else 0.5)",
    )
    v.add_argument(
        "--band",
        type=float,
        help=f"scores within this distance of the threshold are INCONCLUSIVE (default {_default('inconclusive_band')})",
    )

    d = p.add_argument_group("detection and batching")
    d.add_argument(
        "--min-face-px",
        type=int,
        help="smallest face to detect, in original pixels (default 20 in photos, 40 in videos)",
    )
    d.add_argument("--detect-prob", type=float, help="detector confidence floor (default 0.9)")
    d.add_argument("--classify-batch", type=int, help="faces per classifier batch (default 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dff",
        description="DeepFake Forensics: are the faces in this photo or video real or deepfaked?",
        epilog="Threads: dff sets OMP_WAIT_POLICY=PASSIVE unless it is already set (spinning OpenMP threads "
        "made analysis 30x slower beside other busy processes); DFF_TORCH_THREADS sets torch's thread count "
        "(default: one per core).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = sub.add_parser(
        "scan",
        help="analyse photos and videos on this machine",
        description="Analyse each file: a progress bar per file, a verdict line per file, optional JSON "
        "report and per-face CSV. Exit code 0 when every file was analysed, 1 when some failed (each "
        "with a one-line reason; the others are still processed), 2 when nothing could start "
        "(no model, bad option), 130 when interrupted (Ctrl-C).",
        epilog=cmd_analyze.REPORT_NAME_RULE,
    )
    scan.add_argument("files", nargs="+", type=Path, help="photos (jpg, png, webp, bmp, gif) or videos")
    scan.add_argument("--json", type=Path, metavar="DIR", help="write DIR/<file>.json reports (names: see below)")
    scan.add_argument("--csv", type=Path, metavar="DIR", help="write DIR/<file>.csv, one row per face")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    scan.add_argument(
        "--debug", action="store_true", help="after an internal error's one-line reason, print its traceback"
    )
    _add_analysis_options(scan)
    cmd_scan_ray.add_arguments(scan)  # --ray, --ray-address, --ray-actors
    scan.set_defaults(func=cmd_scan_ray.scan)  # --ray: on Ray (ui/cmd_scan_ray.py); else cmd_analyze.scan, unchanged

    serve = sub.add_parser(
        "serve",
        help="run the service: websocket + HTTP API (and the web UI) on one port",
        description="Serve ws://HOST:PORT/v1/analyze (stream files, get frames live) and the HTTP report API "
        "(/v1/reports, /healthz) on one port. Reports persist in the data directory. Settings come from "
        "DFF_* variables (DFF_TOKEN enables bearer auth; DFF_ALLOWED_HOSTS, DFF_MAX_JOBS_PER_CLIENT, "
        "DFF_MIN_UPLOAD_KIB_S and DFF_UPLOAD_GRACE_S hold off hostile clients); flags override them. "
        "SIGTERM/SIGINT: running "
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
    h = serve.add_argument_group("hostile clients (each flag overrides its DFF_ variable, e.g. DFF_ALLOWED_HOSTS)")
    h.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="comma-separated Host names served besides loopback and the bound address, '*' = any; any other "
        "Host gets 421 (DNS rebinding). Default: none",
    )
    h.add_argument(
        "--max-jobs-per-client",
        type=int,
        metavar="N",
        help="jobs one client IP may have uploading, waiting or running before it gets busy; 0 = no cap "
        f"(default {_default('max_jobs_per_client')}; behind a proxy every client is one IP)",
    )
    h.add_argument(
        "--min-upload-kib-s",
        type=float,
        metavar="KIB_S",
        help="slowest upload accepted: byte N must arrive by UPLOAD_GRACE_S + N / KIB_S after the upload "
        f"began, else timeout (default {_default('min_upload_kib_s'):g})",
    )
    h.add_argument(
        "--upload-grace-s",
        type=float,
        metavar="SECONDS",
        help=f"the start-up allowance of that rule (default {_default('upload_grace_s'):g})",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_analysis_options(serve)
    cmd_serve.add_scale_out_flags(serve)  # --backend, --ray-address, --ray-actors
    serve.set_defaults(func=cmd_serve.serve)

    client = sub.add_parser(
        "client",
        help="stream a file to a running server and print frames as they arrive",
        description="Upload FILE to a running `dff serve`, print each analysed frame as it arrives, then the "
        "verdict line. Exit code 0 on a complete report, 1 when the server reports an error, 2 when FILE "
        "is missing, a directory or unreadable, or the server cannot be reached or refuses the connection.",
    )
    client.add_argument("file", nargs="?", type=Path, help="photo or video to analyse")
    client.add_argument("--attach", metavar="JOB_ID", help="follow a job started elsewhere instead")
    client.add_argument("--url", help="websocket URL (default ws://$DFF_HOST:$DFF_PORT/v1/analyze)")
    client.add_argument("--token", help="bearer token (default $DFF_TOKEN)")
    client.add_argument("--json", type=Path, metavar="FILE", help="write the report JSON to FILE")
    client.add_argument("--overlays", type=Path, metavar="DIR", help="ask for Grad-CAM overlays; save JPEGs in DIR")
    cs = client.add_argument_group("analysis options (default: the server's)")
    add_sampling_flags(cs, max_frames_default="default: the server's")
    add_strategy_flag(cs, default="default: the server's")
    cs.add_argument("--threshold", type=float, help="P(fake) at or above which a score means FAKE")
    client.set_defaults(func=cmd_analyze.client)

    watch = sub.add_parser(
        "watch",
        help="analyse a live stream (RTSP, HLS, HTTP, UDP) while it plays; a session report at the end",
        description=cmd_watch.DESCRIPTION,
        epilog=cmd_watch.EXIT_CODES,
    )
    cmd_watch.add_arguments(watch)
    watch.set_defaults(func=cmd_watch.watch)

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
    # the defaults are TrainConfig's (pipeline/train/trainer.py), which imports torch: not read at --help
    add_sampling_flags(
        train,
        modes=(SampleMode.EVERY_S,),
        defaults={SampleMode.EVERY_S: "0.5"},
        max_frames_default="default 60",
        what="training video sampling: ",
    )
    train.add_argument("--max-steps", type=int, metavar="N", help="stop at N optimiser steps (a resumed run counts on)")
    train.add_argument("--max-minutes", type=float, help="stop (and save) after this wall time, face finding included")
    train.add_argument("--no-augment", action="store_true", help="no JPEG/blur/resize/colour/flip augmentation")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--cache", type=Path, metavar="DIR", help="face cache (default DATA_DIR/face_cache)")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_models.train)

    evaluate = sub.add_parser(
        "eval",
        help="measure a checkpoint on labelled folders: AUC, EER, calibration, plots, worst mistakes",
        description="Run the service's own analysis over --real and --fake folders and report frame-level and "
        "video-level (one row per aggregation strategy) AUC, EER, accuracy, TPR at 1% FPR, log-loss and ECE. "
        "Writes REPORT/metrics.json, roc.png, reliability.png and worst/ (Grad-CAM overlays), and adds the "
        "numbers to the checkpoint's model card. --calibrate fits temperature scaling and a threshold for "
        "--target-fpr on this data and stores them in the card; the service then applies them.",
    )
    evaluate.add_argument(
        "checkpoint",
        type=Path,
        nargs="+",
        help="checkpoint file (.pth/.pt/.h5); two or more: measured as an ensemble, one row per detector and one "
        "per fusion (--calibrate then fits logistic stacking and stores it in the ensemble card)",
    )
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
    add_sampling_flags(
        evaluate,
        modes=(SampleMode.EVERY_S, SampleMode.COUNT),
        defaults={SampleMode.EVERY_S: f"{_default('every_s'):g}"},
        max_frames_default=f"default {_default('max_frames')}",
        what="video sampling: ",
    )
    evaluate.add_argument("--min-face-px", type=int, help="smallest face to detect (default 20 photos, 40 videos)")
    evaluate.add_argument("--classify-batch", type=int, help="faces per classifier batch (default 32)")
    evaluate.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_models.evaluate)

    models = sub.add_parser(
        "models",
        help="list the checkpoints the service can load, with their model cards",
        description="List *.pth/*.pt/*.h5 in the models directory (newest first: the one the service loads by "
        "default) with each model card's name, training data, metrics and calibration.",
    )
    models.add_argument("--dir", type=Path, help="models directory (default $DFF_MODELS_DIR or DATA_DIR/models)")
    models.set_defaults(func=cmd_models.models)
    models_sub = models.add_subparsers(title="subcommands", metavar="{get}")
    get = models_sub.add_parser(
        "get",
        help="download a published model, pinned by commit and SHA-256, and install it (--list: which)",
        description="Download published weights from their public repository, pinned by commit and SHA-256, "
        "check them, install them into the models directory with a model card. An existing different file of "
        "the same name is never replaced. Exit 0 installed or already there, 1 failed (nothing installed), 2 usage.",
    )
    get.add_argument("name", nargs="?", help="which model (--list shows them, e.g. mesonet4-df)")
    get.add_argument("--list", action="store_true", help="list the published models this command can get")
    get.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help="models directory (as for `dff models`)")
    get.add_argument(
        "--base-url",
        help="download from this mirror: BASE/{repo}/{commit}/{path}, or a template naming {repo}, {commit}, "
        "{path} (default $DFF_MODELS_BASE_URL, else https://raw.githubusercontent.com)",
    )
    get.add_argument("--timeout-s", type=float, default=30.0, help="connect/read timeout in seconds (default 30)")
    get.set_defaults(func=cmd_models.get)

    # bench/ is the top floor: nothing imports it (tests/test_architecture.py), so `dff bench` hands its
    # arguments, --help included, to `python -m bench` in a child process. prefix_chars: no flag is ours.
    bench = sub.add_parser(
        "bench",
        help="benchmark: naive loop vs the pipeline, decode limit, first-frame latency, memory "
        "(runs `python -m bench`; `dff bench --help` lists its options)",
        add_help=False,
        prefix_chars="\0",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_models.bench)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    # Before anything imports torch: OpenMP's wait policy (PASSIVE unless the user set OMP_WAIT_POLICY);
    # why, with the figures: pipeline/threads.py.
    apply_entry_thread_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
