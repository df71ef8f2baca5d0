"""The bench's configuration: what clips, how many frames and rounds. Light (no torch, no PyAV), so
``python -m bench --help`` and ``dff bench --help`` stay instant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
DEFAULT_LABELLED = DEFAULT_MEDIA.parent / "labelled"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def bench_cache(explicit: Path | None = None) -> Path:
    """Where the bench keeps its clips and checkpoint: ``explicit``, else ``<Settings.data_dir>/bench-cache``."""
    if explicit is not None:
        return explicit
    from pipeline.config import Settings  # here, not at the top: this module stays light

    return Settings.from_env().data_dir / "bench-cache"


def say(message: str) -> None:
    """The default log: stdout, flushed (progress shows even when redirected to a file)."""
    print(message, flush=True)


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """A synthetic clip: ``width``×``height`` px, ``seconds`` long at ``fps``, ``n_faces`` moving faces of
    ``face_px`` tiles (the face itself is ~60% of the tile)."""

    name: str
    width: int
    height: int
    seconds: float
    fps: int
    n_faces: int = 3
    face_px: int = 220
    preset: str = "veryfast"
    crf: int = 23

    @property
    def n_frames(self) -> int:
        return round(self.seconds * self.fps)


# The benchmark clip: 720p30, 10 s, 3 moving faces.
CLIP_720P = ClipSpec("faces3_720p30_10s", 1280, 720, 10.0, 30)
# --quick: a tiny clip, so the whole bench runs in well under a minute.
CLIP_QUICK = ClipSpec("faces3_360p10_2s", 640, 360, 2.0, 10, face_px=130)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """``naive_frames``: frames the naive loop analyses per input (it runs ~1 frame/s, so a fixed prefix);
    ``all_frames``: frames the every-frame pipeline run analyses (the same prefix, longer);
    ``short_repeats``/``long_repeats``: P4's clips are the generated clip played this many times (1 = 10 s,
    60 = 10 min); the short one must hold enough sampled frames for a full classify batch."""

    quick: bool = False
    clip: ClipSpec = CLIP_720P
    media_dir: Path | None = DEFAULT_MEDIA
    labelled_dir: Path | None = DEFAULT_LABELLED  # frames for the precision check (bench/precision.py)
    out_dir: Path | None = RESULTS_DIR
    cache_dir: Path | None = None  # None = <Settings.data_dir>/bench-cache
    repeats: int = 3
    naive_frames: int = 10
    all_frames: int = 90
    rss: bool = True
    rss_repeats: int = 2
    short_repeats: int = 1
    long_repeats: int = 60
    classifier_s: float = 3.0  # seconds of classifier-only passes per round
    log: Callable[[str], None] = say

    @classmethod
    def for_quick(cls, **overrides: Any) -> BenchConfig:
        """A tiny clip and few frames: the whole bench in well under a minute on 2 CPU cores."""
        values: dict[str, Any] = dict(
            quick=True,
            clip=CLIP_QUICK,
            media_dir=None,
            labelled_dir=None,
            repeats=1,
            naive_frames=1,
            all_frames=6,
            rss_repeats=1,
            short_repeats=3,
            long_repeats=9,
            classifier_s=0.5,
        )
        values.update(overrides)
        return cls(**values)
