"""Tiny media the tests make themselves: face scenes from scikit-image's public-domain astronaut,
H.264 clips encoded with PyAV, and paths into ../shared/media that skip when it is absent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
# Face box of the astronaut (512×512) as MTCNN finds it: x1, y1, x2, y2 in pixels.
ASTRONAUT_FACE_XYXY = (181.0, 62.0, 268.0, 172.0)


def astronaut() -> np.ndarray:
    """512×512×3 uint8 RGB, one large face at ASTRONAUT_FACE_XYXY."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def shared_media(name: str) -> Path:
    """A file in ../shared/media, or skip the test with a reason when it is not there."""
    path = SHARED / "media" / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/media is only on developer machines)")
    return path


def face_tile(size_px: int, flip: bool = False) -> np.ndarray:
    """The astronaut's head and shoulders cropped square and resized: the face fills ~60% of the tile."""
    img = Image.fromarray(astronaut()).crop((140, 20, 310, 190))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img.resize((size_px, size_px), Image.Resampling.BILINEAR))


def face_scene(width: int, height: int, faces: Sequence[tuple[int, int, int]], background: int = 90) -> np.ndarray:
    """H×W×3 uint8 RGB grey canvas with face tiles pasted at (x, y, size_px) top-left corners."""
    canvas = np.full((height, width, 3), background, dtype=np.uint8)
    for i, (x, y, size) in enumerate(faces):
        tile = face_tile(size, flip=bool(i % 2))
        canvas[y : y + size, x : x + size] = tile[: height - y, : width - x]
    return canvas


def encode_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int = 30,
    codec: str = "libx264",
    *,
    pts: Sequence[int] | None = None,
    rotation_deg: int | None = None,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB uint8 frames. ``pts`` (in 1/fps units) makes variable frame rate clips;
    ``rotation_deg`` (clockwise, as phones mean it) is written as a real display matrix, which decoders
    read back (a ``rotate`` metadata tag is ignored by FFmpeg 7's mp4 muxer); ``container_options`` go
    to the muxer (e.g. ``{"movflags": "faststart"}``)."""
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if gop is not None:
            stream.gop_size = gop
        for i, img in enumerate(frames):
            if i == 0:
                stream.height, stream.width = img.shape[:2]
                if rotation_deg:
                    stream.set_display_rotation(-rotation_deg)  # PyAV counts counter-clockwise
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def moving_faces_clip(path: Path, seconds: float = 2.0, fps: int = 10, n_faces: int = 3) -> Path:
    """A 640×360 clip with ``n_faces`` faces drifting right by 2 px per frame."""
    n = round(seconds * fps)
    spots = [(20 + 200 * i, 60 + 30 * (i % 2), 150) for i in range(n_faces)]
    frames = (face_scene(640, 360, [(x + 2 * t, y, s) for x, y, s in spots]) for t in range(n))
    return encode_video(path, frames, fps=fps)


def encode_audio_only(path: Path, seconds: float = 0.5, codec: str = "aac", rate: int = 44100) -> Path:
    """A file with one silent mono audio stream and no video (``.m4a`` for aac, ``.mp2`` for mp2)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        fmt = "fltp" if codec == "aac" else "s16"
        n = 1024 if codec == "aac" else 1152
        for i in range(max(1, round(seconds * rate / n))):
            dtype = np.float32 if fmt == "fltp" else np.int16
            frame = av.AudioFrame.from_ndarray(np.zeros((1, n), dtype), format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = i * n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
