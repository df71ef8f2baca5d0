"""``dff scan`` (analyse files on this machine) and ``dff client`` (stream a file to a running server),
with the Settings both build from their flags. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from ui import report_names
from ui.report_names import ReportIndex, report_note, report_stem, report_stems

if TYPE_CHECKING:  # the engine imports torch: only for the type hints, never at --help
    from pipeline.engine import Engine
    from pipeline.types import Report


class HasSummary(Protocol):
    """A provenance record (pipeline.provenance.records.Provenance or stream.protocol.Provenance)."""

    @property
    def summary(self) -> str: ...


EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def checkpoint_settings(checkpoints: Path | list[Path] | None) -> dict[str, object]:
    """``--checkpoint`` given once (or a command whose flag takes one path): that checkpoint; twice or
    more: an ensemble of them."""
    if not checkpoints:
        return {}
    if isinstance(checkpoints, Path):
        return {"checkpoint": checkpoints}
    if len(checkpoints) == 1:
        return {"checkpoint": checkpoints[0]}
    return {"ensemble": tuple(checkpoints)}


def settings_from_args(args: argparse.Namespace):  # -> pipeline.config.Settings
    from pipeline.config import Settings
    from pipeline.types import Strategy
    from ui.cmd_flags import sample_mode

    return Settings.from_env(
        **checkpoint_settings(args.checkpoint),
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
    """``name: FAKE 0.91 (3 people, 2 suspicious segments)``, flagged when the model is untrained; the face
    gates' refusals are counted when there are any (``, 1 track too short, 4 detections rejected``)."""
    people = sum(1 for t in report.tracks if t.supported)
    short = len(report.tracks) - people
    segments = sum(1 for s in report.segments if s.track_id is None)
    score = "-" if report.score is None else f"{report.score:.2f}"
    parts = [f"{people} {'person' if people == 1 else 'people'}"]
    if not report.media.is_image:
        parts.append(f"{segments} suspicious segment{'' if segments == 1 else 's'}")
    if short:
        parts.append(f"{short} track{'' if short == 1 else 's'} too short")
    if report.n_rejected:
        parts.append(f"{report.n_rejected} detection{'' if report.n_rejected == 1 else 's'} rejected")
    if report.threshold_source == "model card":  # say so: the cut is not the familiar 0.5
        parts.append(f"calibrated threshold {report.threshold:.2f}")
    line = f"{report.media.name}: {report.label.value.upper().replace('_', ' ')} {score} ({', '.join(parts)})"
    if report.incomplete:
        line += f" [INCOMPLETE: {report.incomplete}]"
    if report.model.untrained:
        line = "UNTRAINED MODEL — " + line
    return line


PROVENANCE_PREFIX = "  provenance: "  # indented: a line about the file named on the verdict line above


def provenance_line(provenance: HasSummary | None) -> str | None:
    """``  provenance: <summary>``: what a file says about itself (its summary as the pipeline decided
    it, unsigned files included: "no C2PA manifest: unknown provenance ..."); None for a report without
    a file (a live source). ``provenance``: the pipeline's or the wire's record, both have ``summary``."""
    return None if provenance is None else PROVENANCE_PREFIX + provenance.summary


def report_lines(report, note: str = "", provenance: HasSummary | None = None) -> str:
    """A finished file as ``dff scan`` and ``dff client`` print it: the verdict line (with ``note``, where
    its reports went), then its provenance line when it has one (``provenance``: used when the report
    carries none, e.g. ``accepted``'s)."""
    line = provenance_line(report.provenance if report.provenance is not None else provenance)
    return verdict_line(report) + note + ("" if line is None else "\n" + line)


INPUT_RULE = (
    "A folder stands for every image and video under it (recursive, sorted by path, hidden entries skipped; "
    "a folder with none fails alone, as a bad file does); an input named twice is analysed once."
)
# dff scan's --help epilog (ui/cli.py): which inputs, what their reports are called
REPORT_NAME_RULE = f"{INPUT_RULE} {report_names.REPORT_NAME_RULE}"


def input_files(paths: Sequence[Path]) -> list[Path]:
    """Each folder becomes the images and videos under it (recursive, sorted, hidden entries skipped, as
    ``dff train`` finds them); a file stays as given, and so does a folder with no media in it (it fails
    where it is analysed, with its one-line reason); an input named twice is analysed once."""
    from pipeline.errors import ConfigError
    from pipeline.train.data import scan_media

    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        found = [path]
        if path.is_dir():
            try:
                found = scan_media(path)
            except ConfigError:  # no media under it: kept, so the scan says so on its own line
                pass
        for one in found:
            key = one.absolute()
            if key not in seen:
                seen.add(key)
                files.append(one)
    return files


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
    """Analyse each file in turn (a folder: the media under it, see ``input_files``). Any failure of one
    file (bad media, an internal error, a report that cannot be written) becomes that file's one line
    ``name: error: reason`` and the next file still runs; only Ctrl-C stops the batch."""
    from pipeline.engine import Engine
    from pipeline.errors import DffError, ModelError

    try:
        settings = settings_from_args(args)
        files = input_files(args.files)
        engine = Engine.open(settings, allow_untrained=args.allow_untrained)
    except (ModelError, DffError) as e:
        print(f"dff scan: {e}", file=err)
        return EXIT_USAGE
    if not prepare_outputs(args, engine, err):
        return EXIT_USAGE

    failed = 0
    stems = report_stems(files)
    index = None if args.json is None else ReportIndex(args.json)
    with engine:
        for done, (path, stem) in enumerate(zip(files, stems, strict=True)):
            try:
                report = _scan_one(path, engine, settings, args, err)
                written, why = save_reports(report, path, stem, index, args)
                print(report_lines(report, report_note(written)), file=out, flush=True)
                if report.incomplete or why is not None:
                    failed += 1
                if why is not None:  # disk full, permissions: this file's failure, not the run's
                    print(f"{path.name}: error: {why}", file=err)
            except KeyboardInterrupt:
                print(f"dff scan: interrupted at {path.name}; {done} of {len(files)} files done", file=err)
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


def save_reports(
    report: Report, path: Path, stem: str, index: ReportIndex | None, args: argparse.Namespace
) -> tuple[list[Path], str | None]:
    """Write ``path``'s report as ``--json``/``--csv`` ask, under ``report_stem``'s name (``stem``, this
    run's name, unless that holds another file's report), and note it in ``index``. Returns the files
    written, in order, and why the rest could not be (disk full, permissions) or None."""
    from pipeline.report import report_to_csv, report_to_json

    stem = report_stem(path, stem, report.media.sha256, index)
    written: list[Path] = []
    for directory, suffix, render in ((args.json, ".json", report_to_json), (args.csv, ".csv", report_to_csv)):
        if directory is None:
            continue
        target = directory / f"{stem}{suffix}"
        try:
            target.write_text(render(report))
        except OSError as e:
            return written, f"cannot write its report: {e.strerror or e} ({e.filename})"
        written.append(target)
        if index is not None and suffix == ".json":
            index.add(target.name, report.media.sha256)
    return written, None


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
        provenance: p.Provenance | None = None  # accepted's: shown if the final report has none
        async for message in messages:
            if isinstance(message, p.Hello) and message.status != "ready":
                print(f"dff client: server status: {message.status}", file=err)
            elif isinstance(message, p.Accepted):
                print(accepted_line(message), file=out)
                provenance = message.provenance
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
                print(report_lines(report, provenance=provenance), file=out)
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
