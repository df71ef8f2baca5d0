"""``dff train``, ``dff eval``, ``dff models`` (``get``: published weights) and ``dff bench``: making,
getting, measuring and timing models (``dff bench`` runs ``python -m bench`` in a child process)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ui.cmd_analyze import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE

if TYPE_CHECKING:
    from pipeline.detectors.catalog import Published

BASE_URL_ENV = "DFF_MODELS_BASE_URL"  # where `dff models get` downloads from (a mirror); --base-url wins


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


def _eval_options(args: argparse.Namespace) -> dict[str, object]:
    """What ``dff eval`` passes to either evaluation, beside the checkpoint(s) and the settings."""
    return {
        "real_dirs": list(args.real),
        "fake_dirs": list(args.fake),
        "report_dir": args.report,
        "calibrate": args.calibrate,
        "target_fpr": args.target_fpr,
        "threshold": args.threshold,
        "show_bar": not args.quiet,
    }


def _evaluate_ensemble(args: argparse.Namespace, settings, out: TextIO, err: TextIO) -> int:  # settings: Settings
    """``dff eval A B ...``: pipeline/train/evaluate_ensemble.py."""
    from pipeline.train.evaluate_ensemble import evaluate_ensemble, format_ensemble

    doc = evaluate_ensemble(list(args.checkpoint), settings=settings, err=err, **_eval_options(args))
    print(format_ensemble(doc), file=out)
    print(f"report: {args.report / 'metrics.json'}", file=out)
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
        if len(args.checkpoint) > 1:
            return _evaluate_ensemble(args, settings, out, err)
        outcome = evaluate(args.checkpoint[0], settings=settings, err=err, **_eval_options(args))
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


def get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``dff models get NAME``: download a published model pinned by commit and SHA-256 (catalogue in
    pipeline/detectors/catalog.py), install it in the models directory with a model card. ``--list``: the
    catalogue. Exit 0 installed (or already there), 1 the download or install failed, 2 bad usage."""
    import os

    from pipeline.config import Settings
    from pipeline.detectors import catalog
    from pipeline.errors import DffError
    from ui import models_get

    if args.list:
        print(catalog.listing(), file=out)
        return EXIT_OK
    if not args.name:
        print(f"dff models get: name a model: {', '.join(catalog.CATALOG)} (--list describes them)", file=err)
        return EXIT_USAGE
    try:
        entry = catalog.published(args.name)
        url = catalog.download_url(entry, args.base_url or os.environ.get(BASE_URL_ENV) or catalog.DEFAULT_BASE_URL)
        directory = Settings.from_env(models_dir=args.dir).resolved_models_dir
        if not args.timeout_s > 0:
            raise ValueError(f"--timeout-s must be > 0, got {args.timeout_s}")
    except (DffError, ValueError) as e:
        print(f"dff models get: {e}", file=err)
        return EXIT_USAGE
    print(f"dff models get: {entry.name}: {url} ({entry.size_text}, sha256 {entry.sha256[:16]}…)", file=err)
    try:
        done = models_get.install(
            models_get.Pin(url, entry.size_bytes, entry.sha256),
            directory / entry.file_name,
            timeout_s=args.timeout_s,
        )
    except models_get.DownloadError as e:
        print(f"dff models get: {e}; nothing installed", file=err)
        return EXIT_SOME_FAILED
    try:
        card_note = _card_for_published(entry, done.path, done.sha256, url)
    except OSError as e:
        print(f"dff models get: {done.path} is installed, but its model card could not be written: {e}", file=err)
        return EXIT_SOME_FAILED
    what = "already installed" if done.already else "installed"
    print(
        f"{what} {entry.name}: {done.path} ({entry.size_bytes} bytes, sha256 {done.sha256[:16]}…; "
        f"{entry.licence}, {entry.authors})",
        file=out,
    )
    print(f"model card: {card_note}", file=out)
    print(f"use it: dff scan FILE --checkpoint {done.path}", file=out)
    print(_default_note(directory, done.path), file=out)
    return EXIT_OK


def _card_for_published(entry: Published, path: Path, sha256: str, url: str) -> str:
    """Write the card beside the installed file unless one already describes it (a `dff eval` may have
    added metrics and calibration to it); what was done, in words."""
    import dataclasses
    import time

    from pipeline.detectors import catalog
    from pipeline.detectors.registry import detector
    from pipeline.models import card_path, read_card
    from ui import models_get

    try:
        existing = read_card(path)
    except ValueError:
        existing = None  # unreadable: replaced
    card = card_path(path)
    if existing is not None and existing.get("sha256") == sha256:
        return f"{card} (kept: it already describes this file)"
    spec = detector(entry.detector)
    document = catalog.model_card(
        entry,
        sha256,
        architecture=spec.architecture,
        preprocess=dataclasses.asdict(spec.profile),
        url=url,
        installed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    models_get.write_json(card, document)
    return f"{card} (uncalibrated: threshold 0.5 until `dff eval --calibrate` fits one)"


def _default_note(directory: Path, path: Path) -> str:
    """Whether the service picks ``path`` by default (the newest checkpoint in ``directory``)."""
    from pipeline.errors import NoModel
    from pipeline.models import find_checkpoint

    try:
        newest = find_checkpoint(None, directory)
    except NoModel:
        newest = None
    if newest == path:
        return (
            f"it is the newest model in {directory}: `dff scan` and `dff serve` load it by default (unless "
            "DFF_CHECKPOINT is set, or the server has another model activated in its Models tab)"
        )
    return f"the newest model in {directory} is {newest.name if newest else '?'}: pass --checkpoint to use this one"


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
