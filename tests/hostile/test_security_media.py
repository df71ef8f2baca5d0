"""Security checks on what is uploaded: the caps (bytes, pixels of stills and videos, seconds, frames per
request) refuse before decoding, and overlays come only from the uploaded bytes (playlists and concat
lists naming local files are refused, by the server and by ``dff scan``)."""

from __future__ import annotations

import asyncio
import io
import resource
import struct
import time
import zlib
from pathlib import Path

import pytest

from stream import protocol as p
from tests.hostile.security_kit import converse, final, leftover_uploads, upload
from tests.media import encode_video, face_scene
from ui.cli import main as dff

# ------------------------------------------------------------------------------------------ upload caps


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height RGB, with a few rows of data: decoding it whole would
    need width·height·3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 16, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_declared_size_over_the_cap_is_refused_before_any_byte(open_server):
    cap = open_server.service.max_upload_bytes
    start = p.Start(name="big.mp4", size_bytes=cap + 1)
    hello, *rest = asyncio.run(converse(open_server.ws, start, b"\0" * (cap + 1)))
    assert isinstance(hello, p.Hello) and hello.max_upload_bytes == cap
    assert len(rest) == 1 and isinstance(rest[0], p.Error) and rest[0].code == "too_large", rest  # no "uploading"
    assert not leftover_uploads(open_server)


@pytest.mark.parametrize("side", [400, 30_000])
def test_a_still_over_the_pixel_cap_is_refused_before_decoding(open_server, tmp_path, side):
    path = tmp_path / f"bomb-{side}.png"
    path.write_bytes(png_bomb(side, side))  # 160,000 px or 900 Mpx (2.7 GB decoded)
    assert path.stat().st_size < open_server.service.max_upload_bytes
    rss_before, t0 = _peak_rss_mb(), time.monotonic()
    messages = upload(open_server, path, overlays=True)
    elapsed_s, grew_mb = time.monotonic() - t0, _peak_rss_mb() - rss_before
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]
    assert elapsed_s < 5 and grew_mb < 200, (elapsed_s, grew_mb)


def test_a_video_over_the_pixel_cap_is_refused_before_decoding(open_server, tmp_path):
    """Issue 9 finding 6: the pixel cap applies to videos too, from the header."""
    path = encode_video(tmp_path / "wide.mp4", [face_scene(400, 300, [(100, 60, 150)])] * 5, fps=10)
    messages = upload(open_server, path, overlays=True)
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert "pixel" in error.message
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]


def test_a_video_over_the_duration_cap_is_refused_before_decoding(open_server, tmp_path):
    path = encode_video(tmp_path / "long.mp4", [face_scene(160, 120, [(20, 10, 90)])] * 30, fps=10)  # 3 s
    messages = upload(open_server, path, overlays=True)
    error = final(messages)
    assert isinstance(error, p.Error) and error.code == "too_large", error
    assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))]


@pytest.mark.parametrize(
    "options",
    [{"sample_mode": "all", "max_frames": 10**9}, {"max_frames": 301}, {"sample_mode": "count", "count": 10**6}],
)
def test_a_request_cannot_lift_the_frame_cap(open_server, face_clip, options):
    """Issue 9 finding 5: refused at ``start``, before a byte is uploaded."""
    start = p.Start(name="clip.mp4", size_bytes=face_clip.stat().st_size, options=p.Options(**options))
    hello, *rest = asyncio.run(converse(open_server.ws, start, face_clip.read_bytes()))
    assert len(rest) == 1 and isinstance(rest[0], p.Error), rest
    assert rest[0].code in ("bad_config", "too_large") and "300" in rest[0].message


def test_the_good_clip_passes_every_cap(open_server, face_clip):
    """The caps above refused for their reason, not because this server refuses everything."""
    done = final(upload(open_server, face_clip, overlays=True, max_frames=300))
    assert isinstance(done, p.Done), done


# ------------------------------------------------------------------------------------------ references


def references(target: Path) -> dict[str, bytes]:
    """Files that name ``target`` instead of containing media: HLS playlists and FFmpeg concat lists."""
    hls = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n"
    concat = "ffconcat version 1.0\nfile '{}'\n"
    return {
        "innocent.m3u8": hls.format(target).encode(),
        "playlist-as.mp4": hls.format(target).encode(),
        "url.m3u8": hls.format(target.as_uri()).encode(),
        "list.ffconcat": concat.format(target).encode(),
        "concat-as.mov": concat.format(target).encode(),
        "relative.m3u8": hls.format(target.name).encode(),
    }


def test_overlays_come_only_from_the_uploaded_bytes(open_server, face_clip, tmp_path):
    """Issue 9 finding 1: a playlist or concat list naming a face video on the server is refused, and
    answers the same whether or not the file it names exists (no existence oracle)."""
    missing = tmp_path / "no-such-video.mp4"
    for name, data in references(face_clip).items():
        answers = []
        for payload in (data, references(missing)[name]):
            start = p.Start(name=name, size_bytes=len(payload), options=p.Options(overlays=True))
            messages = asyncio.run(converse(open_server.ws, start, payload))
            error = final(messages)
            assert isinstance(error, p.Error) and error.code == "unsupported_media", (name, error)
            assert not [m for m in messages if isinstance(m, (p.Accepted, p.FrameResult))], name
            answers.append((error.code, error.message))
        assert answers[0] == answers[1], f"{name}: the answer tells whether the named file exists: {answers}"


def test_dff_scan_refuses_references_too(face_clip, tmp_path, models_dir):
    files = []
    for name, data in references(face_clip).items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    code = dff(["scan", "--checkpoint", str(models_dir / "random.pth"), "--device", "cpu", *map(str, files)], out, err)
    assert code != 0 and out.getvalue() == ""
    lines = [line for line in err.getvalue().splitlines() if ": error: " in line]
    assert len(lines) == len(files), err.getvalue()
