"""Content credentials (pipeline/provenance/c2pa_read.py): the tests sign JPEG, PNG and MP4 files with a
certificate chain they generate, read back the exact fields, tamper with the pixels (invalid), trust the
chain's root (valid), and feed hostile manifests (unreadable, never raised). Offline is checked against a
loopback server that counts requests."""

from __future__ import annotations

import http.server
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.provenance.c2pa_read import read_c2pa, sniff_mime
from pipeline.provenance.records import NO_MANIFEST, C2paAction, C2paIngredient, C2paState
from tests.c2pa_kit import GENERATED, ISSUER, SIGNER, Chain, make_chain, sign, tamper_pixels
from tests.media import moving_faces_clip

C2PA_BOX_UUID = bytes.fromhex("6332706100110010800000AA00389B71")


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An unsigned JPEG and PNG of noise."""
    folder = tmp_path_factory.mktemp("photos")
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (72, 96, 3), dtype=np.uint8))
    paths = {ext: folder / f"plain{ext}" for ext in (".jpg", ".png")}
    image.save(paths[".jpg"], quality=92)
    image.save(paths[".png"])
    return paths


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_a_signed_photo_reads_back_every_field(tmp_path: Path, photos: dict[str, Path], chain: Chain, ext: str):
    signed = sign(photos[ext], tmp_path / f"signed{ext}", chain)
    result = read_c2pa(signed)
    assert result.state is C2paState.UNTRUSTED  # a good signature by a signer no trust list names
    assert [s.code for s in result.status] == ["signingCredential.untrusted"]
    assert result.n_manifests == 1 and result.error is None
    manifest = result.manifest
    assert manifest is not None and manifest.label.startswith("urn:c2pa:")
    assert (manifest.claim_generator, manifest.title, manifest.signer, manifest.issuer, manifest.alg) == (
        "dff-test 1.0",
        f"signed{ext}",
        SIGNER,
        ISSUER,
        "Es256",
    )
    assert manifest.signed_at is None  # no time-stamp authority: offline
    assert manifest.actions == (C2paAction("c2pa.created", GENERATED, "Test Generator 2", None),)
    assert manifest.actions[0].generated


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_trusting_the_root_makes_it_valid_and_tampering_makes_it_invalid(
    tmp_path: Path, photos: dict[str, Path], chain: Chain, ext: str
):
    signed = sign(photos[ext], tmp_path / f"signed{ext}", chain)
    root = chain.root.decode()
    assert read_c2pa(signed, trust_anchors_pem=root).state is C2paState.VALID
    assert read_c2pa(signed, trust_anchors_pem=make_chain().root.decode()).state is C2paState.UNTRUSTED

    tampered = tamper_pixels(signed, tmp_path / f"tampered{ext}")
    with Image.open(signed) as a, Image.open(tampered) as b:
        assert (np.asarray(a.convert("RGB")) != np.asarray(b.convert("RGB"))).any()  # the pixels did change
    for anchors in (None, root):
        result = read_c2pa(tampered, trust_anchors_pem=anchors)
        assert result.state is C2paState.INVALID
        assert "assertion.dataHash.mismatch" in [s.code for s in result.status]
        assert result.manifest is not None and result.manifest.signer == SIGNER  # who claimed it is still shown


def test_an_ingredient_is_read_back(tmp_path: Path, photos: dict[str, Path], chain: Chain):
    signed = sign(photos[".jpg"], tmp_path / "edited.jpg", chain, parent=photos[".png"])
    result = read_c2pa(signed)
    assert result.manifest is not None
    assert result.manifest.ingredients == (C2paIngredient("plain.png", "parentOf", "image/png"),)


def test_an_unsigned_file_is_unknown_provenance(photos: dict[str, Path], tmp_path: Path):
    for path in photos.values():
        result = read_c2pa(path)
        assert (result.state, result.manifest, result.status) == (C2paState.ABSENT, None, ())
    text = tmp_path / "notes.txt"
    text.write_text("not media")
    assert read_c2pa(text).state is C2paState.ABSENT  # a format the SDK reads no manifest from
    assert "not evidence of manipulation" in NO_MANIFEST


def test_a_signed_mp4(tmp_path: Path, chain: Chain):
    clip = moving_faces_clip(tmp_path / "clip.mp4", seconds=1.0, fps=5, n_faces=1)
    signed = sign(clip, tmp_path / "signed.mp4", chain)
    result = read_c2pa(signed)
    assert result.state is C2paState.UNTRUSTED and result.manifest is not None
    assert result.manifest.signer == SIGNER
    assert read_c2pa(clip).state is C2paState.ABSENT


def _app11(plain: bytes, jumbf: bytes) -> bytes:
    """``plain`` (a JPEG) with one APP11 JUMBF segment holding ``jumbf``."""
    segment = b"JP" + b"\x00\x01" + struct.pack(">I", 1) + jumbf
    return plain[:2] + b"\xff\xeb" + struct.pack(">H", len(segment) + 2) + segment + plain[2:]


def _nested_jumbf(depth: int) -> bytes:
    description = C2PA_BOX_UUID + b"\x03c2pa\x00"
    jumd = struct.pack(">I", 8 + len(description)) + b"jumd" + description
    inner = b""
    for _ in range(depth):
        body = jumd + inner
        inner = struct.pack(">I", 8 + len(body)) + b"jumb" + body
    return inner


def test_hostile_manifests_are_unreadable_not_raised(tmp_path: Path, photos: dict[str, Path], chain: Chain):
    signed = sign(photos[".jpg"], tmp_path / "signed.jpg", chain).read_bytes()
    start = signed.find(b"\xff\xeb")
    broken = bytearray(signed)
    for i in range(start + 40, start + 56):  # inside the manifest store's boxes
        broken[i] ^= 0xA5
    (tmp_path / "broken.jpg").write_bytes(bytes(broken))
    result = read_c2pa(tmp_path / "broken.jpg")
    assert result.state is C2paState.UNREADABLE and result.error and result.manifest is None

    plain = photos[".jpg"].read_bytes()
    (tmp_path / "deep.jpg").write_bytes(_app11(plain, _nested_jumbf(1600)))  # 60 KB of nesting
    deep = read_c2pa(tmp_path / "deep.jpg")
    assert deep.state is C2paState.UNREADABLE and "depth" in (deep.error or ""), deep

    (tmp_path / "garbage.jpg").write_bytes(_app11(plain, b"\x00\x00\x00\x10jumb" + b"\xff" * 4000))
    assert read_c2pa(tmp_path / "garbage.jpg").state in (C2paState.ABSENT, C2paState.UNREADABLE)


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/manifest.c2pa", hits
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_manifest_is_never_fetched(tmp_path: Path, photos: dict[str, Path], counting_server):
    url, hits = counting_server
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{url}"/>'
        "</rdf:RDF></x:xmpmeta>"
    ).encode()
    segment = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    plain = photos[".jpg"].read_bytes()
    path = tmp_path / "remote.jpg"
    path.write_bytes(plain[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + plain[2:])
    result = read_c2pa(path)
    assert result.state is C2paState.UNREADABLE and "not fetched" in (result.error or "") and url in result.error
    assert hits == []  # the SDK's default settings would have fetched it (see the module docstring)


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "video/quicktime"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00", "image/heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "image/avif"),
        (b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00", "image/tiff"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2", None),  # Matroska: no C2PA binding
        (b"#EXTM3U\n#EXT-X-VERSION", None),
    ],
)
def test_the_format_is_sniffed_from_the_bytes(head: bytes, mime: str | None):
    assert sniff_mime(head) == mime
