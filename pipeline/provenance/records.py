"""The provenance records: what a file says about itself (C2PA content credentials, EXIF/XMP, container
tags), read from its bytes offline. Evidence shown beside the pixels' verdict: never mixed into P(fake),
never a verdict on its own. Frozen and picklable (they cross the Ray seam inside reports).

``Provenance.summary`` is the one line a person reads (``dff scan``, the CSV, the page's card); it is
decided here once, so no reader re-derives it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

PROVENANCE_SCHEMA = "dff.provenance/1"
GENERATED_SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicMedia",
    "compositeSynthetic",
)
NO_MANIFEST = "no C2PA manifest: unknown provenance (that is not evidence of manipulation)"


@dataclass(frozen=True, slots=True)
class Tag:
    """One metadata value and where it was read: ``source`` is ``exif``, ``xmp``, ``container`` or
    ``stream:<index>``."""

    source: str
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Flag:
    """An inconsistency worth a person's look (codes in pipeline/provenance/metadata.py), with the tags
    behind it."""

    code: str
    message: str
    evidence: tuple[Tag, ...]


@dataclass(frozen=True, slots=True)
class SectionError:
    """Why one section (``exif``, ``xmp``, ``container``, ``c2pa``) could not be read; the others were."""

    section: str
    reason: str


@dataclass(frozen=True, slots=True)
class Metadata:
    """Every tag read, the flags, and the sections that could not be read."""

    tags: tuple[Tag, ...]
    flags: tuple[Flag, ...]
    errors: tuple[SectionError, ...] = ()

    def get(self, source: str, key: str) -> str | None:
        return next((t.value for t in self.tags if t.source == source and t.key == key), None)


class C2paState(Enum):
    """The validation state of a file's content credentials."""

    VALID = "valid"  # signature and every hash check out, and the signer chains to a configured trust anchor
    UNTRUSTED = "untrusted"  # signature and hashes check out, but the signer is not on the trust list
    INVALID = "invalid"  # a signature or hash check failed: the file changed after signing, or was forged
    ABSENT = "absent"  # no manifest: unknown provenance
    UNREADABLE = "unreadable"  # a manifest is there but could not be read (``C2pa.error`` says why)


@dataclass(frozen=True, slots=True)
class C2paAction:
    """One entry of the active manifest's ``c2pa.actions`` assertion, e.g. ``c2pa.created`` with an IPTC
    ``digital_source_type`` URL ending in ``trainedAlgorithmicMedia``."""

    action: str
    digital_source_type: str | None = None
    software_agent: str | None = None
    when: str | None = None

    @property
    def generated(self) -> bool:
        """The action says an algorithm made the content."""
        kind = (self.digital_source_type or "").rstrip("/").rsplit("/", 1)[-1]
        return kind in GENERATED_SOURCE_TYPES


@dataclass(frozen=True, slots=True)
class C2paIngredient:
    """A file the active manifest says this one was made from."""

    title: str | None
    relationship: str | None  # "parentOf", "componentOf", "inputTo"
    format: str | None  # a MIME type


@dataclass(frozen=True, slots=True)
class C2paStatus:
    """A validation code of the C2PA specification (``assertion.dataHash.mismatch``,
    ``signingCredential.untrusted``, ...) with the SDK's explanation."""

    code: str
    explanation: str


@dataclass(frozen=True, slots=True)
class C2paManifest:
    """The active manifest: who made the claim, who signed it and when, what it says was done."""

    label: str
    claim_generator: str | None  # "name version" of each claim_generator_info entry, joined with ", "
    title: str | None
    signer: str | None  # the signing certificate's common name
    issuer: str | None  # the signing certificate's organisation
    signed_at: str | None  # ISO 8601, only when a time-stamp authority countersigned
    alg: str | None
    actions: tuple[C2paAction, ...] = ()
    ingredients: tuple[C2paIngredient, ...] = ()


@dataclass(frozen=True, slots=True)
class C2pa:
    """What the C2PA reader found. ``status`` lists the failed checks (the reasons for ``invalid``, or
    the untrusted signer); ``n_manifests`` counts the store's manifests (the active one and its history)."""

    state: C2paState
    manifest: C2paManifest | None = None
    status: tuple[C2paStatus, ...] = ()
    n_manifests: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.manifest is None) != (self.state in (C2paState.ABSENT, C2paState.UNREADABLE)):
            need = "needs" if self.manifest is None else "has no"
            raise ValueError(f"a {self.state.value} C2PA result {need} manifest")
        if (self.error is not None) != (self.state is C2paState.UNREADABLE):
            raise ValueError("an unreadable C2PA result, and only that one, carries an error")


@dataclass(frozen=True, slots=True)
class Provenance:
    """A file's provenance section (schema ``dff.provenance/1``)."""

    c2pa: C2pa
    metadata: Metadata
    schema: str = PROVENANCE_SCHEMA

    @property
    def found(self) -> bool:
        """Anything beyond an unsigned file without tags: a manifest, a tag, a flag or a section error."""
        return (
            self.c2pa.state is not C2paState.ABSENT
            or bool(self.metadata.tags)
            or bool(self.metadata.flags)
            or bool(self.metadata.errors)
        )

    @property
    def summary(self) -> str:
        """One line: the C2PA state, what the manifest says was done, the flags and unreadable sections."""
        parts = [_c2pa_line(self.c2pa)]
        parts += [f.message for f in self.metadata.flags]
        parts += [f"{e.section} unreadable: {e.reason}" for e in self.metadata.errors]
        return " · ".join(parts)


def _c2pa_line(c2pa: C2pa) -> str:
    manifest = c2pa.manifest
    if c2pa.state is C2paState.ABSENT:
        return NO_MANIFEST
    if c2pa.state is C2paState.UNREADABLE or manifest is None:
        return f"C2PA manifest unreadable ({c2pa.error})"
    who = manifest.signer or "an unnamed signer"
    if manifest.issuer and manifest.issuer != manifest.signer:
        who += f" ({manifest.issuer})"
    if c2pa.state is C2paState.VALID:
        line = f"C2PA valid: signed by {who}"
    elif c2pa.state is C2paState.UNTRUSTED:
        line = f"C2PA signature valid, but the signer {who} is not on the trust list"
    else:
        failed = [s.code for s in c2pa.status if s.code != "signingCredential.untrusted"]
        line = f"C2PA INVALID ({', '.join(failed) or 'failed checks'}): signed by {who}, changed or forged since"
    generated = [a for a in manifest.actions if a.generated]
    if generated:
        kind = (generated[0].digital_source_type or "").rstrip("/").rsplit("/", 1)[-1]
        line += f"; says {generated[0].action} by an algorithm ({kind})"
    if manifest.claim_generator:
        line += f"; claim by {manifest.claim_generator}"
    return line


def provenance_to_dict(provenance: Provenance) -> dict[str, Any]:
    """The report's ``provenance`` object: the records as plain JSON, with ``summary`` and ``found``."""
    c2pa, meta = provenance.c2pa, provenance.metadata
    return {
        "schema": provenance.schema,
        "summary": provenance.summary,
        "found": provenance.found,
        "c2pa": {
            "state": c2pa.state.value,
            "manifest": None if c2pa.manifest is None else dataclasses.asdict(c2pa.manifest),
            "status": [dataclasses.asdict(s) for s in c2pa.status],
            "n_manifests": c2pa.n_manifests,
            "error": c2pa.error,
        },
        "metadata": {
            "tags": [dataclasses.asdict(t) for t in meta.tags],
            "flags": [dataclasses.asdict(f) for f in meta.flags],
            "errors": [dataclasses.asdict(e) for e in meta.errors],
        },
    }


def provenance_from_dict(data: dict[str, Any]) -> Provenance:
    """Inverse of ``provenance_to_dict`` (``summary`` and ``found`` are derived again); ValueError on
    another schema, KeyError/TypeError on a malformed body."""
    if data.get("schema") != PROVENANCE_SCHEMA:
        raise ValueError(f"not a {PROVENANCE_SCHEMA} section (schema={data.get('schema')!r})")
    c, m = data["c2pa"], data["metadata"]
    manifest = c["manifest"]
    if manifest is not None:
        manifest = C2paManifest(
            **{
                **manifest,
                "actions": tuple(C2paAction(**a) for a in manifest["actions"]),
                "ingredients": tuple(C2paIngredient(**i) for i in manifest["ingredients"]),
            }
        )

    def tag(t: dict[str, Any]) -> Tag:
        return Tag(t["source"], t["key"], t["value"])

    return Provenance(
        c2pa=C2pa(
            C2paState(c["state"]),
            manifest,
            tuple(C2paStatus(**s) for s in c["status"]),
            c["n_manifests"],
            c["error"],
        ),
        metadata=Metadata(
            tuple(tag(t) for t in m["tags"]),
            tuple(Flag(f["code"], f["message"], tuple(tag(t) for t in f["evidence"])) for f in m["flags"]),
            tuple(SectionError(e["section"], e["reason"]) for e in m["errors"]),
        ),
        schema=data["schema"],
    )
