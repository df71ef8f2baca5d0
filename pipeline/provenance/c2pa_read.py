"""The C2PA adapter: the only module that imports ``c2pa`` (c2pa-python, the Content Authenticity
Initiative's binding of c2pa-rs). Reads a file's content credentials offline into a ``C2pa`` record.

Quirks fixed here, once:

- **Offline.** c2pa-rs fetches remote manifests and OCSP responses by default; every read runs in a
  Context with ``verify.remote_manifest_fetch`` and ``verify.ocsp_fetch`` off and no allowed network host.
- **The format is sniffed from the bytes** (magic numbers, the ISO BMFF brand), never taken from the
  name, and only formats the SDK reads are handed to it; another format has no manifest to read.
- **No manifest is not an error.** ``ManifestNotFound`` is the ``absent`` state ("unknown provenance");
  any other SDK error on a manifest that is there is ``unreadable`` with its message, never raised. A
  file whose manifest is only referenced by URL (XMP ``dcterms:provenance``) is ``unreadable`` too: the
  SDK would fetch it, and this service never does.
- **Trust.** Without configured anchors (``DFF_C2PA_TRUST_ANCHORS``, a PEM file) no signer is trusted: a
  good signature is ``untrusted``, which is the honest answer. ``Trusted`` from the SDK is ``valid``.
- **Bounds.** Strings are cut to ``MAX_CHARS``, lists to ``MAX_ITEMS``: a hostile manifest cannot make a
  report large.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pipeline.provenance.records import C2pa, C2paAction, C2paIngredient, C2paManifest, C2paState, C2paStatus

MAX_CHARS = 512
MAX_ITEMS = 64
OFFLINE_SETTINGS: dict[str, Any] = {
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "core": {"allowed_network_hosts": []},
}
_UNTRUSTED = "signingCredential.untrusted"
_BMFF_IMAGE_BRANDS = {b"avif": "image/avif", b"avis": "image/avif", b"heic": "image/heic", b"heix": "image/heic",
                      b"mif1": "image/heif", b"msf1": "image/heif"}  # fmt: skip


def sniff_mime(head: bytes) -> str | None:
    """The MIME type the C2PA SDK should read ``head`` (a file's first 16+ bytes) as, or None when the
    SDK reads no manifest from that format."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _BMFF_IMAGE_BRANDS:
            return _BMFF_IMAGE_BRANDS[brand]
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "image/jxl"
    return None


@functools.lru_cache(maxsize=4)
def _context(trust_anchors_pem: str | None) -> Any:
    import c2pa

    settings = dict(OFFLINE_SETTINGS)
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    return c2pa.Context.from_dict(settings)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text[: MAX_CHARS - 1] + "…" if len(text) > MAX_CHARS else text or None


def _agent(value: object) -> str | None:
    if isinstance(value, dict):
        return _text(" ".join(str(value[k]) for k in ("name", "version") if value.get(k)))
    return _text(value)


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info:
        return _text(", ".join(a for a in (_agent(i) for i in info[:MAX_ITEMS]) if a))
    return _text(manifest.get("claim_generator"))


def _actions(manifest: dict[str, Any]) -> tuple[C2paAction, ...]:
    actions: list[C2paAction] = []
    for assertion in manifest.get("assertions") or ():
        if not isinstance(assertion, dict) or not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for a in (assertion.get("data") or {}).get("actions") or ():
            if isinstance(a, dict) and len(actions) < MAX_ITEMS:
                actions.append(
                    C2paAction(
                        _text(a.get("action")) or "?",
                        _text(a.get("digitalSourceType")),
                        _agent(a.get("softwareAgent")),
                        _text(a.get("when")),
                    )
                )
    return tuple(actions)


def _ingredients(manifest: dict[str, Any]) -> tuple[C2paIngredient, ...]:
    return tuple(
        C2paIngredient(_text(i.get("title")), _text(i.get("relationship")), _text(i.get("format")))
        for i in (manifest.get("ingredients") or ())[:MAX_ITEMS]
        if isinstance(i, dict)
    )


def _manifest(label: str, manifest: dict[str, Any]) -> C2paManifest:
    signature = manifest.get("signature_info") or {}
    return C2paManifest(
        label=_text(label) or "?",
        claim_generator=_claim_generator(manifest),
        title=_text(manifest.get("title")),
        signer=_text(signature.get("common_name")),
        issuer=_text(signature.get("issuer")),
        signed_at=_text(signature.get("time")),
        alg=_text(signature.get("alg")),
        actions=_actions(manifest),
        ingredients=_ingredients(manifest),
    )


def _state(store: dict[str, Any], status: tuple[C2paStatus, ...]) -> C2paState:
    declared = str(store.get("validation_state", "")).lower()
    if declared == "trusted":
        return C2paState.VALID
    if declared == "invalid" or any(s.code != _UNTRUSTED for s in status):
        return C2paState.INVALID
    if declared == "valid" or any(s.code == _UNTRUSTED for s in status):
        return C2paState.UNTRUSTED  # the signature holds; its signer chains to no configured anchor
    return C2paState.VALID


def decode_store(store: dict[str, Any]) -> C2pa:
    """A manifest store (the SDK's ``Reader.json()``, decoded) -> C2pa; ValueError if it has no active
    manifest."""
    manifests = store.get("manifests")
    label = store.get("active_manifest")
    if not isinstance(manifests, dict) or not isinstance(label, str) or not isinstance(manifests.get(label), dict):
        raise ValueError("the manifest store names no active manifest")
    status = tuple(
        C2paStatus(_text(s.get("code")) or "?", _text(s.get("explanation")) or "")
        for s in (store.get("validation_status") or ())[:MAX_ITEMS]
        if isinstance(s, dict)
    )
    return C2pa(_state(store, status), _manifest(label, manifests[label]), status, len(manifests))


def read_c2pa(path: Path, *, trust_anchors_pem: str | None = None) -> C2pa:
    """The content credentials of the file at ``path``, offline; never raises for what the file holds."""
    import c2pa

    with open(path, "rb") as f:
        mime = sniff_mime(f.read(16))
        if mime is None:
            return C2pa(C2paState.ABSENT)
        f.seek(0)
        try:
            reader = c2pa.Reader(mime, f, None, _context(trust_anchors_pem))
        except c2pa.C2paError.ManifestNotFound:
            return C2pa(C2paState.ABSENT)
        except (c2pa.C2paError, ValueError, OSError) as err:
            # 0.38 raises a plain C2paError "Remote: ..." where its RemoteManifest subclass would fit
            if isinstance(err, c2pa.C2paError.RemoteManifest) or str(err).startswith("Remote:"):
                why = f"a remote manifest, not fetched (reading is offline): {_why(err)}"
                return C2pa(C2paState.UNREADABLE, error=why)
            return C2pa(C2paState.UNREADABLE, error=_why(err))
        with reader:
            try:
                return decode_store(json.loads(reader.json()))
            except (c2pa.C2paError, ValueError, RecursionError) as err:
                return C2pa(C2paState.UNREADABLE, error=_why(err))


def _why(err: BaseException) -> str:
    """The SDK's message ("Verify: JUMB box nesting depth exceeds ..."); other errors keep their type."""
    import c2pa

    text = _text(err) or "no message"
    return text if isinstance(err, c2pa.C2paError) else f"{type(err).__name__}: {text}"
