"""Flags that several commands share, defined once: how to sample a video (``scan``, ``serve``, ``client``,
``train``, ``eval``) and the verdict strategy, with their choices taken from the enums in
``pipeline.types``, and the one place that reads the chosen sampling mode back from parsed flags.

Only the enums are imported here (no torch), so ``dff --help`` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.types import SampleMode, Strategy

# One flag per sampling mode (mutually exclusive); a flag with a value carries the mode's parameter.
# tests/ui/test_cli.py checks that every SampleMode has its flag here.
MODE_FLAGS: Mapping[SampleMode, tuple[str, dict[str, Any]]] = {
    SampleMode.EVERY_S: ("--every-s", {"type": float, "metavar": "SECONDS", "help": "one frame every SECONDS"}),
    SampleMode.COUNT: ("--count", {"type": int, "metavar": "N", "help": "N frames spread evenly over the video"}),
    SampleMode.KEYFRAMES: ("--keyframes", {"action": "store_true", "help": "every keyframe"}),
    SampleMode.ALL: ("--all-frames", {"action": "store_true", "help": "every frame (slow)"}),
}

STRATEGY_CHOICES = tuple(s.value for s in Strategy)

Group = argparse.ArgumentParser | argparse._ArgumentGroup


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_sampling_flags(
    group: Group,
    *,
    modes: Sequence[SampleMode] = tuple(SampleMode),
    defaults: Mapping[SampleMode, str] | None = None,
    max_frames_default: str,
    what: str = "",
) -> None:
    """Add one flag per mode in ``modes`` (mutually exclusive) and ``--max-frames`` to ``group``.

    ``defaults``: a mode's default parameter, said in its help (e.g. ``{SampleMode.EVERY_S: "0.5"}``);
    ``max_frames_default``: what no ``--max-frames`` means, said in its help; ``what``: a prefix for every
    help line (e.g. ``"video sampling: "``). The parsed values stay None when not given: Settings (or the
    server, or the trainer) supplies the default, so it is written in one place.
    """
    exclusive = group.add_mutually_exclusive_group()
    for mode in modes:
        flag, spec = MODE_FLAGS[mode]
        default = (defaults or {}).get(mode)
        note = f" (default {default})" if default is not None else ""
        exclusive.add_argument(flag, **{**spec, "help": f"{what}{spec['help']}{note}"})
    group.add_argument(
        "--max-frames", type=int, metavar="N", help=f"{what}at most N frames per video ({max_frames_default})"
    )


def add_strategy_flag(group: Group, *, default: str) -> None:
    """``--strategy``: how face scores become a video score; choices are the ``Strategy`` values."""
    group.add_argument("--strategy", choices=STRATEGY_CHOICES, help=f"how face scores become a video score ({default})")


def sample_mode(args: argparse.Namespace) -> SampleMode | None:
    """The sampling mode whose flag was given, or None (the flags are mutually exclusive). A command that
    does not offer a mode's flag simply has no attribute for it."""
    for mode, (flag, spec) in MODE_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if (value is True) if spec.get("action") == "store_true" else (value is not None):
            return mode
    return None
