"""The numpy metrics against scikit-learn (and hand-worked values) on fixed score tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from pipeline.train import metrics as M

_RNG = np.random.default_rng(20240611)
_NOISY_Y = _RNG.integers(0, 2, 200)
TABLES = {
    "small": ([0, 0, 1, 1, 0, 1, 1, 0, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7, 0.55, 0.3]),
    "ties": ([0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0], [0.2, 0.2, 0.5, 0.5, 0.9, 0.1, 0.5, 0.7, 0.2, 0.7, 0.9, 0.1]),
    "perfect": ([0, 0, 0, 1, 1], [0.01, 0.2, 0.3, 0.8, 0.99]),
    "inverted": ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]),
    "noisy-200": (_NOISY_Y, np.clip(0.5 + 0.25 * (_NOISY_Y - 0.5) + _RNG.normal(0, 0.2, 200), 0.001, 0.999).round(3)),
}
PARAMS = pytest.mark.parametrize("labels,scores", TABLES.values(), ids=TABLES.keys())


@PARAMS
def test_roc_curve_and_auc_match_sklearn(labels, scores):
    fpr, tpr, thr = M.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert M.roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


@PARAMS
def test_tpr_at_fpr_matches_sklearn_curve(labels, scores):
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    for max_fpr in (0.0, 0.01, 0.1, 0.3):
        assert M.tpr_at_fpr(labels, scores, max_fpr) == pytest.approx(sk_tpr[sk_fpr <= max_fpr].max())


@PARAMS
def test_accuracy_and_log_loss_match_sklearn(labels, scores):
    for threshold in (0.3, 0.5, 0.7):
        expected = skm.accuracy_score(labels, (np.asarray(scores) >= threshold).astype(int))
        assert M.accuracy(labels, scores, threshold) == pytest.approx(expected)
    assert M.log_loss(labels, scores) == pytest.approx(skm.log_loss(labels, scores), rel=1e-12)


@PARAMS
def test_reliability_bins_match_sklearn_calibration_curve(labels, scores):
    for n_bins in (5, 10):
        bins = M.reliability_bins(labels, scores, n_bins)
        prob_true, prob_pred = calibration_curve(labels, scores, n_bins=n_bins, strategy="uniform")
        np.testing.assert_allclose(bins.frac_fake, prob_true)
        np.testing.assert_allclose(bins.mean_prob, prob_pred)
        assert bins.counts.sum() == len(labels)


def test_ece_by_hand():
    # bins of 0.5: [0, 0.5] holds 0.1, 0.2 (labels 0, 1): |0.5 - 0.15| = 0.35, weight 1/2;
    # (0.5, 1] holds 0.8, 0.9 (labels 1, 1): |1 - 0.85| = 0.15, weight 1/2 -> ECE 0.25
    assert M.expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.8, 0.9], n_bins=2) == pytest.approx(0.25)
    assert M.expected_calibration_error([0, 1], [0.0, 1.0], n_bins=10) == 0.0


@PARAMS
def test_ece_is_the_weighted_gap_of_sklearn_bins(labels, scores):
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], scores)
    counts = np.bincount(ids, minlength=10)
    counts = counts[counts > 0]
    expected = np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))
    assert M.expected_calibration_error(labels, scores, 10) == pytest.approx(expected)


@pytest.mark.parametrize(
    "labels,scores,rate,threshold",
    [
        ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5, 0.6),  # FPR = FNR = 1/2 exactly at 0.6
        ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.3, 0.8, 0.9], 1 / 3, 0.7),
        ([0, 1], [0.5, 0.5], 0.5, 0.5),  # the crossing is halfway along a diagonal (tied) segment
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0, 0.8),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 1.0, 0.8),  # inverted: both rates reach 1 at 0.8
    ],
)
def test_eer_by_hand(labels, scores, rate, threshold):
    got_rate, got_threshold = M.eer(labels, scores)
    assert got_rate == pytest.approx(rate)
    assert got_threshold == pytest.approx(threshold)


@PARAMS
def test_eer_lies_where_fpr_meets_fnr_on_the_sklearn_curve(labels, scores):
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    rate, _ = M.eer(labels, scores)
    # on the piecewise-linear curve, the crossing point is bracketed by consecutive points
    i = int(np.flatnonzero(fnr - fpr <= 0)[0])
    lo, hi = sorted([fpr[max(i - 1, 0)], fpr[i]])
    assert lo - 1e-12 <= rate <= hi + 1e-12
    assert min(fpr[i], fnr[i]) - 1e-12 <= rate <= max(fpr[max(i - 1, 0)], fnr[max(i - 1, 0)]) + 1e-12


@PARAMS
def test_threshold_at_fpr_is_the_lowest_that_keeps_the_rate(labels, scores):
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    for target in (0.0, 0.1, 0.25):
        thr = M.threshold_at_fpr(y, s, target)
        fpr = np.mean(s[y == 0] >= thr)
        assert fpr <= target + 1e-12
        lower = s[(y == 0) & (s < thr)]
        if lower.size:  # the next real score down would break the target
            assert np.mean(s[y == 0] >= lower.max()) > target


def test_fit_temperature_matches_a_direct_minimisation():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    z_true = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z_true))).astype(int)
    z_seen = 3.0 * z_true  # an over-confident model: the right temperature is about 3

    def nll(t: float) -> float:
        return skm.log_loss(y, M.sigmoid(z_seen / t))

    best = scipy_optimize.minimize_scalar(nll, bounds=(0.05, 100), method="bounded", options={"xatol": 1e-8}).x
    t = M.fit_temperature(y, z_seen)
    assert t == pytest.approx(best, rel=1e-4)
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll(t) <= M.log_loss(y, M.sigmoid(z_seen)) + 1e-12


def test_fit_temperature_edge_cases():
    assert M.fit_temperature([0, 1, 1], [0.0, 0.0, 0.0]) == 1.0
    assert M.fit_temperature([0, 1], [-5.0, 5.0]) == 0.05  # separable: as sharp as allowed
    assert M.fit_temperature([1, 0], [-5.0, 5.0]) == 100.0  # always wrong: flatten to ~0.5


def test_logit_and_sigmoid_invert_each_other():
    p = np.array([1e-9, 0.01, 0.5, 0.99, 1.0])
    back = M.sigmoid(M.logit(p))
    np.testing.assert_allclose(back[1:4], p[1:4])
    assert 0 < back[0] < 1e-6 and 1 - 1e-6 < back[-1] < 1
    assert math.isfinite(M.logit([1.0])[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: M.roc_auc([0, 0], [0.1, 0.2]),
        lambda: M.roc_auc([0, 1], [0.1]),
        lambda: M.roc_auc([0, 2], [0.1, 0.2]),
        lambda: M.roc_auc([0, 1], [0.1, float("nan")]),
        lambda: M.threshold_at_fpr([1, 1], [0.1, 0.2], 0.01),
    ],
)
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()
