"""The Provenance card (ui/cards.py ``provenance_card``): pure, record in, HTML out. Every value comes from
a possibly hostile file, so every one is escaped; each C2PA state has its badge; an unsigned file says that
the absence of credentials is not evidence of manipulation."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from stream import protocol as p
from ui import cards

GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def manifest(**kw) -> p.C2paManifest:
    values = dict(
        label="urn:c2pa:1",
        claim_generator="dff-test 1.0",
        title="generated.jpg",
        signer="DFF Test Signer",
        issuer="DFF Test Lab",
        signed_at=None,
        alg="Es256",
        actions=(p.C2paAction("c2pa.created", GENERATED, "Test Generator 2"),),
        ingredients=(p.C2paIngredient("parent.jpg", "parentOf", "image/jpeg"),),
    )
    return p.C2paManifest(**{**values, **kw})


def provenance(state: str, *, summary: str = "a summary", tags=(), flags=(), errors=(), **c2pa) -> p.Provenance:
    if state in ("absent", "unreadable"):
        c2pa.setdefault("manifest", None)
    else:
        c2pa.setdefault("manifest", manifest())
    if state == "unreadable":
        c2pa.setdefault("error", "JUMBF nested too deep")
    return p.Provenance(
        schema="dff.provenance/1",
        summary=summary,
        found=state != "absent" or bool(tags),
        c2pa=p.C2paResult(state=state, **c2pa),
        metadata=p.ProvenanceMetadata(tuple(tags), tuple(flags), tuple(errors)),
    )


class _Collect(HTMLParser):
    """Tags and attributes as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def parsed(html: str) -> _Collect:
    parser = _Collect()
    parser.feed(html)
    return parser


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize(
    ("state", "badge"),
    [
        ("valid", "Content credentials valid"),
        ("untrusted", "Signed — signer not on the trust list"),
        ("invalid", "Content credentials INVALID"),
        ("absent", "No content credentials — unknown provenance"),
        ("unreadable", "Credentials unreadable"),
    ],
)
def test_each_state_has_its_badge_and_every_card_says_what_provenance_is(state, badge):
    html = cards.provenance_card(provenance(state))
    assert f'data-state="{state}"' in html and f"dff-prov-{state}" in html
    assert re.search(rf'class="dff-prov-badge" data-state="{state}">{re.escape(badge)}</span>', html), html
    assert "never part of P(fake)" in text(html) and "beside the verdict" in text(html)
    assert "a summary" in text(html), "the summary line, as the server wrote it"


def test_the_absent_card_says_no_credentials_is_not_evidence_of_manipulation():
    line = "no C2PA manifest: unknown provenance (that is not evidence of manipulation)"
    html = cards.provenance_card(provenance("absent", summary=line))
    shown = text(html)
    assert line in shown
    assert "No content credentials is not evidence of manipulation" in shown
    assert "Signer" not in shown and "Failed checks" not in shown, "no manifest: nothing of one is shown"


def test_a_signed_card_shows_the_manifest_actions_ingredients_and_failed_checks():
    status = (
        p.C2paStatus("signingCredential.untrusted", "signing certificate untrusted"),
        p.C2paStatus("assertion.dataHash.mismatch", "asset hash error"),
    )
    shown = text(cards.provenance_card(provenance("invalid", status=status, n_manifests=2)))
    for fact in ("Claim generator dff-test 1.0", "Signer DFF Test Signer", "Issuer DFF Test Lab"):
        assert fact in shown
    assert "Signed at not time-stamped" in shown and "Manifests 2" in shown
    assert "c2pa.created trainedAlgorithmicMedia by Test Generator 2" in shown, "source type: its last part"
    assert GENERATED not in shown, "the full URL only as a tooltip"
    assert "parent.jpg parentOf image/jpeg" in shown
    assert "assertion.dataHash.mismatch asset hash error" in shown


def test_metadata_flags_tags_and_section_errors():
    tag = p.MetadataTag("exif", "Software", "Adobe Photoshop 25.0")
    flag = p.MetadataFlag("editor_software", "software tag names an editor: Adobe Photoshop 25.0", (tag,))
    error = p.SectionError("xmp", "XMP packet of 2000000 bytes (over 1048576): not parsed")
    html = cards.provenance_card(provenance("absent", tags=[tag], flags=[flag], errors=[error]))
    shown = text(html)
    assert 'data-flag="editor_software"' in html and "software tag names an editor" in shown
    assert "Metadata tags (1)" in shown and "exif Software Adobe Photoshop 25.0" in shown
    assert "xmp XMP packet of 2000000 bytes" in shown
    many = [p.MetadataTag("container", f"k{i}", "v") for i in range(cards.TAGS_OPEN_UP_TO + 1)]
    assert "<details" in cards.provenance_card(provenance("absent", tags=many))
    assert 'data-section="tags" open' not in cards.provenance_card(provenance("absent", tags=many)), "folded"


def test_every_value_from_the_file_is_escaped():
    hostile_manifest = manifest(
        claim_generator=HOSTILE,
        title=HOSTILE,
        signer=HOSTILE,
        issuer=HOSTILE,
        signed_at=HOSTILE,
        alg=HOSTILE,
        actions=(p.C2paAction(HOSTILE, HOSTILE + "/" + HOSTILE, HOSTILE, HOSTILE),),
        ingredients=(p.C2paIngredient(HOSTILE, HOSTILE, HOSTILE),),
    )
    tag = p.MetadataTag(HOSTILE, HOSTILE, HOSTILE)
    html = cards.provenance_card(
        provenance(
            "invalid",
            summary=HOSTILE,
            manifest=hostile_manifest,
            status=(p.C2paStatus(HOSTILE, HOSTILE),),
            tags=[tag],
            flags=[p.MetadataFlag("editor_software", HOSTILE, (tag,))],
            errors=[p.SectionError("exif", HOSTILE)],
        )
    )
    found = parsed(html)
    assert "script" not in found.tags and "img" not in found.tags
    assert "onerror" not in found.attrs
    assert "&lt;script&gt;" in html and "<script" not in html
    unreadable = cards.provenance_card(provenance("unreadable", error=HOSTILE, summary=HOSTILE))
    assert "<script" not in unreadable and "&lt;script&gt;alert(&quot;x&quot;)" in unreadable


def test_no_file_no_card_and_the_row_puts_the_two_cards_side_by_side():
    assert cards.provenance_card(None) == ""
    assert cards.verdict_row("<v/>", "") == "<v/>"
    assert cards.verdict_row("<v/>", "<p/>") == '<div class="dff-vrow"><v/><p/></div>'
    assert "dff-verdict" not in cards.verdict_pending(), "the browser tests wait for .dff-verdict: the final one"
