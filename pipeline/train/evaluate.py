"""``dff eval``: run the service itself (``analyze()``: its sampler, detector, classifier and aggregation)
over labelled folders and measure it, at frame level and at video level under every strategy.

Frame level: one sample per sampled frame with a face, scored as the service scores frames (the highest
P(fake) among its faces). Video level: one sample per file (a photo is a one-frame video), one table row per
aggregation strategy. Labels are per file: a fake video's frames are all "fake" even where the swapped
face is absent, which is how the labelled sets are published.

Outputs in the report directory: ``metrics.json``, ``roc.png``, ``reliability.png`` and ``worst/`` (the
frames each class got most wrong, with their Grad-CAM overlays).
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline.config import DEFAULT_THRESHOLD, Settings
from pipeline.errors import DffError
from pipeline.overlay import overlay_jpeg
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.train import metrics as M
from pipeline.train.calibrate import Calibration, apply_temperature, fit_calibration, rescore
from pipeline.train.data import FAKE, REAL, scan_media
from pipeline.train.plots import Curve, reliability_png, roc_png
from pipeline.types import FrameVerdict, Report, Strategy

N_BINS = 10  # reliability bins: with tens to hundreds of samples, finer bins are mostly empty


@dataclass(order=True)
class Mistake:
    """A frame the model got wrong-ish: ``error`` = P(fake) for a real frame, 1 − P(fake) for a fake one."""

    error: float
    file: str = field(compare=False)
    label: int = field(compare=False)
    raw_prob: float = field(compare=False)
    frame_index: int = field(compare=False)
    time_s: float = field(compare=False)
    overlay: bytes = field(compare=False, repr=False)


@dataclass
class FileResult:
    """One evaluated file: raw P(fake) of each sampled frame that had a face, the Report, or the error."""

    path: Path
    label: int
    frame_probs: list[float]
    report: Report | None
    error: str | None = None


def _worst_push(heap: list[Mistake], item: Mistake, keep: int) -> None:
    if len(heap) < keep:
        heapq.heappush(heap, item)
    elif item.error > heap[0].error:
        heapq.heapreplace(heap, item)


def run_files(
    files: list[tuple[Path, int]], engine: Any, settings: Settings, worst_per_class: int, err: TextIO, show_bar: bool
) -> tuple[list[FileResult], list[Mistake]]:
    """``analyze()`` every file with ``engine`` (an ``Engine`` whose weights are *uncalibrated*)."""
    from tqdm import tqdm

    results: list[FileResult] = []
    worst: dict[int, list[Mistake]] = {REAL: [], FAKE: []}
    for path, label in tqdm(files, desc="evaluating", unit="file", file=err, disable=not show_bar, leave=False):
        probs: list[float] = []
        report = None
        try:
            with open_media_for(path, settings) as source:
                for event in analyze(source, engine, settings):
                    if isinstance(event, FrameVerdict) and event.faces:
                        assert event.score is not None
                        probs.append(event.score)
                        face = max(event.faces, key=lambda f: f.fake_prob)
                        error = face.fake_prob if label == REAL else 1.0 - face.fake_prob
                        heap = worst[label]
                        if face.crop is not None and (len(heap) < worst_per_class or error > heap[0].error):
                            jpeg = overlay_jpeg(face.crop, face.heatmap)
                            item = Mistake(error, path.name, label, face.fake_prob, event.index, event.time_s, jpeg)
                            _worst_push(heap, item, worst_per_class)
                    elif isinstance(event, Report):
                        report = event
        except DffError as e:
            results.append(FileResult(path, label, probs, None, str(e)))
            print(f"{path.name}: error: {e}", file=err)
            continue
        results.append(FileResult(path, label, probs, report))
    mistakes = sorted(worst[REAL] + worst[FAKE], reverse=True)
    return results, mistakes


def score_table(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every metric for one set of samples; the ranking ones are None unless both classes are present."""
    n_real, n_fake = int((labels == REAL).sum()), int((labels == FAKE).sum())
    table: dict[str, Any] = {"n": int(labels.size), "n_real": n_real, "n_fake": n_fake}
    if labels.size == 0:
        return table
    table["accuracy"] = M.accuracy(labels, probs, threshold)
    table["log_loss"] = M.log_loss(labels, probs)
    table["ece"] = M.expected_calibration_error(labels, probs, N_BINS)
    both = n_real > 0 and n_fake > 0
    eer, eer_threshold = M.eer(labels, probs) if both else (None, None)
    fpr, tpr = M.rates_at(labels, probs, threshold) if both else (None, None)
    table.update(
        auc=M.roc_auc(labels, probs) if both else None,
        eer=eer,
        eer_threshold=eer_threshold,
        fpr_at_threshold=fpr,
        tpr_at_threshold=tpr,
        tpr_at_1pct_fpr=M.tpr_at_fpr(labels, probs, 0.01) if both else None,
    )
    return table


def measure(
    results: list[FileResult], temperature: float, threshold: float, min_faces: int
) -> tuple[
    dict[str, Any], list[dict[str, Any]], tuple[np.ndarray, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]
]:
    """(frame table, one video table per strategy, frame (labels, probs), per-strategy (labels, scores))
    with ``temperature`` applied to every face's P(fake)."""
    labels = np.array([r.label for r in results for _ in r.frame_probs], dtype=np.int64)
    probs = apply_temperature(np.array([p for r in results for p in r.frame_probs], dtype=np.float64), temperature)
    frame = score_table(labels, probs, threshold)
    per_strategy: dict[str, tuple[list[int], list[float]]] = {s.value: ([], []) for s in Strategy}
    for r in results:
        if r.report is None or r.report.n_faces == 0:
            continue
        for strategy, score in rescore(r.report, temperature, threshold, min_faces).items():
            if score is not None:
                per_strategy[strategy.value][0].append(r.label)
                per_strategy[strategy.value][1].append(score)
    video, arrays = [], {}
    for name, (ys, ss) in per_strategy.items():
        y, s = np.array(ys, dtype=np.int64), np.array(ss, dtype=np.float64)
        arrays[name] = (y, s)
        video.append({"strategy": name, **score_table(y, s, threshold)})
    return frame, video, (labels, probs), arrays


def labelled_files(real_dirs: list[Path], fake_dirs: list[Path]) -> list[tuple[Path, int]]:
    """Every medium under the folders with its label (REAL or FAKE), real ones first."""
    return [(p, REAL) for d in real_dirs for p in scan_media(d)] + [(p, FAKE) for d in fake_dirs for p in scan_media(d)]


def measured_on(
    real_dirs: list[Path], fake_dirs: list[Path], files: list[tuple[Path, int]], settings: Settings
) -> dict[str, Any]:
    """What a metrics document says it was measured on."""
    return {
        "name": data_name(real_dirs + fake_dirs),
        "real": [str(d) for d in real_dirs],
        "fake": [str(d) for d in fake_dirs],
        "files": {"real": sum(label == REAL for _, label in files), "fake": sum(label == FAKE for _, label in files)},
        "sampling": f"{settings.policy.mode.value}, every {settings.every_s} s, at most {settings.max_frames} frames",
    }


def data_name(dirs: list[Path]) -> str:
    """A short name for the evaluation data: the folders' common parent (``ffpp_dfd_frames`` for
    ``…/ffpp_dfd_frames/real`` and ``…/fake``), else the folder names joined."""
    resolved = [Path(d).resolve() for d in dirs]
    parents = {p.parent for p in resolved}
    if len(parents) == 1 and len(resolved) > 1:
        return next(iter(parents)).name
    return "+".join(p.name for p in resolved)


@dataclass(frozen=True)
class EvalOutcome:
    """What ``evaluate`` produced: the metrics document and, with ``calibrate``, the fitted calibration."""

    metrics: dict[str, Any]
    calibration: Calibration | None
    report_dir: Path


def evaluate(
    checkpoint: Path,
    real_dirs: list[Path],
    fake_dirs: list[Path],
    report_dir: Path,
    settings: Settings,
    err: TextIO,
    *,
    calibrate: bool = False,
    target_fpr: float = 0.01,
    threshold: float | None = None,
    worst_per_class: int = 6,
    show_bar: bool = True,
) -> EvalOutcome:
    """Measure ``checkpoint`` on the folders; write the report directory; update the checkpoint's card.

    Threshold: ``threshold`` if given, else the new calibration's (``calibrate``), else the card's, else
    ``settings.threshold``. Temperature: the new calibration's, else the card's, else 1.
    """
    import torch

    from pipeline.device import pick_device
    from pipeline.engine import Engine
    from pipeline.models import load_model, read_card_facts
    from pipeline.train.card import add_metrics, card_for, write_card

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = pick_device(settings.device)
    model = load_model(checkpoint, device, apply_card=False)  # raw logits: calibration is applied here
    facts = read_card_facts(Path(checkpoint), model.info.sha256)
    files = labelled_files(real_dirs, fake_dirs)
    with Engine.from_model(model, settings) as engine:  # the service's precision: its numbers, not fp32's
        results, mistakes = run_files(files, engine, settings, worst_per_class, err, show_bar)

    raw_labels = np.array([r.label for r in results for _ in r.frame_probs], dtype=np.int64)
    raw_probs = np.array([p for r in results for p in r.frame_probs], dtype=np.float64)
    calibration = None
    if calibrate:
        if raw_labels.size == 0 or (raw_labels == REAL).sum() == 0:
            raise DffError("calibration needs frames with faces from real files; none were found")
        calibration = fit_calibration(raw_labels, raw_probs, target_fpr)
    temperature = calibration.temperature if calibration else (facts.temperature if facts else 1.0)
    if threshold is not None:
        chosen, source = threshold, "given"
    elif calibration is not None:
        chosen, source = calibration.threshold, f"calibrated for FPR {target_fpr:.0%}"
    elif facts is not None and facts.threshold is not None:
        chosen, source = facts.threshold, "model card"
    elif settings.threshold is not None:
        chosen, source = settings.threshold, "settings"
    else:
        chosen, source = DEFAULT_THRESHOLD, "default"

    frame, video, (fl, fp), arrays = measure(results, temperature, chosen, settings.min_faces)
    report_dir.mkdir(parents=True, exist_ok=True)
    data = measured_on(real_dirs, fake_dirs, files, settings)
    doc: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "sha256": model.info.sha256,
        "model_name": facts.name if facts else Path(checkpoint).stem,
        "measured_on": data,
        "temperature": temperature,
        "threshold": chosen,
        "threshold_source": source,
        "calibration": calibration.as_dict() if calibration else None,
        "frame": frame,
        "video": video,
        "files_without_faces": [r.path.name for r in results if r.report is not None and not r.frame_probs],
        "errors": {r.path.name: r.error for r in results if r.error},
    }
    if temperature != 1.0 and raw_labels.size:
        doc["uncalibrated_frame"] = score_table(raw_labels, raw_probs, settings.threshold or DEFAULT_THRESHOLD)

    worst_dir = report_dir / "worst"
    worst_dir.mkdir(exist_ok=True)
    doc["worst"] = []
    for i, m in enumerate(mistakes):
        name = f"{i:02d}_{'real' if m.label == REAL else 'fake'}_{Path(m.file).stem}_f{m.frame_index}.jpg"
        (worst_dir / name).write_bytes(m.overlay)
        prob = float(apply_temperature([m.raw_prob], temperature)[0])
        doc["worst"].append(
            {
                "file": m.file,
                "label": "real" if m.label == REAL else "fake",
                "fake_prob": prob,
                "wrong_at_threshold": (prob >= chosen) != (m.label == FAKE),
                "frame_index": m.frame_index,
                "time_s": m.time_s,
                "overlay": f"worst/{name}",
            }
        )
    doc["plots"] = _plots(report_dir, doc, fl, fp, arrays, raw_labels, raw_probs, temperature)
    (report_dir / "metrics.json").write_text(json.dumps(_finite(doc), indent=2) + "\n", encoding="utf-8")

    card = card_for(Path(checkpoint), model.info.profile, model.info.sha256)
    if calibration is not None:
        card["calibration"] = {**calibration.as_dict(), "fitted_on": data}
    entry = {
        "measured_on": data,
        "calibrated": temperature != 1.0,
        "temperature": temperature,
        "threshold": chosen,
        "frame": frame,
        "video": video,
    }
    try:
        write_card(Path(checkpoint), _finite(add_metrics(card, entry)))
    except OSError as e:  # e.g. a read-only models directory: the report directory still has everything
        doc["card_not_updated"] = str(e)
        print(f"dff eval: could not update the model card beside {checkpoint}: {e}", file=err)
    return EvalOutcome(doc, calibration, report_dir)


def _plots(
    report_dir: Path,
    doc: dict[str, Any],
    fl: np.ndarray,
    fp: np.ndarray,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    raw_labels: np.ndarray,
    raw_probs: np.ndarray,
    temperature: float,
) -> dict[str, str]:
    """ROC (frame level + each strategy) and reliability (frame level) PNGs; names relative to the dir."""
    out: dict[str, str] = {}
    curves = []
    for name, (y, s) in [("frames", (fl, fp)), *arrays.items()]:
        if y.size and 0 < y.sum() < y.size:
            fpr, tpr, _ = M.roc_curve(y, s)
            curves.append(Curve(name if name == "frames" else f"videos: {name}", fpr, tpr, M.roc_auc(y, s)))
    title = f"{doc['model_name']} on {doc['measured_on']['name']}"
    if curves:
        roc_png(report_dir / "roc.png", curves, f"ROC\n{title}")
        out["roc"] = "roc.png"
    if fl.size:
        before = M.reliability_bins(raw_labels, raw_probs, N_BINS) if temperature != 1.0 else None
        ece = M.expected_calibration_error(fl, fp, N_BINS)
        reliability_png(
            report_dir / "reliability.png",
            M.reliability_bins(fl, fp, N_BINS),
            ece,
            f"Reliability (frames, T={temperature:.3g})\n{title}",
            before,
        )
        out["reliability"] = "reliability.png"
    return out


def _finite(value: Any) -> Any:
    """NaN/inf (e.g. an EER threshold at +inf) → None, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def format_metrics(doc: dict[str, Any]) -> str:
    """The ``dff eval`` summary: a frame-level line and one line per strategy, then where files went."""

    def num(v: Any, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    def row(name: str, t: dict[str, Any]) -> str:
        return (
            f"{name:<22}{t['n']:>5} {t['n_real']:>5} {t['n_fake']:>5}  {num(t.get('auc')):>6} {num(t.get('eer')):>6} "
            f"{num(t.get('accuracy')):>6} {num(t.get('tpr_at_1pct_fpr')):>8} {num(t.get('log_loss')):>7} "
            f"{num(t.get('ece')):>6}"
        )

    thr = doc["threshold"]
    lines = [
        f"{doc['model_name']} on {doc['measured_on']['name']}: threshold {thr:.4g} ({doc['threshold_source']}), "
        f"temperature {doc['temperature']:.3g}",
        f"{'':<22}{'n':>5} {'real':>5} {'fake':>5}  {'AUC':>6} {'EER':>6} {'acc':>6} {'TPR@1%':>8} {'logloss':>7} "
        f"{'ECE':>6}",
        row("frames", doc["frame"]),
    ]
    lines += [row(f"videos: {v['strategy']}", v) for v in doc["video"]]
    cal = doc.get("calibration")
    if cal:
        lines.append(
            f"calibration: T={cal['temperature']:.3g}, threshold {cal['threshold']:.4g} for FPR <= "
            f"{cal['target_fpr']:.0%} (fitted: FPR {cal['achieved_fpr']:.3f}, TPR {cal['tpr']:.3f} on "
            f"{cal['n_real']} real / {cal['n_fake']} fake frames) — stored in the model card"
        )
        if cal["n_real"] * cal["target_fpr"] < 1:
            lines.append(
                f"  note: {cal['n_real']} real frames cannot resolve an FPR of {cal['target_fpr']:.0%}; "
                "the threshold sits above every real frame seen and will be loose on new data"
            )
    if doc.get("files_without_faces"):
        lines.append(f"no face found in: {', '.join(doc['files_without_faces'])}")
    if doc.get("errors"):
        lines.append(f"failed: {', '.join(doc['errors'])}")
    return "\n".join(lines)
