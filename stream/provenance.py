"""The provenance section on the wire (``dff.provenance/1``, pipeline/provenance/records.py's JSON): what
a file says about itself, in ``accepted`` (as soon as the file is opened) and in ``Report.provenance``.

Evidence beside the verdict, never part of it. ``summary`` is the line the server decided; a client
shows it as is. Pure, like stream/reports.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.records import Record, constrained

PROVENANCE_SCHEMA = "dff.provenance/1"  # pipeline.provenance.records.PROVENANCE_SCHEMA (a test keeps them equal)
C2paStateName = Literal["valid", "untrusted", "invalid", "absent", "unreadable"]  # pipeline's C2paState
SectionName = Literal["exif", "xmp", "container", "c2pa"]


@dataclass(frozen=True, slots=True)
class C2paAction(Record):
    """An action of the active manifest, e.g. ``c2pa.created`` by ``trainedAlgorithmicMedia``."""

    action: str
    digital_source_type: str | None = None
    software_agent: str | None = None
    when: str | None = None


@dataclass(frozen=True, slots=True)
class C2paIngredient(Record):
    """A file the manifest says this one was made from."""

    title: str | None
    relationship: str | None
    format: str | None


@dataclass(frozen=True, slots=True)
class C2paStatus(Record):
    """A failed validation check: its C2PA code and the SDK's explanation."""

    code: str
    explanation: str


@dataclass(frozen=True, slots=True)
class C2paManifest(Record):
    """The active manifest: claim generator, signer (certificate common name) and issuer (organisation),
    signing time (only with a time-stamp authority), algorithm, actions, ingredients."""

    label: str
    claim_generator: str | None
    title: str | None
    signer: str | None
    issuer: str | None
    signed_at: str | None
    alg: str | None
    actions: tuple[C2paAction, ...] = constrained((), maxItems=64)
    ingredients: tuple[C2paIngredient, ...] = constrained((), maxItems=64)


@dataclass(frozen=True, slots=True)
class C2paResult(Record):
    """The content credentials: ``valid`` (trusted signer), ``untrusted`` (good signature, signer on no
    trust list), ``invalid`` (``status`` says which checks failed), ``absent`` (unknown provenance) or
    ``unreadable`` (``error`` says why)."""

    state: C2paStateName
    manifest: C2paManifest | None
    status: tuple[C2paStatus, ...] = constrained((), maxItems=64)
    n_manifests: int = constrained(0, minimum=0)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MetadataTag(Record):
    """A metadata value and where it was read (``exif``, ``xmp``, ``container``, ``stream:<index>``)."""

    source: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class MetadataFlag(Record):
    """An inconsistency worth a look, with the tags behind it."""

    code: Literal["generator_source_type", "editor_software", "modified_before_taken", "phone_with_desktop_encoder"]
    message: str
    evidence: tuple[MetadataTag, ...]


@dataclass(frozen=True, slots=True)
class SectionError(Record):
    """A section that could not be read (hostile or malformed); the others were."""

    section: SectionName
    reason: str


@dataclass(frozen=True, slots=True)
class ProvenanceMetadata(Record):
    """EXIF, XMP and container tags, the flags they raise, and the sections that could not be read."""

    tags: tuple[MetadataTag, ...]
    flags: tuple[MetadataFlag, ...]
    errors: tuple[SectionError, ...]


@dataclass(frozen=True, slots=True)
class Provenance(Record):
    """What the file says about itself. ``found``: anything beyond an unsigned file without tags."""

    schema: Literal["dff.provenance/1"]
    summary: str
    found: bool
    c2pa: C2paResult
    metadata: ProvenanceMetadata
