"""The frame sampler: policies, timing, rotation, stills and every kind of bad input."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.errors import DecodeError, EmptyMedia, MediaNotFound, MediaTooLarge, UnsupportedMedia
from pipeline.sources import VideoSource, open_media
from pipeline.types import Frame, SampleMode, SamplingPolicy
from tests.media import encode_audio_only, encode_video, face_scene

W, H, FPS, N = 160, 120, 10, 30  # the CFR clip: 3.0 s, frame i shows grey level 8 * i


def grey_frames(n: int = N) -> list[np.ndarray]:
    return [np.full((H, W, 3), 8 * i, np.uint8) for i in range(n)]


def noise_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Incompressible frames, so cutting the file at a byte offset cuts real frame data."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def marked_frame() -> np.ndarray:
    """Grey frame with a red 16×16 square in the top-left corner."""
    img = np.full((H, W, 3), 90, np.uint8)
    img[:16, :16] = (255, 0, 0)
    return img


def read(path: Path, policy: SamplingPolicy | None = None, **kw: object) -> tuple[object, list[Frame]]:
    with open_media(path, policy or SamplingPolicy(SampleMode.ALL, max_frames=None), **kw) as reader:
        return reader, list(reader.frames())


def is_red(pixel: np.ndarray) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 200 and g < 60 and b < 60


@pytest.fixture(scope="module")
def cfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode_video(tmp_path_factory.mktemp("cfr") / "cfr.mp4", grey_frames(), fps=FPS)


def P(mode: SampleMode, every_s: float = 1.0, count: int = 16, max_frames: int | None = None) -> SamplingPolicy:
    return SamplingPolicy(mode, every_s, count, max_frames)


@pytest.mark.parametrize(
    ("policy", "indices"),
    [
        (P(SampleMode.ALL), list(range(N))),
        (P(SampleMode.ALL, max_frames=5), [0, 1, 2, 3, 4]),
        (P(SampleMode.EVERY_S, every_s=1.0), [0, 10, 20]),
        (P(SampleMode.EVERY_S, every_s=0.25), [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]),
        (P(SampleMode.EVERY_S, every_s=0.05), list(range(N))),  # finer than the frame rate: each once
        (P(SampleMode.EVERY_S, every_s=1.0, max_frames=2), [0, 10]),
        (P(SampleMode.COUNT, count=3), [5, 15, 25]),  # targets 0.5, 1.5, 2.5 s
        (P(SampleMode.COUNT, count=4), [4, 12, 19, 27]),  # targets 0.375, 1.125, 1.875, 2.625 s
        (P(SampleMode.COUNT, count=50), list(range(1, N))),  # more slots than frames: no repeats
        (P(SampleMode.COUNT, count=4, max_frames=3), [4, 12, 19]),
    ],
)
def test_policies_on_cfr_clip(cfr_clip: Path, policy: SamplingPolicy, indices: list[int]) -> None:
    reader, frames = read(cfr_clip, policy)
    assert [f.index for f in frames] == indices
    assert reader.planned_frames == len(frames)
    for f in frames:
        assert f.time_s == pytest.approx(f.index / FPS, abs=1e-6)
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert abs(float(f.image.mean()) - 8 * f.index) < 4  # the content is that frame's, not a neighbour's


def test_media_info_of_cfr_clip(cfr_clip: Path) -> None:
    with open_media(cfr_clip, SamplingPolicy()) as reader:
        info = reader.info
    assert (info.name, info.width, info.height, info.rotation_deg, info.is_image) == ("cfr.mp4", W, H, 0, False)
    assert info.codec == "h264" and "mp4" in info.container
    assert info.fps == pytest.approx(FPS) and info.duration_s == pytest.approx(3.0)
    assert info.frame_count == N and info.size_bytes == cfr_clip.stat().st_size
    assert info.sha256 == hashlib.sha256(cfr_clip.read_bytes()).hexdigest()


def test_every_s_on_vfr_clip_uses_presentation_time(tmp_path: Path) -> None:
    pts = [0, 1, 2, 5, 6, 10, 11, 12, 20, 21, 25, 26, 27, 28, 29, 40]  # tenths of a second
    clip = encode_video(tmp_path / "vfr.mp4", grey_frames(len(pts)), fps=FPS, pts=pts)
    _, every_1 = read(clip, P(SampleMode.EVERY_S, every_s=1.0))
    assert [f.index for f in every_1] == [0, 5, 8, 15]
    assert [f.time_s for f in every_1] == pytest.approx([0.0, 1.0, 2.0, 4.0])
    _, every_half = read(clip, P(SampleMode.EVERY_S, every_s=0.5))
    # 1.5 s has no frame: 2.0 takes it, and the next slot is 2.5, not 2.0 again
    assert [f.index for f in every_half] == [0, 3, 5, 8, 10, 15]
    _, all_frames = read(clip)
    assert [f.time_s for f in all_frames] == pytest.approx([p / FPS for p in pts])


def test_keyframes_yields_only_keyframes(tmp_path: Path) -> None:
    clip = encode_video(tmp_path / "gop.mp4", noise_frames(N), fps=FPS, gop=10)
    with av.open(str(clip)) as c:
        truth = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert truth[0] == 0 and len(truth) < N
    reader, frames = read(clip, P(SampleMode.KEYFRAMES))
    assert [f.index for f in frames] == truth
    assert [f.time_s for f in frames] == pytest.approx([i / FPS for i in truth])
    assert reader.planned_frames is None
    _, capped = read(clip, P(SampleMode.KEYFRAMES, max_frames=2))
    assert [f.index for f in capped] == truth[:2]


@pytest.mark.parametrize("rotation_deg", [90, 180, 270])
def test_rotated_clip_is_turned_upright(tmp_path: Path, rotation_deg: int) -> None:
    clip = encode_video(tmp_path / "rot.mp4", [marked_frame()] * 3, fps=FPS, rotation_deg=rotation_deg)
    reader, frames = read(clip)
    swapped = rotation_deg in (90, 270)
    out_h, out_w = (W, H) if swapped else (H, W)
    assert reader.info.rotation_deg == rotation_deg
    assert (reader.info.width, reader.info.height) == (out_w, out_h)
    img = frames[0].image
    assert img.shape == (out_h, out_w, 3) and img.flags.c_contiguous
    # clockwise turns carry the top-left marker to top-right (90), bottom-right (180), bottom-left (270)
    corner = {90: img[4, -5], 180: img[-5, -5], 270: img[-5, 4]}[rotation_deg]
    assert is_red(corner) and not is_red(img[4, 4])


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    im = Image.fromarray(marked_frame())
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", what phones held upright write
    path = tmp_path / "phone.jpg"
    im.save(path, quality=95, exif=exif)
    reader, frames = read(path)
    assert reader.info.is_image and reader.info.rotation_deg == 90
    assert (reader.info.width, reader.info.height) == (H, W)
    assert [(f.index, f.time_s) for f in frames] == [(0, 0.0)]
    img = frames[0].image
    assert img.shape == (W, H, 3) and is_red(img[4, -5]) and not is_red(img[4, 4])
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(img, expected)


@pytest.mark.parametrize(
    ("mode", "pixels"),
    [
        ("RGBA", np.dstack([np.full((H, W, 3), (10, 200, 30), np.uint8), np.full((H, W), 128, np.uint8)])),
        ("L", np.full((H, W), 77, np.uint8)),
        ("I;16", np.full((H, W), 257 * 200, np.uint16)),
    ],
)
def test_png_modes_become_rgb_uint8(tmp_path: Path, mode: str, pixels: np.ndarray) -> None:
    path = tmp_path / "still.png"
    Image.fromarray(pixels).save(path)
    reader, frames = read(path, P(SampleMode.EVERY_S))
    assert reader.info.is_image and reader.planned_frames == 1
    img = frames[0].image
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    expected = {"RGBA": (10, 200, 30), "L": (77, 77, 77), "I;16": (200, 200, 200)}[mode]
    assert tuple(int(v) for v in img[H // 2, W // 2]) == expected


def test_gif_yields_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    red, blue = Image.new("RGB", (W, H), (255, 0, 0)), Image.new("RGB", (W, H), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], duration=100)
    reader, frames = read(path)
    assert reader.info.is_image and len(frames) == 1 and is_red(frames[0].image[10, 10])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_stills_are_recognised_by_content_not_extension(tmp_path: Path, fmt: str) -> None:
    scene = face_scene(W, H, [(20, 10, 90)])
    path = tmp_path / "really_an_image.mp4"
    Image.fromarray(scene).save(path, format=fmt)
    reader, frames = read(path)
    assert reader.info.is_image and reader.info.duration_s is None and reader.info.frame_count == 1
    assert frames[0].image.shape == (H, W, 3)
    assert np.abs(frames[0].image.astype(int) - scene).mean() < 8


@pytest.mark.parametrize(
    ("codec", "ext", "name"),
    [("libvpx-vp9", "webm", "vp9"), ("libx265", "mp4", "hevc"), ("libsvtav1", "mkv", "av1")],
)
def test_other_codecs(tmp_path: Path, codec: str, ext: str, name: str) -> None:
    if codec not in av.codecs_available or name not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec}")
    clip = encode_video(tmp_path / f"clip.{ext}", grey_frames(), fps=FPS, codec=codec)
    reader, frames = read(clip, P(SampleMode.EVERY_S, every_s=1.0))
    assert reader.info.codec == name and reader.info.duration_s == pytest.approx(3.0, abs=0.05)
    assert [f.index for f in frames] == [0, 10, 20]
    assert reader.planned_frames == 3
    assert [round(float(f.image.mean()) / 8) for f in frames] == [0, 10, 20]


def test_image_pixel_cap(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (200, 100)).save(path)
    with pytest.raises(MediaTooLarge, match=r"20,000.*10,000") as err:
        open_media(path, SamplingPolicy(), max_image_pixels=10_000)
    assert "wide.png" in str(err.value)
    assert read(path, max_image_pixels=20_000)[1][0].image.shape == (100, 200, 3)


def test_duration_cap_at_open(cfr_clip: Path) -> None:
    with pytest.raises(MediaTooLarge, match=r"cfr\.mp4 lasts 3 s; the limit is 2 s"):
        open_media(cfr_clip, SamplingPolicy(), max_duration_s=2.0)


def test_duration_cap_while_decoding_when_duration_is_unknown(tmp_path: Path) -> None:
    raw = encode_video(tmp_path / "raw.h264", grey_frames(), fps=FPS)  # elementary stream: no pts
    with open_media(raw, P(SampleMode.ALL), max_duration_s=0.5) as reader:
        assert reader.info.duration_s is None and reader.planned_frames is None
        got: list[Frame] = []
        with pytest.raises(MediaTooLarge, match="limit"):
            for f in reader.frames():
                got.append(f)
    assert got and all(f.time_s <= 0.5 for f in got)
    assert [f.index for f in got] == list(range(len(got)))  # timed by index / fps


def test_count_without_duration_spreads_by_every_s(tmp_path: Path) -> None:
    raw = encode_video(tmp_path / "raw.h264", grey_frames(), fps=FPS)
    with open_media(raw, P(SampleMode.COUNT, every_s=0.4, count=3)) as reader:
        frames = list(reader.frames())
        fps = reader.info.fps
    assert fps and len(frames) == 3
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.4, 0.8], abs=1 / fps)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFound, match="nope.mp4") as err:
        open_media(tmp_path / "nope.mp4", SamplingPolicy())
    assert isinstance(err.value, FileNotFoundError)


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyMedia, match="empty.mp4"):
        open_media(tmp_path / "empty.mp4", SamplingPolicy())


def test_text_renamed_mp4(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("these are my holiday notes, not a video\n" * 50)
    with pytest.raises(UnsupportedMedia, match="notes.mp4"):
        open_media(tmp_path / "notes.mp4", SamplingPolicy())


@pytest.mark.parametrize("name", ["minutes.txt", "README.nfo", "logo.ans"])
def test_plain_text_files_are_refused_not_rendered_as_ansi_video(tmp_path: Path, name: str) -> None:
    # FFmpeg's "tty" demuxer would happily decode these as frames of ANSI art
    (tmp_path / name).write_text("Meeting minutes\n\n1. budget\n2. hiring\n" * 40)
    with pytest.raises(UnsupportedMedia, match=r"text file, not a video"):
        open_media(tmp_path / name, SamplingPolicy())


@pytest.mark.parametrize(("codec", "ext"), [("aac", "m4a"), ("mp2", "mp2")])
def test_audio_only_file(tmp_path: Path, codec: str, ext: str) -> None:
    path = encode_audio_only(tmp_path / f"voice.{ext}", codec=codec)
    with pytest.raises(UnsupportedMedia, match="voice.*has no video stream"):
        open_media(path, SamplingPolicy())


def test_truncated_mp4_with_moov_at_the_end_is_unsupported(tmp_path: Path) -> None:
    clip = encode_video(tmp_path / "full.mp4", noise_frames(N), fps=FPS, gop=5)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedMedia, match="cut.mp4"):
        open_media(cut, SamplingPolicy())


@pytest.mark.parametrize("movflags", ["faststart", "frag_keyframe+empty_moov"])
def test_truncated_faststart_mp4_keeps_good_frames_then_raises(tmp_path: Path, movflags: str) -> None:
    options = {"movflags": movflags}
    clip = encode_video(tmp_path / "full.mp4", noise_frames(N), fps=FPS, gop=5, container_options=options)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    got: list[Frame] = []
    with open_media(cut, P(SampleMode.ALL)) as reader:
        with pytest.raises(DecodeError, match="cut.mp4") as err:
            for f in reader.frames():
                got.append(f)
    assert 0 < len(got) < N
    assert err.value.frames_decoded == len(got)
    assert err.value.last_time_s == pytest.approx(got[-1].time_s)
    assert not isinstance(err.value, av.FFmpegError)


def test_truncated_mkv_ends_early_without_error(tmp_path: Path) -> None:
    clip = encode_video(tmp_path / "full.mkv", noise_frames(N), fps=FPS, gop=5)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    _, frames = read(cut)
    assert 0 < len(frames) < N
    assert [f.index for f in frames] == list(range(len(frames)))


def test_frames_is_lazy_and_closing_the_reader_stops_it(cfr_clip: Path) -> None:
    with open_media(cfr_clip, P(SampleMode.ALL)) as reader:
        it = reader.frames()
        assert next(it).index == 0
        with pytest.raises(RuntimeError, match="only once"):
            reader.frames()
    assert next(it, None) is None  # closed with the reader: no decoding on a closed container


def test_garbled_middle_never_leaks_av_errors(tmp_path: Path) -> None:
    options = {"movflags": "faststart"}
    clip = encode_video(tmp_path / "full.mp4", noise_frames(N), fps=FPS, gop=5, container_options=options)
    data = bytearray(clip.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(2).bytes(4000)
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(bytes(data))
    got: list[Frame] = []
    try:
        with open_media(bad, P(SampleMode.ALL)) as reader:
            got.extend(reader.frames())
    except DecodeError as err:
        assert err.frames_decoded == len(got)
    assert got and [f.index for f in got] == sorted({f.index for f in got})
    assert all(f.image.shape == (H, W, 3) for f in got)


def test_avi_is_timed_by_frame_index(tmp_path: Path) -> None:
    # AVI's decoded pts come out shuffled after B-frames; the content order is right
    clip = encode_video(tmp_path / "old.avi", grey_frames(), fps=FPS)
    reader, frames = read(clip, P(SampleMode.EVERY_S, every_s=1.0))
    assert reader.info.container == "avi" and reader.planned_frames == 3
    assert [(f.index, f.time_s) for f in frames] == [(0, 0.0), (10, 1.0), (20, 2.0)]
    assert [round(float(f.image.mean()) / 8) for f in frames] == [0, 10, 20]


def test_still_pillow_cannot_use_is_decoded_by_pyav(tmp_path: Path) -> None:
    path = tmp_path / "odd.bin"
    Image.fromarray(marked_frame()).save(path, format="QOI")  # Pillow identifies QOI; we send it to PyAV
    reader, frames = read(path)
    assert reader.info.is_image and reader.info.codec == "qoi"
    assert np.array_equal(frames[0].image, marked_frame())


def test_video_pixel_cap_is_checked_on_the_header_before_any_decode(
    cfr_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decode(self: VideoSource, stream: object) -> None:
        raise AssertionError("a frame was decoded before the pixel cap was checked")

    monkeypatch.setattr(VideoSource, "_decode", no_decode)
    with pytest.raises(MediaTooLarge, match=r"cfr\.mp4 is 160×120 = 19,200 pixels; the limit is 10,000 pixels"):
        open_media(cfr_clip, SamplingPolicy(), max_image_pixels=10_000)


def test_video_growing_past_the_cap_mid_stream_is_stopped_by_the_decoder(tmp_path: Path) -> None:
    # raw H.264 whose first SPS says 64×64 and a later one 640×480: the header check cannot see it,
    # the decoder's max_pixels refuses the big frames, so none is ever allocated or yielded
    small = encode_video(tmp_path / "a.h264", [np.full((64, 64, 3), 50, np.uint8)] * 5, fps=FPS)
    big = encode_video(tmp_path / "b.h264", [np.full((480, 640, 3), 150, np.uint8)] * 5, fps=FPS)
    grown = tmp_path / "grown.h264"
    grown.write_bytes(small.read_bytes() + big.read_bytes())
    got: list[Frame] = []
    with open_media(grown, P(SampleMode.ALL), max_image_pixels=100_000) as reader:
        assert (reader.info.width, reader.info.height) == (64, 64)
        with pytest.raises(DecodeError, match="grown.h264"):
            got.extend(reader.frames())
    assert 0 < len(got) <= 5 and all(f.image.shape == (64, 64, 3) for f in got)
    _, uncapped = read(grown)
    assert [f.image.shape[1] for f in uncapped] == [64] * 5 + [640] * 5  # the file itself is fine


def _png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width×height RGB but whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _qoi_header_bomb(path: Path, width: int, height: int) -> Path:
    """A QOI (Pillow identifies it, PyAV decodes it) whose header declares width×height."""
    path.write_bytes(b"qoif" + struct.pack(">IIBB", width, height, 3, 0) + b"\xfe\x00\x00\x00" + b"\0" * 7 + b"\1")
    return path


@pytest.mark.parametrize("make", [_png_header_bomb, _qoi_header_bomb])
@pytest.mark.parametrize(
    ("side", "message"),
    [
        (8_000, r"bomb\.img is 8000×8000 = 64,000,000 pixels; the limit is 50,000,000 pixels"),
        (20_000, r"bomb\.img is too large to decode safely: .*400000000 pixels"),  # past Pillow's own bomb limit
    ],
)
def test_still_whose_header_claims_a_huge_size_is_refused_fast(
    tmp_path: Path, make: Callable[..., Path], side: int, message: str
) -> None:
    path = make(tmp_path / "bomb.img", side, side)
    start = time.perf_counter()
    with pytest.raises(MediaTooLarge, match=message):
        open_media(path, SamplingPolicy())
    assert time.perf_counter() - start < 5


_BIG_VIDEO_CHILD = """
import resource, sys, time
from pathlib import Path
from pipeline.errors import MediaTooLarge
from pipeline.sources import open_media
from pipeline.types import SamplingPolicy
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    open_media(Path(sys.argv[1]), SamplingPolicy())
    print("opened")
except MediaTooLarge as e:
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"{time.perf_counter() - start:.3f} {growth_mb:.1f} {e}")
"""


def test_real_12000_square_video_is_refused_fast_at_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as out:  # one 144-Mpx H.264 frame, made from a yuv420p frame (no RGB copy)
        stream = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
        stream.width = stream.height = 12_000
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame(12_000, 12_000, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    run = subprocess.run([sys.executable, "-c", _BIG_VIDEO_CHILD, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    seconds, growth_mb, message = run.stdout.strip().split(" ", 2)
    assert message == "huge.mp4 is 12000×12000 = 144,000,000 pixels; the limit is 50,000,000 pixels"
    assert float(seconds) < 5 and float(growth_mb) < 300, (seconds, growth_mb)
