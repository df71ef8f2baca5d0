"""``dff train``, ``dff eval``, ``dff models`` and ``dff bench``: making, measuring and timing models
(``dff bench`` runs ``python -m bench`` in a child process)."""

from __future__ import annotations

import argparse
from typing import TextIO

from ui.cmd_analyze import EXIT_OK, EXIT_USAGE


def train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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


def evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.config import Settings
    from pipeline.errors import DffError
    from pipeline.train.evaluate import evaluate, format_metrics
    from ui.cmd_flags import sample_mode

    try:
        settings = Settings.from_env(
            device=args.device,
            torch_threads=args.threads,
            sample_mode=sample_mode(args),
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


def models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.cards import list_models
    from pipeline.config import Settings
    from pipeline.errors import DffError
    from pipeline.train.card import format_models

    try:
        directory = Settings.from_env(models_dir=args.dir).resolved_models_dir
    except DffError as e:
        print(f"dff models: {e}", file=err)
        return EXIT_USAGE
    print(format_models(directory, list_models(directory)), file=out)
    return EXIT_OK


def bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``dff bench ARGS`` runs ``python -m bench ARGS`` in a child process and returns its exit code.

    bench/ is the top floor, imported by nothing (tests/test_architecture.py): the command hands over to
    it instead of importing it. The child writes straight to this process's stdout and stderr (file
    descriptors 1 and 2), not to ``out``/``err``, and inherits the environment (thread settings included).
    """
    import subprocess
    import sys

    try:
        return subprocess.run([sys.executable, "-m", "bench", *args.bench_args], check=False).returncode
    except KeyboardInterrupt:  # the child got the same SIGINT and stopped; subprocess.run reaped it
        print("dff bench: interrupted", file=err)
        return 130
