"""``dff scan`` (analyse files on this machine) and ``dff client`` (stream a file to a running server),
with the Settings both build from their flags. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import hashlib
import os
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the engine imports torch: only for the type hints, never at --help
    from pipeline.engine import Engine

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def settings_from_args(args: argparse.Namespace):  # -> pipeline.config.Settings
    from pipeline.config import Settings
    from pipeline.types import Strategy
    from ui.cmd_flags import sample_mode

    return Settings.from_env(
        checkpoint=args.checkpoint,
        device=args.device,
        precision=args.precision,
        sample_mode=sample_mode(args),
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


NAME_MAX_BYTES = 255  # a file name's limit on Linux/macOS file systems (ext4, XFS, APFS, tmpfs), in bytes
_REPORT_SUFFIXES = (".json", ".csv")
_STEM_MAX_BYTES = NAME_MAX_BYTES - max(len(s) for s in _REPORT_SUFFIXES)
_HASH_CHARS = 8
REPORT_NAME_RULE = (
    "Reports are named after each input's file name: DIR/<name>.json and DIR/<name>.csv. When that name "
    "would pass the file system's 255-byte limit, or when two inputs of this run share a file name (a/1.jpg, "
    "b/1.jpg), <name> becomes the name cut to fit (on a character boundary) plus '-' and the first 8 hex "
    "digits of the SHA-256 of the input's absolute path, so every input of a run gets its own report and no "
    "report of another input of the same run is overwritten (a report from an earlier run of the same name is)."
)


def _fit(name: str, max_bytes: int) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of its file-system encoding, never inside a character."""
    out, used = [], 0
    for ch in name:
        n = len(os.fsencode(ch))
        if used + n > max_bytes:
            break
        out.append(ch)
        used += n
    return "".join(out)


def report_stems(paths: Sequence[Path]) -> list[str]:
    """The report file name (without ``.json``/``.csv``) of each input, following ``REPORT_NAME_RULE``:
    legal (at most 250 bytes, so ``.json`` still fits in 255) and different for different inputs.

    Pure apart from ``Path.absolute`` (no file is touched). The same input given twice gets the same stem."""
    full = [os.fsencode(p.absolute()) for p in paths]
    names = [p.name or "input" for p in paths]
    sharing: dict[str, set[bytes]] = {}
    for name, key in zip(names, full, strict=True):
        sharing.setdefault(name.casefold(), set()).add(key)  # casefold: a case-insensitive disk would clash

    def hashed(name: str, key: bytes, chars: int) -> str:
        tag = "-" + hashlib.sha256(key).hexdigest()[:chars]
        return _fit(name, _STEM_MAX_BYTES - len(tag)) + tag

    stems: list[str] = []
    owner: dict[str, bytes] = {}
    for name, key in zip(names, full, strict=True):
        fits = len(os.fsencode(name)) <= _STEM_MAX_BYTES
        stem = name if fits and len(sharing[name.casefold()]) == 1 else hashed(name, key, _HASH_CHARS)
        chars = _HASH_CHARS
        while owner.setdefault(stem.casefold(), key) != key:  # a plain name that equals another's hashed one
            chars += 8
            stem = hashed(name, key, chars)
        stems.append(stem)
    return stems


def prepare_outputs(args: argparse.Namespace, engine: Engine, err: TextIO) -> bool:
    """Before a scan: warn of an untrained model, make the ``--json``/``--csv`` folders; False (told on
    ``err``) when a folder cannot be made."""
    if engine.info.untrained:
        print("dff scan: UNTRAINED MODEL — scores are random and mean nothing (--allow-untrained)", file=err)
    for directory in (args.json, args.csv):
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                print(f"dff scan: cannot create {directory}: {e.strerror or e}", file=err)
                return False
    return True


def scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Analyse each file in turn. Any failure of one file (bad media, an internal error, a report that
    cannot be written) becomes that file's one line ``name: error: reason`` and the next file still runs;
    only Ctrl-C stops the batch."""
    from pipeline.engine import Engine
    from pipeline.errors import DffError, ModelError

    try:
        settings = settings_from_args(args)
        engine = Engine.open(settings, allow_untrained=args.allow_untrained)
    except (ModelError, DffError) as e:
        print(f"dff scan: {e}", file=err)
        return EXIT_USAGE
    if not prepare_outputs(args, engine, err):
        return EXIT_USAGE

    failed = 0
    stems = report_stems(args.files)
    with engine:
        for done, (path, stem) in enumerate(zip(args.files, stems, strict=True)):
            try:
                report = _scan_one(path, engine, settings, args, err)
                print(verdict_line(report), file=out, flush=True)
                if report.incomplete:
                    failed += 1
                try:
                    _write_reports(report, stem, args)
                except OSError as e:  # disk full, permissions: this file's failure, not the run's
                    failed += 1
                    print(f"{path.name}: error: cannot write its report: {e.strerror or e} ({e.filename})", file=err)
            except KeyboardInterrupt:
                print(f"dff scan: interrupted at {path.name}; {done} of {len(args.files)} files done", file=err)
                return EXIT_INTERRUPTED
            except DffError as e:
                failed += 1
                print(f"{path.name}: error: {e}", file=err)
            except Exception as e:  # a bug (or an error no adapter names yet): one line, then the next file
                failed += 1
                print(f"{path.name}: error: internal error: {type(e).__name__}: {e}", file=err)
                if args.debug:
                    traceback.print_exception(e, file=err)
                else:
                    print(f"{path.name}: (run with --debug for the traceback)", file=err)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _scan_one(path: Path, engine, settings, args: argparse.Namespace, err: TextIO):  # -> Report
    """One file through ``analyze()`` with a progress bar on ``err``; returns its Report."""
    from tqdm import tqdm

    from pipeline.run import analyze
    from pipeline.sources import open_media_for
    from pipeline.types import AnalysisStart, FrameVerdict, Report

    bar = None
    report = None
    faces = 0
    source = open_media_for(path, settings)  # media errors raise here, before anything is analysed
    try:
        for event in analyze(source, engine, settings):
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
    finally:
        source.close()
        if bar is not None:
            bar.close()
    if report is None:
        raise RuntimeError("analyze() ended without a Report")
    return report


def _write_reports(report, stem: str, args: argparse.Namespace) -> None:
    from pipeline.report import report_to_csv, report_to_json

    if args.json is not None:
        (args.json / f"{stem}.json").write_text(report_to_json(report))
    if args.csv is not None:
        (args.csv / f"{stem}.csv").write_text(report_to_csv(report))


def client(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import asyncio
    import json

    from pipeline.config import Settings
    from pipeline.report import report_from_dict
    from stream import protocol as p
    from ui.client import ClientError, accepted_line, analyze_file, attach, frame_line
    from ui.cmd_flags import sample_mode

    if (args.file is None) == (args.attach is None):
        print("dff client: give a FILE to analyse or --attach JOB_ID", file=err)
        return EXIT_USAGE
    settings = Settings.from_env()
    url = args.url or f"ws://{settings.host}:{settings.port}/v1/analyze"
    token = args.token or settings.token
    mode = sample_mode(args)
    try:
        options = p.Options(
            sample_mode=None if mode is None else mode.value,
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
                    args.json.write_text(json.dumps(message.report.to_json(), indent=2))
                report = report_from_dict(message.report.to_json())
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
