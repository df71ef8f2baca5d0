"""Detection metrics in plain numpy: ROC, AUC, EER, TPR at a fixed FPR, accuracy, log-loss, calibration.

Conventions: ``labels`` are 0 (real) / 1 (fake), ``scores``/``probs`` are P(fake) (any monotone score works
for the ranking metrics); a sample is called fake when its score is >= the threshold. Every function takes
1-D array-likes of equal length and returns Python floats. Tested against scikit-learn on fixed tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def _check(labels: ArrayLike, scores: ArrayLike, *, both_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"need one score per label, got {y.size} labels and {s.size} scores")
    if y.size == 0:
        raise ValueError("no samples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if both_classes and (y.min() == y.max()):
        raise ValueError(f"need both real and fake samples, got only label {int(y[0])}")
    return y, s


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, thresholds descending from +inf.

    Point i calls fake every sample with score >= thresholds[i]; the first point (inf) calls none fake.
    Same points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last index of each tied score
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last_of_run]]


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoids, so tied scores count one half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """(equal error rate, threshold there): where FPR = FNR, linearly interpolated between ROC points.

    The threshold is the score of the ROC point nearest the crossing (interpolating scores means nothing).
    """
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # starts at 1 (nothing called fake), ends at -1 or 0, never increases
    i = int(np.flatnonzero(diff <= 0)[0])
    if diff[i] == 0 or i == 0:
        return float(fpr[i]), float(thr[i])
    # crossing between points i-1 (diff > 0) and i (diff < 0)
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    j = i if w >= 0.5 else i - 1
    return float(rate), float(thr[j]) if np.isfinite(thr[j]) else float(thr[i])


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, max_fpr: float = 0.01) -> float:
    """The highest TPR of any threshold whose FPR is <= ``max_fpr`` (no interpolation: achievable)."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def threshold_at_fpr(labels: ArrayLike, scores: ArrayLike, target_fpr: float) -> float:
    """The lowest threshold whose FPR on these samples is <= ``target_fpr`` (more fakes caught at that
    FPR than with any higher threshold). Only the real (label 0) samples matter."""
    y, s = _check(labels, scores, both_classes=False)
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    negatives = np.sort(s[y == 0])[::-1]
    if negatives.size == 0:
        raise ValueError("need real (label 0) samples to set a threshold for a false positive rate")
    allowed = math.floor(target_fpr * negatives.size + 1e-9)  # false positives we may make
    # strictly above the (allowed+1)-th highest real score, so that one is not called fake
    return float(np.nextafter(negatives[allowed], np.inf))


def accuracy(labels: ArrayLike, probs: ArrayLike, threshold: float = 0.5) -> float:
    """Fraction of samples whose call (fake when prob >= threshold) matches the label."""
    y, p = _check(labels, probs, both_classes=False)
    return float(np.mean((p >= threshold).astype(np.int64) == y))


def rates_at(labels: ArrayLike, probs: ArrayLike, threshold: float) -> tuple[float, float]:
    """(FPR, TPR) when calling fake every prob >= threshold."""
    y, p = _check(labels, probs)
    called = p >= threshold
    return float(called[y == 0].mean()), float(called[y == 1].mean())


def log_loss(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean binary cross-entropy in nats; probs clipped to [eps, 1 - eps] (float64 eps, as scikit-learn)."""
    y, p = _check(labels, probs, both_classes=False)
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins over P(fake) in [0, 1]; arrays have one entry per *non-empty* bin.

    ``edges``: n_bins+1 floats; ``mean_prob``: mean predicted P(fake); ``frac_fake``: fraction labelled
    fake; ``counts``: samples; ``bin_index``: which of the n_bins each entry is.
    """

    edges: np.ndarray
    mean_prob: np.ndarray
    frac_fake: np.ndarray
    counts: np.ndarray
    bin_index: np.ndarray


def reliability_bins(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> ReliabilityBins:
    """Bin as ``sklearn.calibration.calibration_curve(strategy="uniform")`` does: a prob on an inner edge
    goes to the lower bin."""
    y, p = _check(labels, probs, both_classes=False)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    keep = counts > 0
    return ReliabilityBins(
        edges=edges,
        mean_prob=sum_p[keep] / counts[keep],
        frac_fake=sum_y[keep] / counts[keep],
        counts=counts[keep],
        bin_index=np.flatnonzero(keep),
    )


def expected_calibration_error(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> float:
    """ECE of P(fake): sum over bins of (bin share of samples) × |fraction fake − mean P(fake)|."""
    bins = reliability_bins(labels, probs, n_bins)
    total = bins.counts.sum()
    return float(np.sum(bins.counts / total * np.abs(bins.frac_fake - bins.mean_prob)))


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(x, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logit(probs: ArrayLike, eps: float = 1e-7) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [eps, 1 - eps] (float32 sigmoids saturate at 1.0)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def fit_temperature(labels: ArrayLike, logits: ArrayLike, t_min: float = 0.05, t_max: float = 100.0) -> float:
    """The temperature T in [t_min, t_max] minimising the log-loss of sigmoid(logit / T).

    The loss is convex in a = 1/T (logistic regression on one feature, no bias), so its derivative
    sum((sigmoid(a z) − y) z) rises with a: bisection on it, in log space. Separable data push T to
    ``t_min``; all-zero logits leave T = 1.
    """
    y, z = _check(labels, logits, both_classes=False)
    if not np.any(z):
        return 1.0

    def slope(a: float) -> float:
        return float(np.sum((sigmoid(a * z) - y) * z))

    lo, hi = math.log(1.0 / t_max), math.log(1.0 / t_min)
    if slope(math.exp(hi)) <= 0:
        return t_min
    if slope(math.exp(lo)) >= 0:
        return t_max
    for _ in range(100):
        mid = (lo + hi) / 2
        if slope(math.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return 1.0 / math.exp((lo + hi) / 2)
