"""Opening a file as a Source: the file checks, the allow-listed open, then the still or video source."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import av

from pipeline.errors import UnsupportedMedia
from pipeline.provenance import read_provenance
from pipeline.sources.base import Source
from pipeline.sources.probe import check_file, file_sha256, is_still, open_container
from pipeline.sources.still import open_still
from pipeline.sources.video import VideoSource
from pipeline.types import MediaKind, SamplingPolicy

if TYPE_CHECKING:
    from pipeline.config import Settings

MAX_DURATION_S = 3 * 3600  # defaults for callers without Settings (tests, tools); Settings has its own
MAX_IMAGE_PIXELS = 50_000_000


def open_media(
    path: str | Path,
    policy: SamplingPolicy,
    *,
    max_duration_s: float = MAX_DURATION_S,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    trust_anchors_pem: str | None = None,
) -> Source:
    """Open a video or image file for sampling (a still or a video source; close it, or use ``with``).

    Raises a MediaError subclass naming the file on bad input, before any frame is handed out. The
    source's ``provenance`` is read here, from the checked file and its allow-listed container
    (``trust_anchors_pem``: the C2PA anchors to trust, see Settings.c2pa_trust_anchors).
    """
    path = Path(path)
    name = path.name
    size = check_file(path)
    sha = file_sha256(path)
    container = open_container(path, max_pixels=max_image_pixels)
    try:
        cover_art = av.stream.Disposition.attached_pic  # mp3/m4a covers are one-picture "video" streams
        streams = [s for s in container.streams.video if not s.disposition & cover_art]
        if not streams:
            raise UnsupportedMedia(f"{name} has no video stream (audio-only or data file)")
        stream = streams[0]
        if stream.codec_context is None:
            raise UnsupportedMedia(f"{name} uses a video codec this installation cannot decode")
        fmt = container.format.name
        codec = stream.codec_context.codec.canonical_name
        facts = dict(name=name, size_bytes=size, sha256=sha, container=fmt, codec=codec, kind=MediaKind.FILE)
        # the decoder itself refuses frames over the cap, whatever the header said (av applies these at open)
        stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(max_image_pixels)}
        # provenance after the source: its checks (pixel cap, decodable still) come first, and Pillow's
        # getexif() decodes a PNG, which must not happen to an image over the cap
        source: Source
        if is_still(fmt):
            try:
                source = open_still(path, container, stream, facts, policy, max_image_pixels)
            finally:
                container.close()  # the still's pixels are decoded: nothing more to read
            source.provenance = read_provenance(path, is_image=True, trust_anchors_pem=trust_anchors_pem)
        else:
            source = VideoSource(
                container, stream, facts, policy, max_duration_s=max_duration_s, max_pixels=max_image_pixels
            )
            source.provenance = read_provenance(
                path, is_image=False, container=container, trust_anchors_pem=trust_anchors_pem
            )
        return source
    except BaseException:
        container.close()
        raise


def open_media_for(path: str | Path, settings: Settings, policy: SamplingPolicy | None = None) -> Source:
    """``open_media`` with ``settings``' caps (duration, pixels) and sampling (unless ``policy`` is given)."""
    return open_media(
        path,
        policy or settings.policy,
        max_duration_s=settings.max_duration_s,
        max_image_pixels=settings.max_image_pixels,
        trust_anchors_pem=settings.trust_anchors_pem(),
    )
