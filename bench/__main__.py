"""``python -m bench [--quick] [--media DIR | --no-media] [--out DIR]``: naive loop vs pipeline, decode limit,
first-frame latency and memory, printed as a table with the targets P1-P5 and written as JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.config import DEFAULT_MEDIA, RESULTS_DIR, BenchConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench's options (shared with ``dff bench``)."""
    p.add_argument("--quick", action="store_true", help="tiny clip, few frames, one round: under a minute")
    media = p.add_mutually_exclusive_group()
    media.add_argument(
        "--media",
        type=Path,
        metavar="DIR",
        help=f"also measure every video in DIR (default without --quick: {DEFAULT_MEDIA}, skipped when absent)",
    )
    media.add_argument("--no-media", action="store_true", help="only the generated clip")
    p.add_argument("--out", type=Path, metavar="DIR", help=f"write <date>-<host>.json here (default {RESULTS_DIR})")
    p.add_argument("--no-write", action="store_true", help="print only, write no JSON")
    p.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="generated clips and the bench checkpoint (default $XDG_DATA_HOME/dff/bench-cache)",
    )
    p.add_argument("--repeats", type=int, metavar="N", help="rounds on the generated clip (default 3; quick 1)")
    p.add_argument("--naive-frames", type=int, metavar="N", help="frames per naive run (default 10; quick 2)")
    p.add_argument("--all-frames", type=int, metavar="N", help="frames per every-frame pipeline run (default 90)")
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process memory runs (P4)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Options -> BenchConfig (quick defaults first, then explicit flags)."""
    overrides = {
        "cache_dir": args.cache,
        "repeats": args.repeats,
        "naive_frames": args.naive_frames,
        "all_frames": args.all_frames,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    if args.media is not None:
        values["media_dir"] = args.media
    if args.no_media:
        values["media_dir"] = None
    if args.no_write:
        values["out_dir"] = None
    elif args.out is not None:
        values["out_dir"] = args.out
    if args.no_rss:
        values["rss"] = False
    return BenchConfig.for_quick(**values) if args.quick else BenchConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from pipeline.threads import apply_entry_thread_environment

    apply_entry_thread_environment()  # the thread settings `dff` runs with (before torch loads)
    from bench.suite import run_suite  # torch and the models load here, not at --help

    run_suite(config_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
