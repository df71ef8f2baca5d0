"""Model cards: ``<checkpoint>.card.json`` beside each checkpoint, written by ``dff train`` and ``dff eval``.

A card says what the weights are (architecture, preprocessing, SHA-256 of the checkpoint file), what they
were trained on, what they scored on which data, and their calibration. The service reads the card only
when its ``sha256`` matches the file (``pipeline.models.read_card_facts``), so a stale card is never
applied to other weights.
Reading and listing cards (what the service needs) live in ``pipeline.cards``; this module writes them.

Layout (JSON, schema ``dff.card/1``)::

    {"schema", "name", "checkpoint", "sha256", "updated",
     "architecture": {...}, "preprocess": {PreprocessProfile fields},
     "training": {"init", "data": {...}, "config": {...}, "history": [{"epoch", "loss", "val_auc"}], ...},
     "metrics": [{"measured_on": {...}, "at", "frame": {...}, "video": [{"strategy", ...}, ...]}, ...],
     "calibration": {"temperature", "threshold", "target_fpr", "fitted_on": {...}, "at"} | null,
     "summary": "one line shown by the service", "limitations": "..."}
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from pipeline.cards import ModelEntry, read_card
from pipeline.models import CARD_SCHEMA, card_path, file_sha256
from pipeline.types import PreprocessProfile

ARCHITECTURE = {
    "name": "InceptionResnetV1",
    "library": "facenet-pytorch",
    "build": "InceptionResnetV1(classify=True, num_classes=1)",
    "output": "one logit; fake_prob = sigmoid(logit / calibration.temperature)",
    "grad_cam_layer": "block8.branch1[-1]",
}
LIMITATIONS = (
    "Scores only faces that MTCNN finds. Trained on the data described under 'training'; numbers under "
    "'metrics' hold only for data like the data they were measured on. Tiny training sets cannot make a "
    "strong detector; treat scores as evidence to review, not a verdict."
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_card(checkpoint: Path, card: dict[str, Any]) -> Path:
    """Write ``card`` beside ``checkpoint`` with its SHA-256 and summary brought up to date (atomically)."""
    checkpoint = Path(checkpoint)
    card = {**card, "schema": CARD_SCHEMA, "checkpoint": checkpoint.name, "sha256": file_sha256(checkpoint)}
    card["updated"] = _now()
    card["summary"] = summary_line(card)
    path = card_path(checkpoint)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def new_card(
    checkpoint: Path, name: str, profile: PreprocessProfile, training: dict[str, Any], n_parameters: int
) -> dict[str, Any]:
    """A fresh card for weights just trained (``training`` as described in the module docstring)."""
    return {
        "schema": CARD_SCHEMA,
        "name": name,
        "checkpoint": Path(checkpoint).name,
        "architecture": {**ARCHITECTURE, "parameters": n_parameters},
        "preprocess": dataclasses.asdict(profile),
        "training": training,
        "metrics": [],
        "calibration": None,
        "limitations": LIMITATIONS,
    }


def card_for(checkpoint: Path, profile: PreprocessProfile, sha256: str) -> dict[str, Any]:
    """The card to update for ``checkpoint`` (whose file hashes to ``sha256``): the existing card, with its
    metrics and calibration dropped if it was written for other weights; or a minimal new card for a
    checkpoint trained elsewhere (e.g. the seed)."""
    try:
        card = read_card(checkpoint)
    except ValueError:
        card = None  # an unreadable card is replaced, not trusted
    if card is not None:
        if card.get("sha256") != sha256:
            stale = card.get("sha256")
            card = {**card, "metrics": [], "calibration": None, "replaces_card_for_sha256": stale}
        return card
    return {
        "schema": CARD_SCHEMA,
        "name": Path(checkpoint).stem,
        "architecture": dict(ARCHITECTURE),
        "preprocess": dataclasses.asdict(profile),
        "training": {"init": "unknown: not trained by dff train"},
        "metrics": [],
        "calibration": None,
        "limitations": LIMITATIONS,
    }


def add_metrics(card: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``card`` with ``entry`` (``measured_on``, ``frame``, ``video``) as its newest metrics; an older entry
    measured on the same data with the same calibration is replaced, not duplicated."""
    key = json.dumps([entry.get("measured_on"), entry.get("calibrated")], sort_keys=True)
    kept = [
        m
        for m in card.get("metrics", [])
        if json.dumps([m.get("measured_on"), m.get("calibrated")], sort_keys=True) != key
    ]
    return {**card, "metrics": [*kept, {**entry, "at": _now()}]}


def summary_line(card: dict[str, Any]) -> str:
    """``frame AUC 0.612, EER 0.41 on <data> (40 frames); calibrated T=1.8, threshold 0.83 @ FPR 1%``."""
    parts = []
    metrics = card.get("metrics") or []
    if metrics:
        m = metrics[-1]
        frame = m.get("frame") or {}
        data = m.get("measured_on") or {}
        if frame.get("auc") is not None:
            parts.append(
                f"frame AUC {frame['auc']:.3f}, EER {frame['eer']:.3f} on {data.get('name', '?')} "
                f"({frame.get('n', '?')} frames)"
            )
    else:
        history = (card.get("training") or {}).get("history") or []
        aucs = [h["val_auc"] for h in history if h.get("val_auc") is not None]
        if aucs:
            parts.append(f"validation AUC {aucs[-1]:.3f} (held-out training sources; not an evaluation)")
        else:
            parts.append("not evaluated yet")
    cal = card.get("calibration")
    if cal:
        parts.append(
            f"calibrated T={cal['temperature']:.3g}, threshold {cal['threshold']:.3g} @ FPR {cal['target_fpr']:.0%}"
        )
    return "; ".join(parts)


def format_models(models_dir: Path, entries: list[ModelEntry]) -> str:
    """The ``dff models`` listing: one block per checkpoint, ``*`` on the one the service would load."""
    if not entries:
        return (
            f"no checkpoints (*.pth, *.pt, *.h5) in {models_dir}; "
            f"train one with `dff train ... --out {models_dir}/NAME.pth`"
        )
    lines = [f"checkpoints in {models_dir} (the service loads the newest, marked *, unless DFF_CHECKPOINT is set):"]
    for i, e in enumerate(entries):
        mark = "*" if i == 0 else " "
        lines.append(f"{mark} {e.path.name}  {e.size_bytes / 1e6:.1f} MB  {e.modified}")
        if e.card_error:
            lines.append(f"    card unreadable: {e.card_error}")
        elif e.card is None:
            lines.append("    no model card (train with `dff train` or run `dff eval` to write one)")
        elif not e.card_matches:
            lines.append("    model card is STALE (written for other weights): ignored by the service")
        else:
            profile = e.card.get("preprocess") or {}
            training = e.card.get("training") or {}
            lines.append(f"    name: {e.card.get('name')}  input: {profile.get('input_px')} px ({profile.get('name')})")
            lines.append(f"    trained: {training.get('init', '?')}; {_data_line(training.get('data'))}")
            lines.append(f"    {e.card.get('summary') or summary_line(e.card)}")
    return "\n".join(lines)


def _data_line(data: dict[str, Any] | None) -> str:
    if not data:
        return "training data not recorded"
    faces = data.get("faces", {}).get("train", {})
    blend = " + self-blended fakes" if data.get("self_blend") else ""
    return f"{faces.get('real', '?')} real / {faces.get('fake', '?')} fake training faces{blend}"
