"""Provenance: what a file says about itself (C2PA, EXIF/XMP, container tags), beside the pixels' verdict."""

from pipeline.provenance.read import read_provenance
from pipeline.provenance.records import C2paState, Provenance

__all__ = ["C2paState", "Provenance", "read_provenance"]
