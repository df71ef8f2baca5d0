"""The hostile-input records and their registry (``Case``, ``Expect``, ``@_kind``), the helpers that make
media cheaply, and the first kinds: files that are not media at all, audio only, and broken or cut videos.
``generate.py`` adds the other kinds and makes them all."""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipeline.encode import encode_video
from tests.media import astronaut, encode_audio_only, face_scene

FACE_LABELS = frozenset({"real", "fake", "inconclusive"})
NO_FACE = frozenset({"no_face"})
ERROR_CODES = frozenset({"unsupported_media", "empty_file", "too_large", "decode_error", "not_found"})
TIME_REACHED = re.compile(r"\d+(\.\d+)? s\b")  # an INCOMPLETE reason says how far decoding got, in seconds


@dataclass(frozen=True, slots=True)
class Expect:
    """One exact outcome: ``error`` (a code) xor an analysed report with ``label`` in ``labels``.

    ``faces``: at least one face is scored (each ``fake_prob`` in [0, 1]); ``incomplete``: the report says
    it stopped early and at what time; ``rotation_deg``: the clockwise display rotation the report states.
    """

    error: str | None = None
    labels: frozenset[str] = frozenset()
    faces: bool = False
    incomplete: bool = False
    rotation_deg: int | None = None

    def __post_init__(self) -> None:
        if (self.error is None) == (not self.labels):
            raise ValueError(f"an Expect is an error code or a label set, got {self.error!r} and {set(self.labels)}")
        if self.error is not None and self.error not in ERROR_CODES:
            raise ValueError(f"unknown error code {self.error!r}; expected one of {sorted(ERROR_CODES)}")
        if self.faces and not self.labels <= FACE_LABELS:
            raise ValueError(f"faces=True needs face labels, got {set(self.labels)}")

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def describe(self) -> str:
        if self.error is not None:
            return f"error {self.error}"
        extra = [w for w, on in (("faces", self.faces), ("INCOMPLETE", self.incomplete)) if on]
        if self.rotation_deg is not None:
            extra.append(f"rotation {self.rotation_deg}")
        return f"analysed {'/'.join(sorted(self.labels))}" + (f" ({', '.join(extra)})" if extra else "")


def error(code: str) -> Expect:
    return Expect(error=code)


def analysed(labels: frozenset[str], **kw: object) -> Expect:
    return Expect(labels=labels, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile input. ``upload_name``: the name the server is told (None = the file's own name);
    ``uploadable``: False for what a client cannot upload (a directory, a missing file, a symlink's target
    outside the folder) — those go through ``analyze()`` and ``dff scan`` only."""

    kind: str
    path: Path
    expect: Expect
    upload_name: str | None = None
    uploadable: bool = True
    note: str = field(default="", compare=False)


class Unavailable(Exception):
    """This installation cannot make the kind (e.g. its encoder is missing); the message says why."""


Maker = Callable[[Path], Case]
_MAKERS: dict[str, Maker] = {}


def _kind(name: str) -> Callable[[Maker], Maker]:
    def register(fn: Maker) -> Maker:
        assert name not in _MAKERS, name
        _MAKERS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------- helpers


def _face_frame(t: int = 0, width: int = 320, height: int = 240) -> np.ndarray:
    """One face tile of 150 px drifting right 2 px per frame on a grey canvas."""
    return face_scene(width, height, [(70 + 2 * t, 40, 150)])


def _face_clip(path: Path, seconds: float = 3.0, fps: int = 10, **kw: object) -> Path:
    n = round(seconds * fps)
    return encode_video(path, (_face_frame(t) for t in range(n)), fps=fps, **kw)  # type: ignore[arg-type]


def _grey(width: int, height: int, value: int = 128) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _zero_png(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width``×``height`` zeros, compressed row by row (never held in memory)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + samples
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _png_with_chunk(image: np.ndarray, tag: bytes, data: bytes) -> bytes:
    """``image`` as PNG with one extra chunk inserted right after IHDR (before the pixels)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    raw = buf.getvalue()
    end_ihdr = 8 + 4 + 4 + 13 + 4
    return raw[:end_ihdr] + _png_chunk(tag, data) + raw[end_ihdr:]


def _photo(path: Path, image: np.ndarray, **save: object) -> Path:
    Image.fromarray(image).save(path, **save)  # type: ignore[arg-type]
    return path


def _face_photo(path: Path, **save: object) -> Path:
    return _photo(path, astronaut(), **save)


def _needs_encoder(name: str) -> None:
    try:
        av.codec.Codec(name, "w")
    except Exception as err:  # av raises UnknownCodecError (a ValueError) or FFmpegError by version
        raise Unavailable(f"this PyAV wheel has no {name} encoder ({err})") from None


# ------------------------------------------------------------------------------------- not media at all


@_kind("zero_bytes")
def _(d: Path) -> Case:
    path = d / "empty.mp4"
    path.write_bytes(b"")
    return Case("zero_bytes", path, error("empty_file"))


@_kind("text_as_jpg")
def _(d: Path) -> Case:
    path = d / "notes.jpg"
    path.write_text("Dear diary,\nthis is not a photo.\n" * 20)
    return Case("text_as_jpg", path, error("unsupported_media"))


@_kind("html_as_mp4")
def _(d: Path) -> Case:
    path = d / "page.mp4"
    path.write_text("<!doctype html><html><head><title>x</title></head><body><video src=a.mp4></video></body></html>")
    return Case("html_as_mp4", path, error("unsupported_media"))


@_kind("zip_as_png")
def _(d: Path) -> Case:
    path = d / "archive.png"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("photo.jpg", b"\xff\xd8\xff" + b"\0" * 100)
        z.writestr("readme.txt", "hello")
    return Case("zip_as_png", path, error("unsupported_media"))


@_kind("zip_as_mp4")
def _(d: Path) -> Case:
    path = d / "archive.mp4"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("clip.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 4000)
    return Case("zip_as_mp4", path, error("unsupported_media"))


@_kind("ansi_art_txt")
def _(d: Path) -> Case:
    path = d / "banner.txt"
    path.write_bytes(b"".join(b"\x1b[1;3%dm#### HELLO ####\x1b[0m\r\n" % (i % 8) for i in range(200)))
    return Case("ansi_art_txt", path, error("unsupported_media"))


@_kind("missing_file")
def _(d: Path) -> Case:
    return Case("missing_file", d / "missing.mp4", error("not_found"), uploadable=False)


@_kind("directory_named_mp4")
def _(d: Path) -> Case:
    path = d / "x.mp4"
    path.mkdir()
    (path / "inside.txt").write_text("a directory, not a video")
    return Case("directory_named_mp4", path, error("unsupported_media"), uploadable=False)


@_kind("symlink_to_etc_passwd")
def _(d: Path) -> Case:
    path = d / "passwd.jpg"
    os.symlink("/etc/passwd", path)
    return Case("symlink_to_etc_passwd", path, error("unsupported_media"), uploadable=False)


# ---------------------------------------------------------------------------------------- audio only


@_kind("audio_only_aac_m4a")
def _(d: Path) -> Case:
    return Case("audio_only_aac_m4a", encode_audio_only(d / "voice.m4a", codec="aac"), error("unsupported_media"))


@_kind("audio_only_mp2_mka")
def _(d: Path) -> Case:
    return Case("audio_only_mp2_mka", encode_audio_only(d / "voice.mka", codec="mp2"), error("unsupported_media"))


@_kind("audio_only_pcm_wav")
def _(d: Path) -> Case:
    path = d / "voice.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return Case("audio_only_pcm_wav", path, error("unsupported_media"))


# ------------------------------------------------------------------------------- broken and cut videos


def _cut(d: Path, kind: str, fraction: float) -> Case:
    """A 6-s faststart clip (index first), every frame a keyframe so its bytes spread evenly over its time,
    cut after ``fraction`` of its bytes: 10% still holds the first frame (0.4 s of data)."""
    options = {"movflags": "faststart"}
    full = _face_clip(d / f".{kind}.full.mp4", seconds=6.0, fps=5, gop=1, container_options=options)
    data = full.read_bytes()
    full.unlink()
    path = d / f"cut_{round(fraction * 100)}pct.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    return Case(kind, path, analysed(FACE_LABELS, faces=True, incomplete=True))


@_kind("truncated_10pct")
def _(d: Path) -> Case:
    return _cut(d, "truncated_10pct", 0.10)


@_kind("truncated_50pct")
def _(d: Path) -> Case:
    return _cut(d, "truncated_50pct", 0.50)


@_kind("truncated_90pct")
def _(d: Path) -> Case:
    return _cut(d, "truncated_90pct", 0.90)


@_kind("truncated_index_at_end")
def _(d: Path) -> Case:
    """An mp4 whose index (moov) is written last, cut at 90%: without the index nothing can be located."""
    full = _face_clip(d / ".moov_last.full.mp4", seconds=2.0)
    data = full.read_bytes()
    full.unlink()
    path = d / "cut_no_index.mp4"
    path.write_bytes(data[: int(len(data) * 0.9)])
    return Case("truncated_index_at_end", path, error("unsupported_media"))


@_kind("corrupted_mid_stream_mp4")
def _(d: Path) -> Case:
    """A 4-s faststart mp4 with 4,000 random bytes in the middle of its frame data."""
    path = _face_clip(d / "garbled.mp4", seconds=4.0, gop=5, container_options={"movflags": "faststart"})
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(9).bytes(4000)
    path.write_bytes(bytes(data))
    return Case("corrupted_mid_stream_mp4", path, analysed(FACE_LABELS, faces=True, incomplete=True))


@_kind("corrupted_mid_stream_ts")
def _(d: Path) -> Case:
    """A 4-s MPEG-TS clip with 20 transport packets in the middle replaced by random ones (sync byte kept):
    the continuity counters break, which the demuxer flags as corrupt."""
    path = _face_clip(d / "garbled.ts", seconds=4.0, gop=5)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(9)
    mid = (len(data) // 2) // 188 * 188
    for i in range(20):
        at = mid + 188 * i
        data[at : at + 188] = rng.bytes(188)
        data[at] = 0x47
    path.write_bytes(bytes(data))
    return Case("corrupted_mid_stream_ts", path, analysed(FACE_LABELS, faces=True, incomplete=True))


@_kind("truncated_jpeg")
def _(d: Path) -> Case:
    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG", quality=90)
    path = d / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return Case("truncated_jpeg", path, error("decode_error"))
