"""Calibration: temperature scaling of the logit plus an operating threshold for a target false positive
rate, and re-scoring a finished report under a temperature and threshold (for every aggregation strategy).

Temperature scaling (Guo et al. 2017) divides the logit by one fitted T > 0: the ranking (AUC, EER) does
not change, the probabilities do (log-loss, ECE). The threshold is then the lowest P(fake) at which the
evaluation set's real frames are called fake no more often than ``target_fpr``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from pipeline.aggregate import build_tracks, video_score
from pipeline.train.metrics import fit_temperature, logit, rates_at, sigmoid, threshold_at_fpr
from pipeline.types import FrameRow, Report, Strategy, TrackObservations

_THRESHOLD_MIN, _THRESHOLD_MAX = 1e-6, 1.0 - 1e-6  # Settings needs a threshold strictly inside (0, 1)


@dataclass(frozen=True)
class Calibration:
    """A fitted operating point. ``threshold`` is a calibrated P(fake); ``achieved_fpr``/``tpr`` are on the
    data it was fitted on (optimistic for new data, especially with few real samples)."""

    temperature: float
    threshold: float
    target_fpr: float
    achieved_fpr: float
    tpr: float
    n_real: int
    n_fake: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "temperature": self.temperature,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "achieved_fpr": self.achieved_fpr,
            "tpr": self.tpr,
            "n_real": self.n_real,
            "n_fake": self.n_fake,
        }


def apply_temperature(probs: ArrayLike, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T), float64; T = 1 returns the probabilities unchanged."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p.copy()
    return sigmoid(logit(p) / temperature)


def fit_calibration(labels: ArrayLike, probs: ArrayLike, target_fpr: float = 0.01) -> Calibration:
    """Fit T on raw P(fake) (labels 0 real / 1 fake), then the threshold for ``target_fpr`` on sigmoid(z/T)."""
    y = np.asarray(labels, dtype=np.int64)
    z = logit(probs)
    temperature = fit_temperature(y, z)
    calibrated = sigmoid(z / temperature)
    threshold = float(np.clip(threshold_at_fpr(y, calibrated, target_fpr), _THRESHOLD_MIN, _THRESHOLD_MAX))
    fpr, tpr = rates_at(y, calibrated, threshold)
    return Calibration(
        temperature=temperature,
        threshold=threshold,
        target_fpr=target_fpr,
        achieved_fpr=fpr,
        tpr=tpr,
        n_real=int((y == 0).sum()),
        n_fake=int((y == 1).sum()),
    )


def rescore(report: Report, temperature: float, threshold: float, min_faces: int) -> dict[Strategy, float | None]:
    """The report's video score under every strategy after applying ``temperature`` to each face's P(fake),
    with tracks re-scored at ``threshold`` (as ``analyze()`` would have with a calibrated model)."""
    rows = []
    for row in report.frames:
        faces = tuple(replace(f, fake_prob=float(apply_temperature([f.fake_prob], temperature)[0])) for f in row.faces)
        rows.append(FrameRow(row.index, row.time_s, max((f.fake_prob for f in faces), default=None), faces))
    observations = []
    for track in report.tracks:
        probs = [f.fake_prob for r in rows for f in r.faces if f.track_id == track.track_id]
        times = [r.time_s for r in rows for f in r.faces if f.track_id == track.track_id]
        observations.append(TrackObservations(track.track_id, track.frame_indices, tuple(times), tuple(probs)))
    min_agree = 1 if report.media.is_image else min_faces
    tracks = build_tracks(observations, threshold, min_agree=min_agree)
    return {s: video_score(rows, tracks, s, threshold) for s in Strategy}
