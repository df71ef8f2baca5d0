"""Metadata as evidence (pipeline/provenance/metadata.py): the tests write EXIF, XMP and container tags
themselves and read back the exact fields, the flags, and a per-section error for hostile metadata."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipeline.provenance.metadata import XMP_MAX_BYTES, read_metadata
from pipeline.sources.probe import open_container

XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
 xmp:CreatorTool="Some Image Generator 2.1">
<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>
</rdf:Description></rdf:RDF></x:xmpmeta>"""


# a billion laughs: seven levels of ten-fold entities (expat >= 2.4 refuses to expand it)
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY l0 "aaaaaaaaaa">'
    + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 8))
    + "]><x:xmpmeta>&l7;</x:xmpmeta>"
)


def picture() -> Image.Image:
    return Image.fromarray(np.full((32, 32, 3), 120, np.uint8))


def test_exif_fields_and_the_editor_and_time_flags(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[271], exif[272], exif[305], exif[306], exif[274] = (
        "Apple",
        "iPhone 15",
        "Adobe Photoshop 25.0",
        "2024:01:01 10:00:00",
        1,
    )
    exif.get_ifd(0x8769)[36867] = "2024:05:01 09:00:00"
    path = tmp_path / "edited.jpg"
    picture().save(path, exif=exif)
    meta = read_metadata(path, is_image=True)
    assert meta.errors == ()
    assert (meta.get("exif", "Make"), meta.get("exif", "Model"), meta.get("exif", "Software")) == (
        "Apple",
        "iPhone 15",
        "Adobe Photoshop 25.0",
    )
    assert meta.get("exif", "DateTimeOriginal") == "2024:05:01 09:00:00" and meta.get("exif", "Orientation") == "1"
    assert [f.code for f in meta.flags] == ["editor_software", "modified_before_taken"]


def test_xmp_digital_source_type_says_generated(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    path = tmp_path / "generated.png"
    picture().save(path, pnginfo=info)
    meta = read_metadata(path, is_image=True)
    assert meta.get("xmp", "DigitalSourceType").endswith("/trainedAlgorithmicMedia")
    assert meta.get("xmp", "CreatorTool") == "Some Image Generator 2.1"
    assert [f.code for f in meta.flags] == ["generator_source_type"]


def test_container_tags_of_a_video_and_the_phone_reencoded_flag(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:
        out.metadata["encoder"] = "Lavf61.7.100"
        out.metadata["com.android.manufacturer"] = "Google"
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.metadata["handler_name"] = "VideoHandle"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with open_container(path, max_pixels=10**6) as container:
        meta = read_metadata(path, is_image=False, container=container)
    keys = {(t.source, t.key.lower()) for t in meta.tags}
    assert ("container", "encoder") in keys and ("stream:0", "handler_name") in keys, meta.tags
    assert "phone_with_desktop_encoder" in [f.code for f in meta.flags]


def test_a_plain_file_says_nothing_and_hostile_xmp_is_a_section_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    picture().save(plain)
    quiet = read_metadata(plain, is_image=True)
    assert quiet.flags == () and quiet.errors == () and quiet.get("xmp", "DigitalSourceType") is None
    for name, packet in {
        "huge.png": XMP.replace("</rdf:RDF>", "<!--" + "x" * (XMP_MAX_BYTES + 10) + "--></rdf:RDF>"),
        "broken.png": "<x:xmpmeta><rdf:RDF><unclosed></x:xmpmeta>",
        "bomb.png": BOMB,
    }.items():
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet)
        path = tmp_path / name
        picture().save(path, pnginfo=info)
        meta = read_metadata(path, is_image=True)
        assert [e.section for e in meta.errors] == ["xmp"], (name, meta.errors)
        assert meta.flags == ()
