"""Content credentials made in the test: a self-signed ES256 chain (a root CA and a signing certificate,
generated with ``cryptography``), files signed with c2pa-python's Builder, and tampering with a signed
file's pixels. Nothing here touches the network: no time-stamp authority, no OCSP."""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SIGNER, ISSUER = "DFF Test Signer", "DFF Test Lab"
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4"}


@dataclass(frozen=True)
class Chain:
    """PEM bytes: ``chain`` (signing certificate, then the root), its ``key``, and the ``root`` alone."""

    chain: bytes
    key: bytes
    root: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, ISSUER)]
    )


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not sign,
        crl_sign=not sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_chain() -> Chain:
    """A root CA and an end-entity signing certificate valid from yesterday for 30 days (P-256, SHA-256)."""
    now = dt.datetime.now(dt.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public: Any, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name("DFF Test Root"))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_usage(sign=not ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    root = cert("DFF Test Root", root_key.public_key(), True).sign(root_key, hashes.SHA256())
    leaf = (
        cert(SIGNER, key.public_key(), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Chain(
        chain=leaf.public_bytes(pem) + root.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        root=root.public_bytes(pem),
    )


def manifest(title: str = "generated.jpg", *, source_type: str | None = GENERATED) -> dict[str, Any]:
    """A manifest definition: claim generator ``dff-test 1.0``, one ``c2pa.created`` action."""
    action: dict[str, Any] = {"action": "c2pa.created", "softwareAgent": {"name": "Test Generator", "version": "2"}}
    if source_type is not None:
        action["digitalSourceType"] = source_type
    return {
        "claim_generator_info": [{"name": "dff-test", "version": "1.0"}],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }


def sign(
    source: Path, dest: Path, chain: Chain, definition: dict[str, Any] | None = None, *, parent: Path | None = None
) -> Path:
    """Write ``source`` signed with ``chain`` to ``dest`` (format from the suffix), offline; ``parent``: a
    file named as the ``parentOf`` ingredient."""
    import c2pa

    context = c2pa.Context.from_dict({"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}})
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain.chain, chain.key, None)
    builder = c2pa.Builder.from_json(definition or manifest(dest.name), context=context)
    if parent is not None:
        with open(parent, "rb") as f:
            builder.add_ingredient({"title": parent.name, "relationship": "parentOf"}, MIME[parent.suffix.lower()], f)
    with c2pa.Signer.from_info(info) as signer, open(source, "rb") as src, open(dest, "wb") as out:
        builder.sign(signer, MIME[dest.suffix.lower()], src, out)
    return dest


def tamper_pixels(path: Path, dest: Path) -> Path:
    """``path`` (a signed JPEG or PNG) with some pixels changed and every other byte kept, manifest
    included: PNG pixels are re-encoded into its IDAT chunk(s); a JPEG gets one bit of its entropy-coded
    scan flipped. The result still decodes."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG"):
        dest.write_bytes(_tamper_png(data))
    else:
        sos = data.rfind(b"\xff\xda")
        index = sos + (len(data) - sos) // 2
        while data[index] in (0xFF, 0xFE, 0x00):
            index += 1
        out = bytearray(data)
        out[index] ^= 0x01
        dest.write_bytes(bytes(out))
    return dest


def _tamper_png(data: bytes) -> bytes:
    with Image.open(_memory(data)) as im:
        pixels = np.asarray(im.convert("RGB")).copy()
    pixels[: pixels.shape[0] // 2, : pixels.shape[1] // 2] ^= 0x55  # a quarter of the picture changes
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 on every row
    chunks, pos, replaced = [], 8, False
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos : pos + 12 + length]
        if kind == b"IHDR":  # RGB 8-bit, so that the re-encoded rows fit the header
            body = bytearray(chunk[8:-4])
            body[8], body[9] = 8, 2
            chunk = _chunk(b"IHDR", bytes(body))
        elif kind == b"IDAT":
            chunk = b"" if replaced else _chunk(b"IDAT", zlib.compress(raw))
            replaced = True
        chunks.append(chunk)
        pos += 12 + length
    return data[:8] + b"".join(chunks)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _memory(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
