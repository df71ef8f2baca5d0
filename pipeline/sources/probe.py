"""File checks before any decode: the file itself (exists, regular, not empty, SHA-256), what FFmpeg may
open while reading it, which demuxers may read it, and the pixel cap.

Why this is strict: FFmpeg's reference demuxers (HLS and M3U playlists, ffconcat scripts, DASH, SDP/RTP,
image2 sequences, IMF, ...) open *other* paths and URLs named inside a file. An uploaded ``innocent.m3u8``
whose segment line names a file on the server would make the server decode that file and send back
its faces, and a missing path failing differently would tell which files exist. So an input may
reach nothing but its own bytes, with four locks, each enough alone for the playlists we know of:

1. bytes that start like a playlist, a concat script or a session description are refused before
   FFmpeg sees them, whatever the file's extension (FFmpeg's own HLS probe skips odd extensions, so a
   playlist named ``.mp4`` would otherwise get a different message from one named ``.m3u8``);
2. FFmpeg's ``format_whitelist``: the probe (on the bytes, whatever the extension) may only pick a
   demuxer of :data:`ALLOWED_DEMUXERS`; FFmpeg checks it between probing and reading the header, so a
   refused demuxer never runs. The picked name is checked against the list again after the open;
3. every file FFmpeg opens goes through our ``io_open``, which admits the one input, read-only, and
   nothing else (``protocol_whitelist=file`` as well, for any open that would bypass it);
4. image2's ``pattern_type=none``: a ``%03d`` or glob in a file name is taken literally, never expanded
   into sibling files; mov's ``enable_drefs=0`` (FFmpeg's default, made explicit): no external tracks.

A refused input gets one message per kind that depends only on its own bytes and name, never on
whether a path named inside it exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import av
import av.logging

from pipeline.errors import EmptyMedia, MediaNotFound, MediaTooLarge, UnsupportedMedia

# FFmpeg demuxer names (any comma-separated part of AVInputFormat.name, as format_whitelist matches):
# the self-contained containers of photos and videos; every other demuxer is refused.
VIDEO_DEMUXERS = frozenset(
    {
        "mov",  # mov,mp4,m4a,3gp,3g2,mj2
        "matroska",  # matroska,webm
        "avi",
        "mpegts",
        "mpeg",  # MPEG program stream (.mpg, .vob)
        "flv",
        "asf",  # .wmv
        "ogg",  # Theora
        "ivf",  # VP8/VP9/AV1 elementary streams
        "h264",  # raw Annex-B elementary streams
        "hevc",
    }
)
# animated images and stills; image2 only ever reads the one named file (pattern_type=none below)
STILL_DEMUXERS = frozenset(
    {
        "gif",
        "apng",
        "image2",
        "image2pipe",
        "ico",
        "bmp_pipe",
        "dpx_pipe",
        "exr_pipe",
        "gif_pipe",
        "hdr_pipe",
        "j2k_pipe",
        "jpeg_pipe",
        "jpegls_pipe",
        "jpegxl_pipe",
        "pam_pipe",
        "pbm_pipe",
        "pcx_pipe",
        "pgm_pipe",
        "png_pipe",
        "ppm_pipe",
        "psd_pipe",
        "qoi_pipe",
        "sgi_pipe",
        "sunrast_pipe",
        "tiff_pipe",
        "webp_pipe",
        "xwd_pipe",
    }
)  # not svg_pipe: SVG documents can name other files
# common audio files: admitted only so that they get the clear "has no video stream" refusal
AUDIO_DEMUXERS = frozenset({"mp3", "aac", "wav", "flac", "aiff"})
ALLOWED_DEMUXERS = VIDEO_DEMUXERS | STILL_DEMUXERS | AUDIO_DEMUXERS

_AVIO_FLAG_WRITE = 2  # libavformat/avio.h
_SNIFF_BYTES = 4096
# leading bytes (after a UTF-8 BOM and white space) of formats that name other files or URLs
_REFERENCE_SIGNATURES = (
    (b"#EXTM3U", "an HLS or M3U playlist"),
    (b"ffconcat version", "an FFmpeg concat script"),
    (b"v=0", "an SDP session description"),
)
_REFERENCE_MARKERS = ((b"<MPD", "a DASH manifest"),)  # XML: anywhere in the first bytes


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path) -> int:
    """The file's size in bytes; raises MediaNotFound, UnsupportedMedia (not a regular file) or EmptyMedia."""
    name = path.name
    if not path.exists():
        raise MediaNotFound(f"{name}: no such file")
    if not path.is_file():
        raise UnsupportedMedia(f"{name} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyMedia(f"{name} is empty (0 bytes)")
    return size


def check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    """Raise MediaTooLarge when ``width``×``height`` exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise _too_many_pixels(name, width, height, max_pixels)


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int) -> MediaTooLarge:
    return MediaTooLarge(f"{name} is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels")


def is_allowed(format_name: str) -> bool:
    """True when any part of FFmpeg's comma-separated demuxer name is allow-listed."""
    return any(part in ALLOWED_DEMUXERS for part in format_name.split(","))


def is_still(format_name: str) -> bool:
    """True for image demuxers: their file is a one-frame "video" (GIF/APNG: the first frame)."""
    return any(part in STILL_DEMUXERS for part in format_name.split(","))


def refused_reference(name: str, what: str) -> UnsupportedMedia:
    """The one error for inputs that name other files or URLs (identical whatever those name)."""
    return UnsupportedMedia(
        f"{name} is {what}; only self-contained video and image files are accepted "
        f"(playlists and formats that refer to other files or URLs are refused)"
    )


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise MediaNotFound(f"{path.name}: no such file") from None
    except OSError as e:
        raise UnsupportedMedia(f"{path.name} cannot be read: {e.strerror or e}") from None


def _reference_kind(head: bytes) -> str | None:
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    for signature, what in _REFERENCE_SIGNATURES:
        if start.startswith(signature):
            return what
    for marker, what in _REFERENCE_MARKERS:
        if start.startswith(b"<") and marker in head:
            return what
    return None


def _is_text(head: bytes) -> bool:
    """UTF-8 (or ASCII) without control bytes other than white space: a text file, not media."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not merely a character cut at the sniff boundary
            return False
        text = head[: e.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


class _OneFile:
    """PyAV ``io_open``: FFmpeg may open the input (read-only) and nothing else. Remembers refusals."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self.refused: list[str] = []

    def __call__(self, url: str, flags: int, options: dict[str, str]) -> IO[bytes]:
        if url != self.url or flags & _AVIO_FLAG_WRITE:
            self.refused.append(url)
            raise PermissionError(f"only the input itself may be opened, not {url!r}")
        return open(self.path, "rb")


# FFmpeg (libavutil/imgutils.c) when max_pixels refuses a size while probing; the stream then says 0×0
_MAX_PIXELS_LOG = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")
_log_lock = threading.Lock()
_log_users = 0  # blocks inside ffmpeg_errors(); PyAV's log level is process-wide


@contextmanager
def ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's ERROR-or-worse log lines from this thread while the block runs, as (level, name, text).

    PyAV leaves FFmpeg's logging off by default (its callback costs time); it is turned on at ERROR only
    while some thread needs it, and left as it is when the user set a level. Captured lines are not
    forwarded to Python logging; other threads' lines meanwhile go to Python's ``libav`` loggers.
    """
    global _log_users
    with _log_lock:
        if _log_users == 0 and av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
            # PyAV holds back a repeated line and delivers it with the next different one, i.e. into the
            # next open's capture: a refusal would then be blamed on the next file
            av.logging.set_skip_repeated(False)
            _log_users = 1
        elif _log_users:
            _log_users += 1
    try:
        with av.logging.Capture(local=True) as logged:
            yield logged
    finally:
        with _log_lock:
            if _log_users:
                _log_users -= 1
                if _log_users == 0:
                    av.logging.set_level(None)
                    av.logging.set_skip_repeated(True)


def _unsized_video(container: Any) -> bool:
    """A video stream left at 0×0: what a size refused by max_pixels while probing looks like."""
    return any(not (s.codec_context and s.codec_context.width) for s in container.streams.video)


def _refused_size(logged: list[tuple[int, str, str]]) -> tuple[int, int] | None:
    """The width, height FFmpeg's max_pixels refused, if it did."""
    for _level, _name, text in logged:
        if m := _MAX_PIXELS_LOG.search(text):
            return int(m.group(1)), int(m.group(2))
    return None


def open_container(path: Path, *, max_pixels: int) -> Any:
    """Open ``path`` with PyAV under the four locks above; returns an open ``av.InputContainer``.

    ``max_pixels`` also bounds the frames FFmpeg decodes while probing the streams (mp4/mkv: no frame
    over the cap is allocated). Raises UnsupportedMedia (refused kind, unreadable bytes) or MediaNotFound.
    """
    if (what := _reference_kind(_head(path))) is not None:
        raise refused_reference(path.name, what)
    return open_guarded(path, max_pixels=max_pixels)


def open_guarded(path: Path, *, max_pixels: int, allowed: frozenset[str] = ALLOWED_DEMUXERS) -> Any:
    """Locks 2-4 alone (no sniffing): what :func:`open_container` does after lock 1. ``allowed`` is
    there so tests can take lock 2 away and see lock 3 hold; callers keep the default."""
    name = path.name
    head = _head(path)
    url = "file:" + os.path.abspath(path)  # "file:" so a name like "concat:a|b" is never a protocol
    guard = _OneFile(url, path)
    container_options = {
        "format_whitelist": ",".join(sorted(allowed)),
        "protocol_whitelist": "file",
        "pattern_type": "none",
        "enable_drefs": "0",
    }
    try:
        with ffmpeg_errors() as logged:
            container = av.open(
                url, options={"max_pixels": str(max_pixels)}, container_options=container_options, io_open=guard
            )
        if _unsized_video(container) and (size := _refused_size(logged)) is not None:
            container.close()
            raise _too_many_pixels(name, *size, max_pixels)
    except (av.FFmpegError, OSError) as e:  # OSError: what our io_open raised, re-raised by PyAV
        if (size := _refused_size(logged)) is not None:
            raise _too_many_pixels(name, *size, max_pixels) from None
        if guard.refused:
            raise refused_reference(name, "a reference format (it names other files or URLs)") from None
        if isinstance(e, FileNotFoundError):  # av.FileNotFoundError too
            raise MediaNotFound(f"{name}: no such file") from None
        if isinstance(e, av.ArgumentError):  # what FFmpeg returns when the probed demuxer is not listed
            raise _not_accepted(name, head) from None
        if _is_text(head):
            raise _not_accepted(name, head) from None
        raise UnsupportedMedia(
            f"{name} is not a video or image this service can read (damaged, truncated or another "
            f"kind of file): {getattr(e, 'strerror', None) or e}"
        ) from None
    fmt = container.format.name
    if guard.refused or not any(part in allowed for part in fmt.split(",")):
        container.close()
        if guard.refused:
            raise refused_reference(name, "a reference format (it names other files or URLs)")
        raise _not_accepted(name, head, fmt)
    return container


def _not_accepted(name: str, head: bytes, fmt: str | None = None) -> UnsupportedMedia:
    if _is_text(head):  # FFmpeg would render it as ANSI art (tty) or subtitles
        return UnsupportedMedia(f"{name} is a text file, not a video or image")
    read_as = f" (FFmpeg reads it as {fmt!r})" if fmt else ""
    return UnsupportedMedia(
        f"{name} is in a container format this service does not accept{read_as}; only self-contained "
        f"video and image files are accepted"
    )
