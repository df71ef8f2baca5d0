"""File checks: playlists and reference formats never make FFmpeg open anything but the input itself."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DecodeError, MediaTooLarge, UnsupportedMedia
from pipeline.sources import open_media
from pipeline.sources.probe import ALLOWED_DEMUXERS, ffmpeg_errors, file_sha256, is_allowed
from pipeline.types import SampleMode, SamplingPolicy
from tests.media import encode_video

ALL = SamplingPolicy(SampleMode.ALL, max_frames=None)
HLS = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n"
# Runs in a child so that a FIFO opened by FFmpeg (which blocks until a writer comes) fails the test by
# timeout instead of hanging it. Prints, per path: error class, code and message, or what was decoded.
CHILD = """
import json, sys
from pathlib import Path
from pipeline.sources.probe import ALLOWED_DEMUXERS, open_guarded
from pipeline.sources import open_media
from pipeline.types import SampleMode, SamplingPolicy
mode, out = sys.argv[1], []
for p in map(Path, sys.argv[2:]):
    try:
        if mode == "media":
            with open_media(p, SamplingPolicy(SampleMode.ALL, max_frames=None)) as r:
                out.append(["analysed", r.info.container, len(list(r.frames()))])
        else:  # no sniffing: "whitelist" = locks 2-4; "guard" = the HLS demuxer admitted, locks 3-4
            extra = {"hls"} if mode == "guard" else set()
            with open_guarded(p, max_pixels=10**8, allowed=ALLOWED_DEMUXERS | extra) as c:
                out.append(["analysed", c.format.name, len(list(c.decode(video=0)))])
    except Exception as e:
        out.append([type(e).__name__, getattr(e, "code", ""), str(e).replace(p.name, "NAME")])
print(json.dumps(out))
"""


def isolated(mode: str, paths: list[Path]) -> list[list[object]]:
    try:
        run = subprocess.run(
            [sys.executable, "-c", CHILD, mode, *map(str, paths)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("opening a playlist blocked: FFmpeg opened the FIFO it names")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def referenced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths elsewhere on the 'server': a real video, a FIFO (opening it would block) and nothing."""
    ref = tmp_path_factory.mktemp("server_files")
    secret = encode_video(ref / "secret.ts", [np.full((64, 64, 3), 200, np.uint8)] * 5, fps=10)
    os.mkfifo(ref / "pipe.ts")
    return {"existing": secret, "fifo": ref / "pipe.ts", "missing": ref / "missing.ts"}


def playlists(folder: Path, referenced: dict[str, Path], names: list[str]) -> list[Path]:
    out = []
    for kind, target in referenced.items():
        sub = folder / kind
        sub.mkdir(exist_ok=True)
        for name in names:
            (sub / name).write_text(HLS.format(target))
            out.append(sub / name)
    return out


def test_the_playlist_is_a_real_exploit_for_unguarded_ffmpeg(tmp_path: Path, referenced: dict[str, Path]) -> None:
    (tmp_path / "innocent.m3u8").write_text(HLS.format(referenced["existing"]))
    with av.open(str(tmp_path / "innocent.m3u8")) as c:  # what the sampler used to do
        assert c.format.name == "hls" and len(list(c.decode(video=0))) == 5  # it read the secret


def test_hls_playlists_get_one_error_whatever_they_name_and_whatever_their_extension(
    tmp_path: Path, referenced: dict[str, Path]
) -> None:
    paths = playlists(tmp_path, referenced, ["innocent.m3u8", "innocent.mp4", "innocent.jpg", "clip"])
    results = isolated("media", paths)
    expected = [
        "UnsupportedMedia",
        "unsupported_media",
        "NAME is an HLS or M3U playlist; only self-contained video and image files are accepted "
        "(playlists and formats that refer to other files or URLs are refused)",
    ]
    assert results == [expected] * len(paths)


def test_without_the_sniff_the_whitelist_refuses_hls_before_it_runs(
    tmp_path: Path, referenced: dict[str, Path]
) -> None:
    paths = playlists(tmp_path, referenced, ["innocent.m3u8"])
    # FFmpeg probed "hls" and refused it: the playlist is then described by its bytes (text)
    expected = ["UnsupportedMedia", "unsupported_media", "NAME is a text file, not a video or image"]
    assert isolated("whitelist", paths) == [expected] * 3


def test_with_hls_admitted_the_io_guard_still_refuses_the_segment(tmp_path: Path, referenced: dict[str, Path]) -> None:
    paths = playlists(tmp_path, referenced, ["innocent.m3u8"])
    results = isolated("guard", paths)
    message = (
        "NAME is a reference format (it names other files or URLs); only self-contained video and image "
        "files are accepted (playlists and formats that refer to other files or URLs are refused)"
    )
    assert results == [["UnsupportedMedia", "unsupported_media", message]] * 3


@pytest.mark.parametrize("name", ["list.ffconcat", "list.mp4", "list.txt"])
def test_ffconcat_script_is_refused(tmp_path: Path, referenced: dict[str, Path], name: str) -> None:
    secret = referenced["existing"]
    (tmp_path / secret.name).write_bytes(secret.read_bytes())  # concat's safe mode takes relative names
    script = tmp_path / name
    script.write_text(f"ffconcat version 1.0\nfile '{secret.name}'\n")
    if name == "list.txt":
        with av.open(str(script)) as c:  # unguarded FFmpeg follows it
            assert c.format.name == "concat" and len(list(c.decode(video=0))) == 5
    with pytest.raises(UnsupportedMedia, match=rf"{name} is an FFmpeg concat script; only self-contained"):
        open_media(script, ALL)


def test_sdp_that_the_sniff_misses_is_refused_by_the_whitelist(tmp_path: Path) -> None:
    # no "v=0" first line, yet FFmpeg's sdp probe takes it (and would open RTP sockets)
    path = tmp_path / "stream.sdp"
    path.write_text("o=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n")
    with pytest.raises(UnsupportedMedia, match=r"stream\.sdp is a text file, not a video or image"):
        open_media(path, ALL)


@pytest.mark.parametrize("ext", ["jpg", "qoi"])  # JPEG: Pillow decodes it; QOI: PyAV does (image2 demuxer)
def test_a_percent_pattern_in_the_name_never_reads_sibling_files(tmp_path: Path, ext: str) -> None:
    for i in range(3):
        Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / f"img{i:03d}.{ext}")
    upload = tmp_path / f"img%03d.{ext}"
    Image.new("RGB", (32, 24), (0, 0, 255)).save(upload)
    with av.open(str(upload)) as c:  # unguarded image2 expands the pattern into the red siblings
        assert [f.width for f in c.decode(video=0)] == [64, 64, 64]
    with open_media(upload, ALL) as reader:
        frames = list(reader.frames())
        assert (reader.info.width, reader.info.height) == (32, 24)
    assert len(frames) == 1 and frames[0].image.shape == (24, 32, 3)
    r, g, b = (int(v) for v in frames[0].image[12, 16])
    assert b > 200 and r < 60  # the upload's own blue pixels


def test_dash_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "movie.mpd"
    path.write_text('<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><Period/></MPD>\n')
    with pytest.raises(UnsupportedMedia, match=r"movie\.mpd is a DASH manifest; only self-contained"):
        open_media(path, ALL)


def test_every_allow_listed_demuxer_exists_in_this_ffmpeg() -> None:
    missing = sorted(n for n in ALLOWED_DEMUXERS if n not in av.formats_available or not av.ContainerFormat(n).is_input)
    assert missing == []


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", True),
        ("matroska,webm", True),
        ("image2", True),
        ("png_pipe", True),
        ("hls", False),
        ("concat", False),
        ("sdp", False),
        ("rtsp", False),
        ("tty", False),
        ("svg_pipe", False),
        ("webm_dash_manifest", False),
        ("mpegtsraw", False),
    ],
)
def test_allow_list(name: str, allowed: bool) -> None:
    assert is_allowed(name) is allowed


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# --- what FFmpeg's probe refuses, and what only the extension claims ----------------------------------


def zipfile_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello " * 100)
    return buf.getvalue()


def _png_coded_mov(path: Path, width: int, height: int) -> Path:
    """A one-frame MOV whose frame is a PNG (zeros): FFmpeg must decode it to learn its size."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, format="PNG")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        packet = av.Packet(buf.getvalue())
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, Fraction(1, 1)
        out.mux(packet)
    return path


def test_a_size_refused_while_probing_is_too_large_not_damaged(tmp_path: Path) -> None:
    # max_pixels makes FFmpeg's probe refuse the frame and leave the stream at 0×0: the size comes from its log
    path = _png_coded_mov(tmp_path / "big.mov", 640, 480)
    with pytest.raises(MediaTooLarge, match=r"big.mov is 640×480 = 307,200 pixels; the limit is 100,000 pixels"):
        open_media(path, SamplingPolicy(SampleMode.ALL), max_image_pixels=100_000)
    with open_media(path, SamplingPolicy(SampleMode.ALL), max_image_pixels=640 * 480) as reader:
        assert (reader.info.width, reader.info.height) == (640, 480)
        assert [f.image.shape for f in reader.frames()] == [(480, 640, 3)]


def test_ffmpeg_errors_turns_logging_on_only_while_needed() -> None:
    assert av.logging.get_level() is None
    with ffmpeg_errors() as outer, ffmpeg_errors() as inner:
        assert av.logging.get_level() == av.logging.ERROR
    assert av.logging.get_level() is None and outer == inner == []
    av.logging.set_level(av.logging.WARNING)  # a user's own level is left as it is
    try:
        with ffmpeg_errors():
            assert av.logging.get_level() == av.logging.WARNING
        assert av.logging.get_level() == av.logging.WARNING
    finally:
        av.logging.set_level(None)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.jpg", b"meeting notes, not a photo\n" * 40),
        ("archive.png", zipfile_bytes()),
        ("passwd.jpg", b"root:x:0:0:root:/root:/bin/bash\n" * 20),
    ],
)
def test_a_file_that_is_an_image_only_by_name_is_unsupported(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UnsupportedMedia, match=rf"{name} is not an image: its bytes match no image format"):
        open_media(path, SamplingPolicy(SampleMode.ALL))


def test_a_truncated_photo_is_a_decode_error_at_open(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DecodeError, match="cut.jpg is damaged or truncated"):
        open_media(path, SamplingPolicy(SampleMode.ALL))
