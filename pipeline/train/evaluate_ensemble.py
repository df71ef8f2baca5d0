"""``dff eval A B ...``: several detectors measured side by side on labelled folders, as one ensemble run of
the service (``analyze()`` with every detector scoring every face), one row per detector and one per fusion.

Frame level, like ``dff eval`` of one checkpoint: one sample per sampled frame with a face, scored as the
service scores frames (the highest P(fake) among its faces), for each detector alone (its own P(fake) of
each face) and for the fused ensemble. Members' model cards apply (their calibrated P(fake)s are what the
ensemble fuses). ``calibrate``: fit logistic stacking on the members' logits and a threshold for
``target_fpr`` on these frames, store them in the ensemble card (``pipeline/ensemble.py``), and report
that row too, marked *in-sample*: fitted and measured on the same frames, it is optimistic.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline.config import DEFAULT_THRESHOLD, Settings
from pipeline.errors import DffError
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.train.data import FAKE, REAL
from pipeline.train.evaluate import _finite, labelled_files, measured_on, score_table
from pipeline.train.metrics import threshold_at_fpr
from pipeline.types import FrameVerdict


def frame_samples(
    files: list[tuple[Path, int]], engine: Any, settings: Settings, err: TextIO, show_bar: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """(labels N, per-detector frame P(fake) N×K, fused frame P(fake) N, errors by file name)."""
    from tqdm import tqdm

    labels: list[int] = []
    members: list[list[float]] = []
    fused: list[float] = []
    errors: dict[str, str] = {}
    for path, label in tqdm(files, desc="evaluating", unit="file", file=err, disable=not show_bar, leave=False):
        try:
            with open_media_for(path, settings) as source:
                for event in analyze(source, engine, settings):
                    if isinstance(event, FrameVerdict) and event.faces:
                        assert event.score is not None
                        labels.append(label)
                        fused.append(event.score)
                        k = len(event.faces[0].members)
                        members.append([max(f.members[i].fake_prob for f in event.faces) for i in range(k)])
        except DffError as e:
            errors[path.name] = str(e)
            print(f"{path.name}: error: {e}", file=err)
    k = len(engine.detector_infos)
    return (
        np.array(labels, dtype=np.int64),
        np.array(members, dtype=np.float64).reshape(-1, k),
        np.array(fused, dtype=np.float64),
        errors,
    )


def evaluate_ensemble(
    checkpoints: list[Path],
    real_dirs: list[Path],
    fake_dirs: list[Path],
    report_dir: Path,
    settings: Settings,
    err: TextIO,
    *,
    calibrate: bool = False,
    target_fpr: float = 0.01,
    threshold: float | None = None,
    show_bar: bool = True,
) -> dict[str, Any]:
    """Measure the ensemble of ``checkpoints`` (>= 2); write ``report_dir/metrics.json``; with
    ``calibrate`` also the ensemble card. Returns the metrics document (``format_ensemble`` prints it)."""
    import torch

    from pipeline.device import pick_device
    from pipeline.engine import Engine
    from pipeline.ensemble import fit_stacking, write_stacking
    from pipeline.models import load_model

    if len(checkpoints) < 2:
        raise DffError(f"an ensemble needs 2 or more checkpoints, got {len(checkpoints)}")
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = pick_device(settings.device)
    models = [load_model(c, device) for c in checkpoints]  # cards applied: members' calibrated P(fake)
    files = labelled_files(real_dirs, fake_dirs)
    with Engine.from_members(models, settings, stacking=False) as engine:  # always measure the mean too
        labels, member_probs, mean_probs, errors = frame_samples(files, engine, settings, err, show_bar)
        info, infos = engine.info, engine.detector_infos
    chosen = threshold if threshold is not None else settings.threshold or DEFAULT_THRESHOLD
    data = measured_on(real_dirs, fake_dirs, files, settings)
    rows = [
        {"name": d.name, "detector": d.detector, "sha256": d.sha256, **score_table(labels, member_probs[:, i], chosen)}
        for i, d in enumerate(infos)
    ]
    rows.append({"name": "ensemble: mean", **score_table(labels, mean_probs, chosen)})
    doc: dict[str, Any] = {
        "ensemble": info.name,
        "sha256": info.sha256,
        "measured_on": data,
        "threshold": chosen,
        "rows": rows,
        "errors": errors,
        "card": None,
    }
    if calibrate:
        if labels.size == 0 or not (labels == REAL).any() or not (labels == FAKE).any():
            raise DffError("stacking needs frames with faces from both real and fake files; none were found")
        stacking = fit_stacking(member_probs, labels)
        stacked = stacking.fuse(member_probs)
        fitted_threshold = float(np.clip(threshold_at_fpr(labels, stacked, target_fpr), 1e-6, 1 - 1e-6))
        stacking = dataclasses.replace(stacking, threshold=fitted_threshold, fitted_on=data["name"])
        rows.append(
            {
                "name": "ensemble: stacking (in-sample)",
                "weights": list(stacking.weights),
                "bias": stacking.bias,
                **score_table(labels, stacked, fitted_threshold),
            }
        )
        path = write_stacking(settings.resolved_models_dir, info, infos, stacking, {**data, "target_fpr": target_fpr})
        doc["card"] = str(path)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(_finite(doc), indent=2) + "\n", encoding="utf-8")
    return doc


def format_ensemble(doc: dict[str, Any]) -> str:
    """One line per detector and per fusion (frame level), then where the card went."""

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    width = max(22, *(len(r["name"]) + 2 for r in doc["rows"]))
    lines = [
        f"{doc['ensemble']} on {doc['measured_on']['name']}: frames, threshold {doc['threshold']:.4g}",
        f"{'':<{width}}{'n':>5} {'real':>5} {'fake':>5}  {'AUC':>6} {'EER':>6} {'acc':>6} {'TPR@1%':>8} {'ECE':>6}",
    ]
    for r in doc["rows"]:
        lines.append(
            f"{r['name']:<{width}}{r['n']:>5} {r['n_real']:>5} {r['n_fake']:>5}  {num(r.get('auc')):>6} "
            f"{num(r.get('eer')):>6} {num(r.get('accuracy')):>6} {num(r.get('tpr_at_1pct_fpr')):>8} "
            f"{num(r.get('ece')):>6}"
        )
    if doc.get("card"):
        lines.append(f"stacking stored in {doc['card']}: the service fuses this ensemble so from now on")
    if doc.get("errors"):
        lines.append(f"failed: {', '.join(doc['errors'])}")
    return "\n".join(lines)
