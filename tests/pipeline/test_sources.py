"""The Source seam: what open_media returns, MediaInfo for sources with and without a file, the settings'
caps at open, and the detection parameters decided once (pipeline/faces.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.errors import DecodeError, MediaTooLarge
from pipeline.faces import DetectParams, detect_params, source_faces
from pipeline.sources import Source, StillSource, VideoSource, open_media, open_media_for
from pipeline.types import MediaInfo, MediaKind, SampleMode, SamplingPolicy
from tests.media import astronaut, encode_video, face_scene

ALL = SamplingPolicy(SampleMode.ALL, max_frames=None)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sources")
    photo = d / "astro.png"
    Image.fromarray(astronaut()).save(photo)
    clip = encode_video(d / "clip.mp4", [face_scene(320, 240, [(40 + 4 * t, 40, 120)]) for t in range(6)], fps=6)
    return {"photo": photo, "clip": clip}


@pytest.mark.parametrize("name, kind, n", [("photo", StillSource, 1), ("clip", VideoSource, 6)])
def test_open_media_gives_the_file_source_of_its_kind(files, name, kind, n) -> None:
    path = files[name]
    with open_media(path, ALL) as source:
        assert isinstance(source, kind) and isinstance(source, Source)
        info = source.info
        assert info.kind is MediaKind.FILE and info.is_image is (name == "photo")
        assert info.size_bytes == path.stat().st_size
        assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert source.policy == ALL and source.planned_frames == n
        frames = list(source.frames())
        assert [f.index for f in frames] == list(range(n))
        with pytest.raises(RuntimeError, match="only once"):
            source.frames()


def test_close_stops_a_running_video_source(files) -> None:
    source = open_media(files["clip"], ALL)
    frames = source.frames()
    next(frames)
    with source:
        pass  # __exit__ closes
    assert list(frames) == []  # the generator was closed with the container: nothing more is decoded
    source.close()  # twice is fine


_FILE = dict(name="a", container="mov", codec="h264", width=4, height=4, fps=None, duration_s=None)
_REST = dict(rotation_deg=0, is_image=False, frame_count=None)


@pytest.mark.parametrize(
    "size, sha, kind, error",
    [
        (10, "ab" * 32, MediaKind.FILE, None),
        (None, None, MediaKind.LIVE, None),
        (None, "ab" * 32, MediaKind.FILE, "needs size_bytes and sha256"),
        (10, None, MediaKind.FILE, "needs size_bytes and sha256"),
        (10, None, MediaKind.LIVE, "has no size_bytes or sha256"),
        (None, "ab" * 32, MediaKind.LIVE, "has no size_bytes or sha256"),
        (10, "ab" * 32, "file", "must be a MediaKind"),
    ],
)
def test_media_info_describes_sources_with_and_without_a_file(size, sha, kind, error) -> None:
    def make() -> MediaInfo:
        return MediaInfo(size_bytes=size, sha256=sha, kind=kind, **_FILE, **_REST)

    if error is None:
        assert make().kind is kind
    else:
        with pytest.raises(ValueError, match=error):
            make()


def test_open_media_for_applies_the_settings_caps_and_sampling(files, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu", sample_mode=SampleMode.COUNT, sample_count=2)
    with open_media_for(files["clip"], settings) as source:
        assert source.policy == settings.policy and source.planned_frames == 2
    with open_media_for(files["clip"], settings, ALL) as source:
        assert source.policy == ALL and source.planned_frames == 6
    with pytest.raises(MediaTooLarge, match="the limit is 10,000 pixels"):
        open_media_for(files["photo"], dataclasses.replace(settings, max_image_pixels=10_000))
    with pytest.raises(MediaTooLarge, match="the limit is 0 s"):
        open_media_for(files["clip"], dataclasses.replace(settings, max_duration_s=0.4))


def test_detection_parameters_are_decided_by_the_kind_of_media(tmp_path) -> None:
    s = Settings(
        data_dir=tmp_path,
        min_face_px=21,
        video_min_face_px=41,
        photo_detect_max_side_px=2000,
        detect_max_side_px=600,
        detect_chunk=4,
    )
    photo = MediaInfo(size_bytes=1, sha256="ab" * 32, **{**_FILE, **_REST, "is_image": True, "frame_count": 1})
    video = MediaInfo(size_bytes=None, sha256=None, kind=MediaKind.LIVE, **_FILE, **_REST)
    assert detect_params(photo, s) == DetectParams(chunk=1, min_face_px=21, max_side_px=2000)
    assert detect_params(video, s) == DetectParams(chunk=4, min_face_px=41, max_side_px=600)


def test_source_faces_finds_what_the_detector_finds_with_those_parameters(files, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu")
    detector = FaceDetector(torch.device("cpu"))
    for name in ("photo", "clip"):
        with open_media_for(files[name], settings, ALL) as source:
            found = list(source_faces(source, detector, settings))
            params = detect_params(source.info, settings)
        assert len(found) == (1 if name == "photo" else 6)
        for frame, boxes in found:
            (expected,) = detector.detect([frame], params.min_face_px, params.max_side_px)
            assert [b.xyxy for b in boxes] == [b.xyxy for b in expected] and len(boxes) == 1


def test_a_png_with_damaged_pixel_data_is_a_decode_error(tmp_path: Path):
    """Pillow's PNG getexif() decodes the pixels; reading the orientation first raised a bare OSError."""
    path = tmp_path / "damaged.png"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4 : at])
    raw = bytearray(zlib.decompress(bytes(data[at + 4 : at + 4 + length])))
    raw[0] = 9  # an unknown PNG filter type on the first row
    body = zlib.compress(bytes(raw))
    chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    path.write_bytes(bytes(data[: at - 4]) + chunk + bytes(data[at + 8 + length :]))
    with pytest.raises(DecodeError, match="damaged.png"):
        open_media(path, SamplingPolicy(SampleMode.EVERY_S, 1.0, 16, 300))
