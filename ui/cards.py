"""Small HTML snippets for the page: banners, status line, error box, verdict card, person cards.

Pure string functions (every value from outside is escaped). Classes are styled in ``ui/theme.py``;
the browser test finds states by the ``dff-*`` classes and ``data-*`` attributes written here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from stream import protocol as p
from ui.timeline import Estimate, PersonSummary, Verdict

# What each error code means for the person at the page, and what to do next.
ERROR_HINTS: dict[str, tuple[str, str]] = {
    "unsupported_media": (
        "Unsupported file",
        "Upload a photo (JPEG, PNG, WebP, BMP, GIF) or a video (MP4, MOV, WebM, MKV, AVI).",
    ),
    "bad_media": ("This file is not usable media", "Upload a photo or a video file."),
    "empty_file": ("The file is empty", "It has zero bytes; pick another file."),
    "decode_error": ("The file could not be decoded", "It may be damaged or truncated; try another copy."),
    "too_large": ("File too large", "This server has an upload limit (below); shorten or compress the video."),
    "busy": ("The server is busy", "Every analysis slot is taken; try again in a minute."),
    "no_model": ("No model installed", "An operator must install one in the Models tab before files can be analysed."),
    "shutting_down": ("The server is shutting down", "Try again once it is back."),
    "interrupted": ("The analysis was interrupted", "The server stopped before it finished; frames so far are kept."),
    "cancelled": ("The analysis was cancelled", "Every viewer left the job."),
    "timeout": ("The upload stalled", "Nothing arrived for a minute; check the connection and retry."),
    "unauthorized": ("Access token needed", "This server requires its access token: enter it at the top of the page."),
    "forbidden": ("Not allowed", "The server refused this request."),
    "connect": ("Cannot reach the analysis service", "The server may be restarting; reload the page in a moment."),
    "connection_lost": ("The connection to the analysis service broke", "Try again."),
    "bad_config": ("Invalid options", "Check the options panel."),
    "model_error": ("The model failed on this file", "See the server log; try another file."),
    "bad_checkpoint": ("The model file cannot be used", "Install a valid checkpoint in the Models tab."),
    "internal": ("Something went wrong on the server", "The details are in the server log."),
}


def _human_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n_bytes} bytes"


def human_size(n_bytes: int) -> str:
    """``12.3 MB``"""
    return _human_size(n_bytes)


def error_box(code: str, message: str, *, max_upload_bytes: int | None = None, title: str | None = None) -> str:
    """A red box: what happened (by code, or ``title``), the server's own words, and what to do next."""
    known_title, hint = ERROR_HINTS.get(code, ("The analysis failed", "Try again, or try another file."))
    title = title or known_title
    if code == "too_large" and max_upload_bytes:
        hint = f"This server accepts files up to {_human_size(max_upload_bytes)}; shorten or compress it."
    detail = f'<div class="dff-err-detail">{escape(message)}</div>' if message else ""
    return (
        f'<div class="dff-error" role="alert" data-code="{escape(code)}"><div class="dff-err-title">'
        f"{escape(title)}</div><div>{escape(hint)}</div>{detail}</div>"
    )


def info_box(text: str, kind: str = "info") -> str:
    """A neutral (``info``), positive (``ok``) or warning (``warn``) one-liner."""
    return f'<div class="dff-note dff-note-{escape(kind)}">{escape(text)}</div>'


def empty_state() -> str:
    """What the results area says before the first file."""
    return (
        '<div class="dff-empty"><div class="dff-empty-title">Drop a photo or a video on the left, or pick an '
        "example.</div><ul><li><b>Video</b>: a timeline of P(fake) per person fills in frame by frame while "
        "the file is analysed, with each frame's faces and heatmaps; the verdict follows at the end.</li>"
        "<li><b>Photo</b>: every face is boxed with its probability and heatmap.</li>"
        "<li>Sampling, strategy and threshold are under <b>Options</b>; past reports are in <b>History</b>."
        "</li></ul></div>"
    )


# `dff models get`'s default (pipeline/detectors/catalog.py DEFAULT_NAME; the web ui does not import
# pipeline, so tests/ui/test_models_get.py checks these words against the catalogue).
GET_MODEL_COMMAND = "dff models get mesonet4-df"
GET_MODEL_WHAT = "MesoNet's published weights, Apache-2.0, 156 KB"


def get_model_hint() -> str:
    """The one-command way to a model, in words: what the Models tab and the no-model banner offer."""
    return (
        f"Or, on the server's machine, run `{GET_MODEL_COMMAND}` ({GET_MODEL_WHAT}), then press Refresh in "
        "the Models tab and activate it."
    )


def no_model_banner() -> str:
    """The plain banner on top of the page when the server has no model."""
    return (
        '<div class="dff-banner dff-banner-nomodel" data-status="no_model" role="alert"><b>No model installed.</b> '
        "This server cannot give verdicts yet. Open the <b>Models</b> tab to upload a checkpoint "
        "(.pth, .pt or .h5) and activate it. Or, on the server's machine, run "
        f'<code class="dff-get-model">{escape(GET_MODEL_COMMAND)}</code> ({escape(GET_MODEL_WHAT)}), then '
        "activate it in the <b>Models</b> tab.</div>"
    )


def ready_marker(status: str) -> str:
    """An empty banner that still records the server's status (the page has loaded)."""
    return f'<div class="dff-banner-slot" data-status="{escape(status)}"></div>'


def untrained_banner(model_name: str) -> str:
    """Loud warning that scores come from random weights."""
    return (
        '<div class="dff-banner dff-banner-untrained" data-status="untrained" role="alert"><b>UNTRAINED MODEL</b> — '
        f"{escape(model_name)} has random weights: its scores mean nothing. For demos and tests only.</div>"
    )


def status_html(stage: str, detail: str = "", fraction: float | None = None, estimate: Estimate | None = None) -> str:
    """The live status: stage, progress line and bar, and the running estimate."""
    bar = ""
    if fraction is not None:
        bar = f'<div class="dff-bar"><div class="dff-bar-fill" style="width:{100 * fraction:.1f}%"></div></div>'
    running = ""
    if estimate is not None and estimate.score is not None and estimate.track_id is not None:
        running = (
            f'<div class="dff-running">Running estimate: <span class="dff-badge dff-{estimate.label}">'
            f"{estimate.label.replace('_', ' ').upper()}</span> — Person {estimate.track_id + 1} averages "
            f"P(fake) {estimate.score:.2f} so far (the final verdict comes when all frames are in)</div>"
        )
    return (
        f'<div class="dff-status" data-stage="{escape(stage)}"><span class="dff-stage">{escape(stage)}</span>'
        f'<span class="dff-progress">{escape(detail)}</span>{bar}{running}</div>'
    )


THRESHOLD_SOURCES = {
    "model card": "calibrated, from the model card",
    "settings": "server setting",
    "request": "chosen in Options",
    "default": "default",
}


def verdict_card(v: Verdict, band: float) -> str:
    """REAL / FAKE / INCONCLUSIVE / NO FACE with score, strategy and what the numbers mean."""
    score = "—" if v.score is None else f"{v.score:.2f}"
    warn = ""
    if v.untrained:
        warn += (
            '<div class="dff-untrained" role="alert">UNTRAINED MODEL — random weights: this verdict means '
            "nothing.</div>"
        )
    if v.incomplete:
        warn += f'<div class="dff-incomplete">Incomplete: {escape(v.incomplete)} (verdict from the frames read)</div>'
    if v.label == "no_face":
        meaning = "The detector found no face in the sampled frames, so there is nothing to judge."
    else:
        meaning = (
            f"The score is the model's estimated probability that the faces are manipulated, P(fake). "
            f"At or above {v.threshold:.2f} means FAKE, below means REAL; within ±{band:.2f} of the threshold "
            "the verdict is INCONCLUSIVE. Detectors make mistakes, especially on unfamiliar generators, "
            "heavy compression and low resolution: treat this as evidence to weigh, not a finding."
        )
    facts = " · ".join(escape(f) for f in v.facts)
    source = THRESHOLD_SOURCES.get(v.threshold_source, v.threshold_source)
    return (
        f'<div class="dff-verdict dff-v-{v.label}" data-label="{v.label}">{warn}'
        f'<div class="dff-v-head"><span class="dff-v-title">{escape(v.title)}</span>'
        f'<span class="dff-v-score">score {score} <small>threshold {v.threshold:.2f} '
        f'<span class="dff-v-thr-src" data-source="{escape(v.threshold_source)}">({escape(source)})</span>'
        "</small></span></div>"
        f'<div class="dff-v-file">{escape(v.file_name)} <span class="dff-v-facts">{facts}</span></div>'
        f"<p>{escape(meaning)}</p>"
        f"<p><b>Strategy</b> — {escape(v.strategy_text)}.</p>"
        "<p><b>Heatmaps</b> (Grad-CAM) show where the model looked when it scored a face — warm colours "
        "mattered most. They are not proof of manipulation, and a heatmap on a real face is normal.</p>"
        f'<div class="dff-v-model">Model: {escape(v.model)}</div></div>'
    )


def people_cards(
    people: Sequence[PersonSummary], thumbs: Mapping[int, str], threshold: float, *, is_image: bool = False
) -> str:
    """A card per person: thumbnail (Grad-CAM overlay as a data URI), colour, the label the report gives
    them (by the video's own rule), score, when seen; an INCONCLUSIVE person gets a line saying why.

    ``thumbs``: track id -> base64 JPEG; a person without one gets their colour as a placeholder.
    """
    if not people:
        return ""
    cards = []
    for person in people:
        b64 = thumbs.get(person.track_id)
        thumb = (
            f'<img class="dff-thumb" alt="{escape(person.name)}" src="data:image/jpeg;base64,{b64}"/>'
            if b64
            else f'<div class="dff-thumb dff-thumb-none" style="background:{person.color}">{person.track_id + 1}</div>'
        )
        label = person.label
        score = "—" if person.score is None else f"{person.score:.2f}"
        if is_image:
            seen = ""
        elif person.first_s == person.last_s:
            seen = f", seen at {person.first_s:.1f} s"
        else:
            seen = f", seen {person.first_s:.1f}–{person.last_s:.1f} s"
        hint = ""
        if label == "inconclusive" and person.score is not None:
            if person.confident_fake or person.score < threshold:
                why = "too close to the threshold to call"
            else:
                why = "fake-looking, but too few frames agree"
            hint = f'<div class="dff-p-hint">{why}</div>'
        cards.append(
            f'<div class="dff-person" data-track="{person.track_id}">{thumb}<div>'
            f'<div class="dff-p-name"><span class="lg-swatch" style="background:{person.color}"></span>'
            f"{escape(person.name)}</div>"
            f'<span class="dff-badge dff-{label}">{escape(label.replace("_", " ").upper())}</span> '
            f'<span class="dff-p-score">P(fake) {score}</span>'
            f'<div class="dff-p-meta">{person.n_faces} face{"" if person.n_faces == 1 else "s"}{seen}</div>'
            f"{hint}</div></div>"
        )
    grid = "".join(cards)
    return f'<div class="dff-people"><div class="dff-h">Per person</div><div class="dff-p-grid">{grid}</div></div>'


def detector_cards(report: p.Report, faces: Mapping[int, p.Face]) -> str:
    """An ensemble's detectors side by side: what each is (file, architecture, profile, weights' SHA-256),
    then per person (``faces``: track id -> their most suspicious face) each detector's Grad-CAM overlay and
    P(fake) next to the fused one. Empty for a single detector."""
    if not report.detectors:
        return ""
    heads = "".join(
        f'<th title="{escape(d.detector)} · profile {escape(d.profile.name)} · sha256 {escape(d.sha256)}">'
        f'{escape(d.name)}<div class="dff-p-meta">{escape(d.detector)}, {escape(d.sha256[:12])}…</div></th>'
        for d in report.detectors
    )
    rows = []
    for track_id, face in sorted(faces.items()):
        cells = []
        for i, prob in enumerate(face.detector_probs):
            b64 = face.detector_overlays_jpeg_b64[i] if i < len(face.detector_overlays_jpeg_b64) else None
            img = f'<img class="dff-thumb" alt="" src="data:image/jpeg;base64,{b64}"/>' if b64 else ""
            cells.append(f"<td>{img}<div>P(fake) {prob:.2f}</div></td>")
        rows.append(
            f'<tr data-track="{track_id}"><th>Person {track_id + 1}</th>{"".join(cells)}'
            f"<td><b>{face.fake_prob:.2f}</b></td></tr>"
        )
    fusion = escape(report.fusion or "")
    return (
        f'<div class="dff-detectors"><div class="dff-h">Detectors ({fusion})</div><table class="dff-det-table">'
        f"<tr><th></th>{heads}<th>fused</th></tr>{''.join(rows)}</table></div>"
    )


def model_card_text(card: dict[str, Any] | None, status: str) -> str:
    """The Models table's "Model card" cell: name, metrics line and calibration, or why there is none."""
    if status == "stale":
        return "card written for other weights (ignored)"
    if status == "unreadable":
        return "card unreadable (ignored)"
    if not card:
        return "no model card"
    parts = [str(card.get("name") or "")]
    if card.get("summary"):
        parts.append(str(card["summary"]))
    if card.get("threshold") is not None:
        parts.append(f"calibrated threshold {card['threshold']:.2f}, T={card.get('temperature') or 1:.2f}")
    return " — ".join(p for p in parts if p)


# -- provenance: what the file says about itself, beside (never inside) the verdict --------------------------

PROVENANCE_BADGES: dict[str, str] = {
    "valid": "Content credentials valid",
    "untrusted": "Signed — signer not on the trust list",
    "invalid": "Content credentials INVALID",
    "absent": "No content credentials — unknown provenance",
    "unreadable": "Credentials unreadable",
}
PROVENANCE_NOTE = (
    "No content credentials is not evidence of manipulation: most genuine photos and videos carry none. "
    "Provenance is what the file says about itself, read from its bytes offline; it is shown as evidence "
    "beside the verdict and is never part of P(fake)."
)
TAGS_OPEN_UP_TO = 8  # a longer tag table starts folded


def _items(title: str, items: Sequence[str], kind: str) -> str:
    """A titled list of already-escaped HTML items, or nothing."""
    if not items:
        return ""
    lis = "".join(f"<li>{item}</li>" for item in items)
    return f'<div class="dff-prov-sec" data-section="{kind}"><b>{escape(title)}</b><ul>{lis}</ul></div>'


def _source_type(url: str) -> str:
    """``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` -> its last part."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def _manifest_html(m: p.C2paManifest, n_manifests: int) -> str:
    facts = [
        ("Claim generator", m.claim_generator),
        ("Title", m.title),
        ("Signer", m.signer),
        ("Issuer", m.issuer),
        ("Signed at", m.signed_at or "not time-stamped (no time-stamp authority)"),
        ("Algorithm", m.alg),
        ("Manifests", str(n_manifests) if n_manifests > 1 else None),
    ]
    rows = "".join(
        f'<tr data-fact="{escape(k.lower())}"><th>{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in facts if v
    )
    actions = [
        f"<code>{escape(a.action)}</code>"
        + (f' <span class="dff-prov-dst" title="{escape(dst)}">{escape(_source_type(dst))}</span>' if dst else "")
        + (f" by {escape(a.software_agent)}" if a.software_agent else "")
        + (f" at {escape(a.when)}" if a.when else "")
        for a in m.actions
        for dst in (a.digital_source_type,)
    ]
    ingredients = [
        escape(i.title or "untitled") + "".join(f" <small>{escape(x)}</small>" for x in (i.relationship, i.format) if x)
        for i in m.ingredients
    ]
    return (
        f'<table class="dff-prov-facts">{rows}</table>'
        + _items("Actions", actions, "actions")
        + _items("Ingredients", ingredients, "ingredients")
    )


def _tags_html(tags: Sequence[p.MetadataTag]) -> str:
    if not tags:
        return ""
    rows = "".join(
        f"<tr><td>{escape(t.source)}</td><td>{escape(t.key)}</td><td>{escape(t.value)}</td></tr>" for t in tags
    )
    fold = " open" if len(tags) <= TAGS_OPEN_UP_TO else ""
    return (
        f'<details class="dff-prov-sec" data-section="tags"{fold}><summary><b>Metadata tags</b> ({len(tags)})'
        f'</summary><div class="dff-prov-tags"><table><tr><th>source</th><th>key</th><th>value</th></tr>{rows}'
        "</table></div></details>"
    )


def provenance_card(prov: p.Provenance | None) -> str:
    """The Provenance card: the C2PA state as a badge, the summary line as the server wrote it, the active
    manifest (claim generator, signer, issuer, signing time, actions, ingredients), the failed checks, the
    metadata flags, tags and unreadable sections, and what provenance does and does not mean. Empty for
    a report without a file (a live source). Every value comes from the file and is escaped."""
    if prov is None:
        return ""
    c2pa, meta = prov.c2pa, prov.metadata
    state = c2pa.state
    body = _manifest_html(c2pa.manifest, c2pa.n_manifests) if c2pa.manifest is not None else ""
    checks = [f"<code>{escape(s.code)}</code> {escape(s.explanation)}" for s in c2pa.status]
    body += _items("Failed checks", checks, "checks")
    if c2pa.error:
        body += _items("Why the credentials are unreadable", [escape(c2pa.error)], "c2pa-error")
    flags = [f'<span data-flag="{escape(f.code)}">{escape(f.message)}</span>' for f in meta.flags]
    body += _items("Metadata flags", flags, "flags")
    body += _tags_html(meta.tags)
    errors = [f"<code>{escape(e.section)}</code> {escape(e.reason)}" for e in meta.errors]
    body += _items("Sections that could not be read", errors, "errors")
    badge = PROVENANCE_BADGES.get(state, state)
    return (
        f'<div class="dff-prov dff-prov-{escape(state)}" data-state="{escape(state)}">'
        f'<div class="dff-h">Provenance <span class="dff-prov-badge" data-state="{escape(state)}">'
        f"{escape(badge)}</span></div>"
        f'<div class="dff-prov-summary">{escape(prov.summary)}</div>{body}'
        f'<p class="dff-prov-note">{escape(PROVENANCE_NOTE)}</p></div>'
    )


def verdict_pending() -> str:
    """Where the verdict card will be while the file is analysed (not ``.dff-verdict``: that is the
    finished verdict, which the browser tests wait for)."""
    return (
        '<div class="dff-v-pending"><div class="dff-v-title">Verdict pending</div>'
        "<p>The verdict comes when every sampled frame is analysed.</p></div>"
    )


def verdict_row(verdict: str, provenance: str) -> str:
    """The verdict card and the Provenance card side by side (stacked on a narrow page)."""
    if not provenance:
        return verdict
    return f'<div class="dff-vrow">{verdict}{provenance}</div>'
