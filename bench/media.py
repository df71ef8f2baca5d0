"""Benchmark media the bench makes itself from the public-domain astronaut (examples/astronaut.jpg).

Nothing here needs scikit-image: the source image ships in the repository. Clips are cached by name in a
cache directory, so a second run reuses them (delete the directory to regenerate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from bench.config import ClipSpec
from pipeline.encode import encode_video

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
# The astronaut's head and shoulders (x1, y1, x2, y2 in the 512×512 image): the face fills ~60% of it.
_HEAD_BOX = (140, 20, 310, 190)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts")


def astronaut() -> np.ndarray:
    """512×512×3 uint8 RGB from examples/astronaut.jpg."""
    with Image.open(ASTRONAUT) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def face_tile(size_px: int, flip: bool = False) -> np.ndarray:
    """size_px×size_px×3 uint8 RGB: the astronaut's head and shoulders, optionally mirrored."""
    img = Image.fromarray(astronaut()).crop(_HEAD_BOX)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img.resize((size_px, size_px), Image.Resampling.BILINEAR), dtype=np.uint8)


def _background(width: int, height: int) -> np.ndarray:
    """A smooth colour gradient (a plain grey canvas would decode unrealistically fast)."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    rgb = 60 + 80 * x * np.array([1.0, 0.6, 0.2], np.float32) + 70 * y * np.array([0.2, 0.5, 1.0], np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def scene_frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    """spec.n_frames H×W×3 uint8 RGB frames: faces spread across the width, each drifting on its own
    slow ellipse (up to ~1/8 of the frame) so boxes move every frame but faces never overlap."""
    base = _background(spec.width, spec.height)
    tiles = [face_tile(spec.face_px, flip=bool(i % 2)) for i in range(spec.n_faces)]
    size = spec.face_px
    slot_w = spec.width / spec.n_faces
    amp_x = max(0.0, min(slot_w - size, spec.width / 8) / 2)
    amp_y = max(0.0, min(spec.height - size, spec.height / 4) / 2)
    for t in range(spec.n_frames):
        frame = base.copy()
        phase = 2 * math.pi * t / max(1, spec.n_frames)
        for i, tile in enumerate(tiles):
            cx = slot_w * (i + 0.5) + amp_x * math.sin(phase + i)
            cy = spec.height / 2 + amp_y * math.cos(phase * 2 + i)
            x = int(round(min(max(cx - size / 2, 0), spec.width - size)))
            y = int(round(min(max(cy - size / 2, 0), spec.height - size)))
            frame[y : y + size, x : x + size] = tile
        yield frame


def make_clip(spec: ClipSpec, cache_dir: Path) -> Path:
    """The clip for ``spec`` in ``cache_dir`` (generated once; ~10 s for the 720p clip on 2 cores)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{spec.name}.mp4"
    if not path.is_file():
        options = {"preset": spec.preset, "crf": str(spec.crf)}
        encode_video(path, scene_frames(spec), spec.fps, options=options, gop=spec.fps)  # closed 1-s GOPs
    return path


def loop_clip(source: Path, repeats: int, path: Path) -> Path:
    """``source`` played ``repeats`` times back to back, by remuxing its packets with shifted timestamps
    (no re-encoding: a 10-min clip from a 10-s one takes seconds). ``source`` must start with a keyframe
    and use closed GOPs (``encode`` writes such files)."""
    if path.is_file():
        return path
    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(source)) as src:
        sin = src.streams.video[0]
        packets = [p for p in src.demux(sin) if p.size > 0]
        # one period: from the first frame to one frame past the last, in stream time_base units
        pts_all = [p.pts for p in packets if p.pts is not None]
        step = (max(pts_all) - min(pts_all)) // max(1, len(pts_all) - 1)
        period = max(pts_all) - min(pts_all) + step
        with av.open(str(tmp), "w") as out:
            sout = out.add_stream_from_template(sin)
            for k in range(repeats):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts + k * period
                    q.dts = None if p.dts is None else p.dts + k * period
                    q.is_keyframe = p.is_keyframe
                    q.time_base = sin.time_base
                    q.stream = sout
                    out.mux(q)
    tmp.replace(path)
    return path


def shared_videos(media_dir: Path | None) -> list[Path]:
    """Every video file in ``media_dir`` (``../shared/media``), sorted; [] when it is absent."""
    if media_dir is None or not media_dir.is_dir():
        return []
    return sorted(p for p in media_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


# The small-face clip (bench/recovery.py): six faces of 40-60 px tiles on a 1080p frame, two rows of three,
# drifting right 3 px a frame; tests/pipeline/test_faces_recovery.py paints the same layout.
SMALL_FACES_PX = (40, 44, 48, 52, 56, 60)


def small_face_spots(t: int) -> list[tuple[int, int, int]]:
    """(x, y, size_px) top-left corners and tile sizes of the small faces in frame ``t``."""
    return [(260 + 600 * (i % 3) + 3 * t, 300 + 400 * (i // 3) + 40 * (i % 3), s) for i, s in enumerate(SMALL_FACES_PX)]


def small_faces_clip(cache_dir: Path, n_frames: int, fps: int = 10) -> Path:
    """A 1920×1080 H.264 clip of ``n_frames`` frames with the faces of :func:`small_face_spots` on the
    bench's gradient background, in ``cache_dir`` (generated once per length)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"small_faces_1080p{fps}_{n_frames}f.mp4"
    if not path.is_file():
        base = _background(1920, 1080)
        tiles = {(i, s): face_tile(s, flip=bool(i % 2)) for i, s in enumerate(SMALL_FACES_PX)}

        def frames() -> Iterator[np.ndarray]:
            for t in range(n_frames):
                frame = base.copy()
                for i, (x, y, s) in enumerate(small_face_spots(t)):
                    frame[y : y + s, x : x + s] = tiles[i, s]
                yield frame

        tmp = path.with_suffix(".part.mp4")
        encode_video(tmp, frames(), fps, options={"preset": "veryfast", "crf": "23"}, gop=fps)
        tmp.replace(path)
    return path
