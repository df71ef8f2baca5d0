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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from stream import protocol as p
from ui import cmd_analyze
from ui.cmd_analyze import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    input_files,
    report_lines,
    save_reports,
)
from ui.report_names import ReportIndex, analysis_key, report_note, report_stems, shown_path

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.engine import Engine
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


def _hash(path: Path) -> str | None:
    from pipeline.sources.probe import file_sha256

    try:
        return file_sha256(path)
    except OSError:  # missing or unreadable: it is analysed, and fails there with its one-line reason
        return None


def plan_resume(
    paths: Sequence[Path],
    index: ReportIndex | None,
    model_sha256: str,
    analysis: str,
    *,
    threads: int = HASH_THREADS,
) -> ResumePlan:
    """Which of ``paths`` still need a report: those whose SHA-256 (hashed in ``threads`` threads),
    ``model_sha256`` and ``analysis`` (``report_names.analysis_key``: sampling and strategy) have none in
    ``index``. ``index`` None (no --json): all of them, nothing hashed."""
    if index is None or not len(index):
        return ResumePlan(tuple(paths), ())
    todo: list[Path] = []
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="dff-scan-hash") as pool:
        for path, sha256 in zip(paths, pool.map(_hash, paths), strict=True):
            found = None if sha256 is None else index.find(sha256, model_sha256, analysis)
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
    policy = request.policy
    analysis = analysis_key(
        p.Policy(policy.mode.value, policy.every_s, policy.count, policy.max_frames), request.strategy.value
    )
    plan = plan_resume(files, index, engine.info.sha256, analysis)
    for skipped in plan.skipped:
        print(f"{skipped.path.name}: skipped, already reported in {shown_path(skipped.report)}", file=out)
    if plan.skipped:
        print(
            f"dff scan: {len(plan.skipped)} of {len(files)} files already reported in {args.json} "
            f"(same file and model SHA-256): skipped; {len(plan.todo)} to analyse",
            file=err,
        )
    if not plan.todo:
        return EXIT_OK
    stems = dict(zip(files, report_stems(files), strict=True))  # all of them: a rerun names each the same
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
                    written, why = save_reports(outcome.report, outcome.path, stems[outcome.path], index, args)
                    tqdm.write(report_lines(outcome.report, report_note(written)), file=out)
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
