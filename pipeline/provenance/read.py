"""A file's provenance section: its C2PA credentials and its metadata, read once where the file is opened
(pipeline/sources/file.py), from its own bytes, offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.provenance.c2pa_read import read_c2pa
from pipeline.provenance.metadata import read_metadata
from pipeline.provenance.records import Provenance

if TYPE_CHECKING:
    import av.container


def read_provenance(
    path: Path,
    *,
    is_image: bool,
    container: av.container.InputContainer | None = None,
    trust_anchors_pem: str | None = None,
) -> Provenance:
    """Provenance of ``path`` (``container``: the caller's open, allow-listed container of it, for the
    container tags). Never raises for what the file holds: unreadable sections are in the record."""
    return Provenance(
        c2pa=read_c2pa(path, trust_anchors_pem=trust_anchors_pem),
        metadata=read_metadata(path, is_image=is_image, container=container),
    )
