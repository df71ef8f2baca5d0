"""Tiny media the tests make themselves: face scenes from scikit-image's public-domain astronaut,
H.264 clips encoded with PyAV, and paths into ../shared/media that skip when it is absent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.encode import encode_video  # the one PyAV encoder (the examples and the bench use it too)

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
