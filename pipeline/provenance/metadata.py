"""What a file's metadata says about itself: EXIF, XMP and container tags, each with where it was read,
and the inconsistencies a person would care about. Offline, from the bytes only; evidence beside the
pixels, never a verdict and never mixed into P(fake).

Read (``read_metadata``):

- **EXIF** (photos, via Pillow): Make, Model, Software, DateTime (modified), DateTimeOriginal (taken),
  Orientation.
- **XMP** (photos and videos): the first ``<x:xmpmeta>`` packet in the first ``XMP_SCAN_BYTES`` of the file,
  at most ``XMP_MAX_BYTES`` long, parsed with the standard library (expat >= 2.4 refuses entity bombs):
  IPTC ``Iptc4xmpExt:DigitalSourceType`` and ``xmp:CreatorTool``.
- **Container tags** (videos, from the caller's open PyAV container): the format's and each stream's tags (``encoder``,
  ``creation_time``, ``handler_name``, ``com.apple.*``, ``com.android.*``, ...), at most ``MAX_TAGS``.

A section that cannot be read (malformed, too large) is reported in ``Metadata.errors`` with its reason;
the other sections and the analysis go on. Flags (``Flag.code``):

- ``generator_source_type``: XMP DigitalSourceType says the content was made by an algorithm
  (``trainedAlgorithmicMedia``, ``compositeWithTrainedAlgorithmicMedia``, ``algorithmicMedia``, ...);
- ``editor_software``: a Software/CreatorTool/encoder names an editor or an image generator;
- ``modified_before_taken``: EXIF DateTime (modified) is earlier than DateTimeOriginal (taken);
- ``phone_with_desktop_encoder``: a phone make (EXIF or ``com.apple``/``com.android`` tags) beside an
  encoder tag of a desktop tool (FFmpeg's Lavf, HandBrake, ...): the file was re-encoded after the phone.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.provenance.records import GENERATED_SOURCE_TYPES, Flag, Metadata, SectionError, Tag

if TYPE_CHECKING:
    import av.container

XMP_SCAN_BYTES = 8 * 1024 * 1024  # where an XMP packet is looked for (photos keep it near the start)
XMP_MAX_BYTES = 1024 * 1024  # a larger packet is refused as hostile, not parsed
MAX_TAGS = 256  # container tags kept per file
MAX_VALUE_CHARS = 512  # a tag value longer than this is cut (with "…")

_XMP_START, _XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "iptc": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
}
FLAG_CODES = ("generator_source_type", "editor_software", "modified_before_taken", "phone_with_desktop_encoder")
_EXIF_TAGS = {271: "Make", 272: "Model", 274: "Orientation", 305: "Software", 306: "DateTime"}
_EXIF_IFD, _DATETIME_ORIGINAL = 0x8769, 36867
_EDITORS = re.compile(
    r"photoshop|lightroom|gimp|affinity|pixelmator|snapseed|facetune|firefly|dall[-·\s]?e|midjourney|"
    r"stable ?diffusion|comfyui|automatic1111|imagen|gemini|chatgpt|openai|faceapp|deepfacelab|faceswap",
    re.IGNORECASE,
)
_DESKTOP_ENCODERS = re.compile(r"\blavf|handbrake|ffmpeg|premiere|davinci|final cut|x264|x265", re.IGNORECASE)
_PHONE_MAKES = re.compile(r"apple|samsung|google|huawei|xiaomi|oneplus|oppo|vivo|motorola|sony|nokia", re.IGNORECASE)


def _clip(value: object) -> str:
    text = str(value).strip().replace("\x00", "")
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _exif(path: Path) -> list[Tag]:
    from PIL import Image

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:  # not an OSError; open_media's caps refuse these first
        raise ValueError(str(err)) from None
    with image:
        exif = image.getexif()
        tags = [Tag("exif", name, _clip(exif[code])) for code, name in _EXIF_TAGS.items() if code in exif]
        original = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
    if original is not None:
        tags.append(Tag("exif", "DateTimeOriginal", _clip(original)))
    return tags


def _xmp(path: Path) -> list[Tag]:
    with path.open("rb") as f:
        head = f.read(XMP_SCAN_BYTES)
    start = head.find(_XMP_START)
    if start < 0:
        return []
    end = head.find(_XMP_END, start)
    if end < 0:
        raise ValueError("an XMP packet starts but does not end within the scanned bytes")
    packet = head[start : end + len(_XMP_END)]
    if len(packet) > XMP_MAX_BYTES:
        raise ValueError(f"XMP packet of {len(packet)} bytes (over {XMP_MAX_BYTES}): not parsed")
    root = ET.fromstring(packet)
    tags = []
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for key, qname in (("DigitalSourceType", "iptc:DigitalSourceType"), ("CreatorTool", "xmp:CreatorTool")):
            prefix, local = qname.split(":")
            full = f"{{{_NS[prefix]}}}{local}"
            value = description.get(full)
            if value is None:
                element = description.find(qname, _NS)
                value = None if element is None else (element.text or element.get(f"{{{_NS['rdf']}}}resource"))
            if value:
                tags.append(Tag("xmp", key, _clip(value)))
    return tags


def _container(container: av.container.InputContainer) -> list[Tag]:
    """The format's and each stream's tags, from the container the caller opened (with the demuxer
    allow-list of pipeline/sources/probe.py: this module never opens media itself)."""
    tags = [Tag("container", k, _clip(v)) for k, v in container.metadata.items()]
    for stream in container.streams:
        tags += [Tag(f"stream:{stream.index}", k, _clip(v)) for k, v in stream.metadata.items()]
    return tags[:MAX_TAGS]


def _flags(tags: list[Tag]) -> list[Flag]:
    """The flags of the module docstring. Keys compare case-blind: Matroska writes its tags upper-case."""
    flags = []
    source_type = next((t for t in tags if t.key == "DigitalSourceType"), None)
    if source_type is not None and source_type.value.rstrip("/").rsplit("/", 1)[-1] in GENERATED_SOURCE_TYPES:
        kind = source_type.value.rstrip("/").rsplit("/", 1)[-1]
        flags.append(
            Flag("generator_source_type", f"XMP says the content was made by an algorithm ({kind})", (source_type,))
        )
    tools = [t for t in tags if t.key.lower() in ("software", "creatortool", "encoder") and _EDITORS.search(t.value)]
    if tools:
        names = ", ".join(t.value for t in tools)
        flags.append(Flag("editor_software", f"written by an editor or image generator: {names}", tuple(tools)))
    modified = next((t for t in tags if t.source == "exif" and t.key == "DateTime"), None)
    taken = next((t for t in tags if t.source == "exif" and t.key == "DateTimeOriginal"), None)
    if modified is not None and taken is not None and modified.value < taken.value:  # "YYYY:MM:DD HH:MM:SS"
        flags.append(
            Flag(
                "modified_before_taken",
                f"modified {modified.value}, before it was taken {taken.value}",
                (modified, taken),
            )
        )
    phone = [
        t
        for t in tags
        if (t.key == "Make" and _PHONE_MAKES.search(t.value))
        or t.key.lower().startswith(("com.apple.", "com.android."))
    ]
    encoders = [t for t in tags if t.key.lower() == "encoder" and _DESKTOP_ENCODERS.search(t.value)]
    if phone and encoders:
        flags.append(
            Flag(
                "phone_with_desktop_encoder",
                f"a phone's tags ({phone[0].key}: {phone[0].value}) beside a desktop encoder ({encoders[0].value})",
                (phone[0], encoders[0]),
            )
        )
    return flags


def read_metadata(path: Path, *, is_image: bool, container: av.container.InputContainer | None = None) -> Metadata:
    """EXIF and XMP of a photo, XMP and container tags of a video (from ``container``, the caller's open
    container of ``path``; without one there are no container tags). Never raises for what the file
    holds: each unreadable section is in ``errors``."""
    readers: list[tuple[str, Callable[[], list[Tag]]]] = [("xmp", lambda: _xmp(Path(path)))]
    if is_image:
        readers.insert(0, ("exif", lambda: _exif(Path(path))))
    elif container is not None:
        readers.append(("container", lambda: _container(container)))
    tags: list[Tag] = []
    errors: list[SectionError] = []
    for section, reader in readers:
        try:
            tags += reader()
        except (OSError, ValueError, ET.ParseError, RecursionError, KeyError, TypeError, UnicodeError) as err:
            errors.append(SectionError(section, f"{type(err).__name__}: {_clip(err)}"))
    return Metadata(tuple(tags), tuple(_flags(tags)), tuple(errors))
