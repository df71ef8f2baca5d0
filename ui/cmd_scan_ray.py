"""``dff scan --ray``: the files (folders searched for images and videos) spread over Ray actors
(stream/ray_scan.py), one overall progress bar, a verdict line per file as it finishes, each report written
as it comes, and — with ``--json DIR`` — resumable: a rerun skips the inputs whose report is there already.
Without ``--ray`` this is ``dff scan`` as ui/cmd_analyze.py runs it, untouched.

Heavy imports (torch, ray) happen inside ``scan_ray``, so ``dff --help`` stays instant and the in-process
path never imports ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ui import cmd_analyze
from ui.cmd_analyze import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, verdict_line

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.engine import Engine
    from pipeline.types import Report
    from stream.programs import JobRequest

HASH_THREADS = 4  # inputs hashed at once on a rerun (hashlib releases the GIL while it hashes)

RAY_HELP = (
    "analyse on a Ray cluster: the files (a folder: every image and video under it, hidden ones skipped) "
    "are spread over Ray actors that each hold one engine; their bytes travel through Ray's object store "
    "(no shared disk; at most DFF_MAX_UPLOAD_MB each). With --json DIR a rerun skips every input whose "
    "report (same file SHA-256, same model SHA-256, complete) is in DIR already, and a report never replaces "
    "an earlier run's report of other bytes: it takes the <name>-<hash> name instead (see below)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--ray-address`` and ``--ray-actors`` on the ``scan`` parser."""
    g = parser.add_argument_group("Ray (batch scanning on a cluster)")
    g.add_argument("--ray", action="store_true", help=RAY_HELP)
    g.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the cluster: auto (the one `ray start` runs here), ray://HOST:10001, ... (default "
        "$DFF_RAY_ADDRESS, else a Ray of its own on this machine)",
    )
    g.add_argument(
        "--ray-actors", type=int, metavar="N", help="engine actors to start (default $DFF_RAY_ACTORS, else 2)"
    )


def scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``dff scan``: on Ray with ``--ray``, else in this process (ui/cmd_analyze.py)."""
    if getattr(args, "ray", False):
        return scan_ray(args, out, err)
    if getattr(args, "ray_address", None) is not None or getattr(args, "ray_actors", None) is not None:
        print("dff scan: --ray-address and --ray-actors need --ray", file=err)
        return EXIT_USAGE
    return cmd_analyze.scan(args, out, err)


def input_files(paths: Sequence[Path]) -> list[Path]:
    """Each folder becomes the images and videos under it (recursive, sorted, hidden entries skipped, as
    ``dff train`` finds them); a file stays as given; an input named twice is analysed once.
    Raises ConfigError for a folder with no media in it."""
    from pipeline.train.data import scan_media

    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for found in scan_media(path) if path.is_dir() else [path]:
            key = found.absolute()
            if key not in seen:
                seen.add(key)
                files.append(found)
    return files


def path_stem(path: Path) -> str:
    """The report name ``REPORT_NAME_RULE`` gives an input that shares its name: the name cut to fit, '-',
    8 hex digits of the SHA-256 of its absolute path."""
    tag = "-" + hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[: cmd_analyze._HASH_CHARS]
    return cmd_analyze._fit(path.name or "input", cmd_analyze._STEM_MAX_BYTES - len(tag)) + tag


def report_stem(path: Path, stem: str, media_sha256: str | None, index: ReportIndex | None) -> str:
    """``stem`` (``report_stems``' name in this run) unless DIR/<stem>.json is, from an earlier run, the
    report of other bytes: then ``path_stem``, so no earlier report is lost (the report of the same bytes,
    from an older model or incomplete, is replaced)."""
    other = None if index is None else index.media_of(f"{stem}.json")
    return stem if other is None or other == media_sha256 else path_stem(path)


# -- resuming: what a rerun skips --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input whose report (same media and model SHA-256) is already in the --json directory."""

    path: Path
    report: Path


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """The inputs to analyse, in their order, and those skipped."""

    todo: tuple[Path, ...]
    skipped: tuple[Skipped, ...]


class ReportIndex:
    """The complete reports in a --json directory, read once: which (media SHA-256, model SHA-256) pairs have
    one, and which file each report name is about. A report with ``incomplete`` set does not count (its
    file is analysed again); a ``*.json`` that is no report of ours is ignored and counted in ``unreadable``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.unreadable = 0
        self._pairs: dict[tuple[str, str], Path] = {}
        self._media: dict[str, str] = {}  # report file name -> media SHA-256
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            try:  # two fields and a flag; building whole Reports for thousands of files would cost more
                data = json.loads(path.read_bytes())
                media, model, incomplete = data["media"]["sha256"], data["model"]["sha256"], data["incomplete"]
            except (OSError, ValueError, KeyError, TypeError):
                self.unreadable += 1
                continue
            if not isinstance(media, str) or not isinstance(model, str):
                self.unreadable += 1
                continue
            self._media[path.name] = media
            if incomplete is None:
                self._pairs.setdefault((media, model), path)

    def __len__(self) -> int:
        return len(self._media)

    def find(self, media_sha256: str, model_sha256: str) -> Path | None:
        """The report of this file with this model, or None."""
        return self._pairs.get((media_sha256, model_sha256))

    def media_of(self, file_name: str) -> str | None:
        """The media SHA-256 the report named ``file_name`` (e.g. ``clip.mp4.json``) is about, or None."""
        return self._media.get(file_name)


def _hash(path: Path) -> str | None:
    from pipeline.sources.probe import file_sha256

    try:
        return file_sha256(path)
    except OSError:  # missing or unreadable: it is analysed, and fails there with its one-line reason
        return None


def plan_resume(
    paths: Sequence[Path], index: ReportIndex | None, model_sha256: str, *, threads: int = HASH_THREADS
) -> ResumePlan:
    """Which of ``paths`` still need a report: those whose SHA-256 (hashed in ``threads`` threads) and
    ``model_sha256`` have none in ``index``. ``index`` None (no --json): all of them, nothing hashed."""
    if index is None or not len(index):
        return ResumePlan(tuple(paths), ())
    todo: list[Path] = []
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="dff-scan-hash") as pool:
        for path, sha256 in zip(paths, pool.map(_hash, paths), strict=True):
            found = None if sha256 is None else index.find(sha256, model_sha256)
            if found is None:
                todo.append(path)
            else:
                skipped.append(Skipped(path, found))
    return ResumePlan(tuple(todo), tuple(skipped))


# -- the command ----------------------------------------------------------------------------------------------


def scan_ray(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit codes as the in-process scan's: 0 every file has a report (skipped ones included), 1 some
    failed (each with its one-line reason), 2 nothing could start (no model, no cluster, bad option), 130
    Ctrl-C (the files running are cancelled)."""
    from pipeline.engine import Engine
    from pipeline.errors import DffError
    from stream import protocol as p
    from stream.service import resolve_options

    overrides = {"ray_address": args.ray_address, "ray_actors": args.ray_actors}
    try:
        settings = dataclasses.replace(
            cmd_analyze.settings_from_args(args),
            backend="ray",
            **{k: v for k, v in overrides.items() if v is not None},
        )
        files = input_files(args.files)
        request = resolve_options(p.Options(), settings)
        engine = Engine.open(settings, allow_untrained=args.allow_untrained)
    except DffError as e:
        print(f"dff scan: {e}", file=err)
        return EXIT_USAGE
    with engine:
        if not cmd_analyze.prepare_outputs(args, engine, err):
            return EXIT_USAGE
        try:
            return _scan_files(files, settings, engine, request, args, out, err)
        except KeyboardInterrupt:
            print("dff scan: interrupted", file=err)
            return EXIT_INTERRUPTED


def _scan_files(
    files: list[Path],
    settings: Settings,
    engine: Engine,
    request: JobRequest,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    """Skip what is reported already, run the rest on the cluster, write each report as it comes."""
    from tqdm import tqdm

    from pipeline.errors import DffError
    from stream.ray_scan import RayScanner, Scanned

    index = None if args.json is None else ReportIndex(args.json)
    plan = plan_resume(files, index, engine.info.sha256)
    for skipped in plan.skipped:
        print(f"{skipped.path.name}: skipped, already reported in {skipped.report}", file=out)
    if plan.skipped:
        print(
            f"dff scan: {len(plan.skipped)} of {len(files)} files already reported in {args.json} "
            f"(same file and model SHA-256): skipped; {len(plan.todo)} to analyse",
            file=err,
        )
    if not plan.todo:
        return EXIT_OK
    stems = dict(zip(files, cmd_analyze.report_stems(files), strict=True))
    scanner = RayScanner(settings, engine, request)
    try:
        scanner.start()
    except (DffError, ConnectionError) as e:
        print(f"dff scan: Ray: {e}", file=err)
        return EXIT_USAGE
    failed = done = 0
    bar = tqdm(total=len(plan.todo), desc="scan", unit="file", file=err, disable=args.quiet)
    try:
        with scanner, closing(scanner.scan(plan.todo)) as outcomes:
            for outcome in outcomes:
                done += 1
                if isinstance(outcome, Scanned):
                    stem = report_stem(outcome.path, stems[outcome.path], outcome.report.media.sha256, index)
                    why = _write(outcome.report, stem, args)
                    tqdm.write(verdict_line(outcome.report), file=out)
                    failed += 1 if why is not None or outcome.report.incomplete else 0
                else:
                    failed += 1
                    why = outcome.message
                if why is not None:
                    tqdm.write(f"{outcome.path.name}: error: {why}", file=err)
                bar.update(1)
                bar.set_postfix(failed=failed, refresh=False)
    except KeyboardInterrupt:
        bar.close()
        print(f"dff scan: interrupted; {done} of {len(plan.todo)} files done, the rest cancelled", file=err)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _write(report: Report, stem: str, args: argparse.Namespace) -> str | None:
    """Write the report's files; why not, when they could not be written (disk full, permissions)."""
    try:
        cmd_analyze._write_reports(report, stem, args)
    except OSError as e:
        return f"cannot write its report: {e.strerror or e} ({e.filename})"
    return None
