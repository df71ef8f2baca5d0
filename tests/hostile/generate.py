"""Hostile and unusual inputs, made in a temp folder: each a ``Case(kind, path, expect)``.

``expect`` is the exact outcome the service must give, in every mode (``analyze()``, ``dff scan``, the
server): an error code of ``pipeline/errors.py``, or an analysed report whose label is in a given set
(``no_face`` for face-less and tiny inputs; real/fake/inconclusive for inputs with a face; INCOMPLETE with
the time reached for videos that break mid-stream). Everything is made here from the astronaut face tiles
of ``tests/media.py``; big headers (pixel bombs, a 12000×12000 video) are made cheaply by compressing
rows of zeros, never by holding the image.

The records, the registry and the first kinds are in ``cases.py``; this module adds the rest (tiny and odd
sizes, pixel formats, rotation, timing and codecs, size caps, names, references, good files).

    cases, unavailable = generate(tmp_dir)     # unavailable: kind -> why (an encoder this wheel lacks)
"""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipeline.encode import encode_video
from tests.hostile.cases import (
    _MAKERS,
    FACE_LABELS,
    NO_FACE,
    Case,
    Unavailable,
    _face_clip,
    _face_frame,
    _face_photo,
    _grey,
    _kind,
    _needs_encoder,
    _photo,
    _png_with_chunk,
    _zero_png,
    analysed,
    error,
)
from tests.media import astronaut

# -------------------------------------------------------------------------------- tiny and odd sizes


def _tiny_photo(d: Path, kind: str, width: int, height: int) -> Case:
    rng = np.random.default_rng(width * 1000 + height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Case(kind, _photo(d / f"tiny_{width}x{height}.png", image), analysed(NO_FACE))


for _w, _h in ((1, 1), (2, 2), (19, 19), (38, 38), (33, 17), (1, 400)):
    _kind(f"photo_{_w}x{_h}")(lambda d, w=_w, h=_h: _tiny_photo(d, f"photo_{w}x{h}", w, h))


@_kind("video_16x16")
def _(d: Path) -> Case:
    rng = np.random.default_rng(16)
    frames = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(10)]
    return Case("video_16x16", encode_video(d / "tiny16.mp4", frames, fps=5), analysed(NO_FACE))


@_kind("video_38x38")
def _(d: Path) -> Case:
    frames = [np.asarray(Image.fromarray(_face_frame(t)).resize((38, 38))) for t in range(10)]
    return Case("video_38x38", encode_video(d / "tiny38.mp4", frames, fps=5), analysed(NO_FACE))


@_kind("video_one_frame")
def _(d: Path) -> Case:
    path = encode_video(d / "one_frame.mp4", [_face_frame()], fps=10)
    return Case("video_one_frame", path, analysed(FACE_LABELS, faces=True))


# ---------------------------------------------------------------------------------- pixel formats


@_kind("png_16bit_grey")
def _(d: Path) -> Case:
    grey = np.asarray(Image.fromarray(astronaut()).convert("L"), dtype=np.uint16) * 257
    path = d / "deep16.png"
    Image.fromarray(grey).save(path)  # mode I;16
    return Case("png_16bit_grey", path, analysed(FACE_LABELS, faces=True))


@_kind("jpeg_cmyk")
def _(d: Path) -> Case:
    path = d / "print_cmyk.jpg"
    Image.fromarray(astronaut()).convert("CMYK").save(path, quality=92)
    return Case("jpeg_cmyk", path, analysed(FACE_LABELS, faces=True))


@_kind("jpeg_grey")
def _(d: Path) -> Case:
    path = d / "grey.jpg"
    Image.fromarray(astronaut()).convert("L").save(path, quality=92)
    return Case("jpeg_grey", path, analysed(FACE_LABELS, faces=True))


@_kind("png_palette_alpha")
def _(d: Path) -> Case:
    im = Image.fromarray(astronaut()).convert("RGBA")
    im.putpixel((0, 0), (0, 0, 0, 0))
    path = d / "palette_alpha.png"
    im.quantize(colors=255).save(path, transparency=0)
    return Case("png_palette_alpha", path, analysed(FACE_LABELS, faces=True))


@_kind("gif_animated")
def _(d: Path) -> Case:
    frames = [Image.fromarray(_face_frame(4 * t, 400, 300)) for t in range(4)]
    path = d / "moving.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Case("gif_animated", path, analysed(FACE_LABELS, faces=True))


@_kind("webp_animated")
def _(d: Path) -> Case:
    frames = [Image.fromarray(_face_frame(4 * t, 400, 300)) for t in range(4)]
    path = d / "moving.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, quality=85)
    return Case("webp_animated", path, analysed(FACE_LABELS, faces=True))


@_kind("jpeg_named_mp4")
def _(d: Path) -> Case:
    path = _face_photo(d / "photo_really.mp4", format="JPEG")
    return Case("jpeg_named_mp4", path, analysed(FACE_LABELS, faces=True), note="content decides, not the suffix")


# -------------------------------------------------------------------------------------- rotation


def _exif_rotated(d: Path, kind: str, orientation: int, k: int) -> Case:
    """Stored pixels turned so that the EXIF ``orientation`` displays the face upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _photo(d / f"exif{orientation}.jpg", np.ascontiguousarray(np.rot90(astronaut(), k=k)), exif=exif)
    rotation = {6: 90, 8: 270}[orientation]
    return Case(kind, path, analysed(FACE_LABELS, faces=True, rotation_deg=rotation))


@_kind("exif_orientation_6")
def _(d: Path) -> Case:
    return _exif_rotated(d, "exif_orientation_6", 6, k=1)  # display = stored turned 90° clockwise


@_kind("exif_orientation_8")
def _(d: Path) -> Case:
    return _exif_rotated(d, "exif_orientation_8", 8, k=-1)


@_kind("video_rotation_90")
def _(d: Path) -> Case:
    frames = (np.ascontiguousarray(np.rot90(_face_frame(t), k=1)) for t in range(30))
    path = encode_video(d / "phone_rot90.mp4", frames, fps=10, rotation_deg=90)
    return Case("video_rotation_90", path, analysed(FACE_LABELS, faces=True, rotation_deg=90))


# ------------------------------------------------------------------------------ timing and codecs


@_kind("video_vfr")
def _(d: Path) -> Case:
    pts = [0, 1, 2, 7, 8, 15, 16, 17, 25, 31, 32, 40]  # 1/10 s units: gaps of 0.1 to 0.8 s
    path = encode_video(d / "vfr.mp4", [_face_frame(t) for t in range(len(pts))], fps=10, pts=pts)
    return Case("video_vfr", path, analysed(FACE_LABELS, faces=True))


def _codec_clip(d: Path, kind: str, codec: str, name: str, options: dict[str, str]) -> Case:
    _needs_encoder(codec)
    path = _face_clip(d / name, seconds=3.0, codec=codec, options=options)
    return Case(kind, path, analysed(FACE_LABELS, faces=True))


@_kind("codec_hevc")
def _(d: Path) -> Case:
    return _codec_clip(d, "codec_hevc", "libx265", "hevc.mp4", {"preset": "ultrafast", "x265-params": "log-level=0"})


@_kind("codec_vp9")
def _(d: Path) -> Case:
    return _codec_clip(d, "codec_vp9", "libvpx-vp9", "vp9.webm", {"deadline": "realtime", "cpu-used": "8"})


@_kind("codec_av1")
def _(d: Path) -> Case:
    return _codec_clip(d, "codec_av1", "libsvtav1", "av1.mkv", {"preset": "12"})


@_kind("video_three_hours")
def _(d: Path) -> Case:
    """10,900 s at 1 fps, 32×32: over the default 3-h cap (10,800 s); encodes in about a second."""
    frames = (_grey(32, 32, (7 * i) % 256) for i in range(10_900))
    path = encode_video(d / "three_hours.mp4", frames, fps=1, options={"preset": "ultrafast"})
    return Case("video_three_hours", path, error("too_large"))


@_kind("declared_duration_huge")
def _(d: Path) -> Case:
    """Three frames whose timestamps span 11,000 s (pts 0, 1 and 11,000 at 1 fps): the index declares a
    duration over the 3-h cap although there is almost nothing to decode."""
    path = encode_video(d / "sparse.mp4", [_face_frame(t) for t in range(3)], fps=1, pts=[0, 1, 11_000])
    return Case("declared_duration_huge", path, error("too_large"))


# --------------------------------------------------------------------------------------- size caps


@_kind("png_pixel_bomb_20000")
def _(d: Path) -> Case:
    path = d / "bomb.png"
    path.write_bytes(_zero_png(20_000, 20_000))  # 400 Mpx of zeros in ~390 KB
    return Case("png_pixel_bomb_20000", path, error("too_large"))


@_kind("video_12000x12000")
def _(d: Path) -> Case:
    """Finding 6: a one-frame 12000×12000 (144 Mpx) video — a PNG-coded frame in a MOV, ~140 KB."""
    path = d / "huge_frame.mov"
    packet_data = _zero_png(12_000, 12_000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 12_000, 12_000, "gray"
        packet = av.Packet(packet_data)
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, 0, 0, Fraction(1, 1)
        out.mux(packet)
    return Case("video_12000x12000", path, error("too_large"))


@_kind("png_huge_iccp")
def _(d: Path) -> Case:
    """A face photo with a 3 MB (incompressible) ICC profile chunk ahead of its pixels."""
    profile = np.random.default_rng(3).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    data = _png_with_chunk(astronaut(), b"iCCP", b"junk profile\0\0" + zlib.compress(profile, 1))
    path = d / "huge_icc.png"
    path.write_bytes(data)
    return Case("png_huge_iccp", path, analysed(FACE_LABELS, faces=True))


@_kind("png_huge_xmp")
def _(d: Path) -> Case:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b"<!-- padding -->" * (3 << 16) + b"</x:xmpmeta>"
    data = _png_with_chunk(astronaut(), b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    path = d / "huge_xmp.png"
    path.write_bytes(data)
    return Case("png_huge_xmp", path, analysed(FACE_LABELS, faces=True))


@_kind("jpeg_huge_xmp")
def _(d: Path) -> Case:
    """A face JPEG with 48 APP1 XMP segments of 64 KB each (3 MB) after SOI."""
    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG", quality=90)
    raw = buf.getvalue()
    ns = b"http://ns.adobe.com/xap/1.0/\0"
    body = ns + b" " * (65533 - len(ns))
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    path = d / "huge_xmp.jpg"
    path.write_bytes(raw[:2] + segment * 48 + raw[2:])
    return Case("jpeg_huge_xmp", path, analysed(FACE_LABELS, faces=True))


# ------------------------------------------------------------------------------------------- names


@_kind("name_unicode")
def _(d: Path) -> Case:
    path = _face_photo(d / "café naïve 😀 ñ Ω.jpg")
    return Case("name_unicode", path, analysed(FACE_LABELS, faces=True))


@_kind("name_200_chars")
def _(d: Path) -> Case:
    path = _face_photo(d / ("n" * 196 + ".jpg"))
    return Case("name_200_chars", path, analysed(FACE_LABELS, faces=True))


@_kind("name_255_bytes")
def _(d: Path) -> Case:
    """Finding 7: the longest legal name (255 bytes); ``dff scan --json`` used to crash writing its report."""
    name = "b" * 251 + ".jpg"
    assert len(name.encode()) == 255
    return Case("name_255_bytes", _face_photo(d / name), analysed(FACE_LABELS, faces=True))


@_kind("name_200_cjk")
def _(d: Path) -> Case:
    """Finding 7: the server is told a name of 200 CJK characters (604 bytes: too long for any disk); on
    this disk the file has 83 of them (253 bytes)."""
    path = _face_photo(d / ("漢" * 83 + ".png"))
    return Case("name_200_cjk", path, analysed(FACE_LABELS, faces=True), upload_name="字" * 200 + ".png")


# --------------------------------------------------------------------------------- references


def _secret_clip(d: Path) -> Path:
    """A real video in another folder, which no reference in an upload may reach."""
    elsewhere = d / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    secret = elsewhere / "secret.mp4"
    if not secret.exists():
        _face_clip(secret, seconds=2.0)
    return secret


def _hls(target: Path) -> str:
    return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{target}\n#EXT-X-ENDLIST\n"


@_kind("hls_playlist_existing_path")
def _(d: Path) -> Case:
    """Finding 1: a playlist whose segment names a real video elsewhere on disk."""
    path = d / "innocent.m3u8"
    path.write_text(_hls(_secret_clip(d).resolve()))
    return Case("hls_playlist_existing_path", path, error("unsupported_media"))


@_kind("hls_playlist_missing_path")
def _(d: Path) -> Case:
    """Finding 1: the same with a path that does not exist — must be refused exactly like the other."""
    path = d / "innocent_missing.m3u8"
    path.write_text(_hls(d.resolve() / "elsewhere" / "no_such_secret.mp4"))
    return Case("hls_playlist_missing_path", path, error("unsupported_media"))


@_kind("hls_playlist_named_mp4")
def _(d: Path) -> Case:
    path = d / "innocent_playlist.mp4"
    path.write_text(_hls(_secret_clip(d).resolve()))
    return Case("hls_playlist_named_mp4", path, error("unsupported_media"))


@_kind("ffconcat_script")
def _(d: Path) -> Case:
    path = d / "concat.mp4"
    path.write_text(f"ffconcat version 1.0\nfile '{_secret_clip(d).resolve()}'\n")
    return Case("ffconcat_script", path, error("unsupported_media"))


@_kind("image2_pattern_name")
def _(d: Path) -> Case:
    """A face-less JPEG literally named ``img%03d.jpg`` beside face photos ``img000.jpg``..: the pattern
    must not be expanded, so only its own (face-less) bytes are analysed."""
    folder = d / "pattern"
    folder.mkdir()
    for i in range(3):
        _face_photo(folder / f"img{i:03d}.jpg")
    path = _photo(folder / "img%03d.jpg", _grey(320, 240, 100))
    return Case("image2_pattern_name", path, analysed(NO_FACE))


# ------------------------------------------------------------------------------------- good files


@_kind("good_photo")
def _(d: Path) -> Case:
    return Case("good_photo", _face_photo(d / "astronaut.jpg", quality=92), analysed(FACE_LABELS, faces=True))


@_kind("good_clip")
def _(d: Path) -> Case:
    return Case("good_clip", _face_clip(d / "good_clip.mp4", seconds=3.0), analysed(FACE_LABELS, faces=True))


@_kind("good_png_no_face")
def _(d: Path) -> Case:
    return Case("good_png_no_face", _photo(d / "wall.png", _grey(320, 240, 60)), analysed(NO_FACE))


KINDS: tuple[str, ...] = tuple(_MAKERS)


def generate(folder: Path) -> tuple[dict[str, Case], dict[str, str]]:
    """Make every kind in ``folder``: ``({kind: Case}, {kind: why it could not be made here})``."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}
    unavailable: dict[str, str] = {}
    for kind, make in _MAKERS.items():
        try:
            case = make(folder)
        except Unavailable as why:
            unavailable[kind] = str(why)
            continue
        assert case.kind == kind, (case.kind, kind)
        cases[kind] = case
    names = [c.path.name for c in cases.values()]
    assert len(names) == len(set(names)), "case file names must be unique (dff scan lines are keyed by name)"
    return cases, unavailable
