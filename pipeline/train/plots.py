"""Evaluation figures as PNG files: ROC curves and a reliability diagram.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend, no display needed);
matplotlib comes with grad-cam, a dependency of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.train.metrics import ReliabilityBins


@dataclass(frozen=True)
class Curve:
    """One ROC curve: ``fpr``/``tpr`` arrays from ``metrics.roc_curve``, ``name`` for the legend."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_png(path: Path, curves: Sequence[Curve], title: str) -> Path:
    """Write ROC curves (linear axes, chance diagonal) to ``path``; 6×6 in at 100 dpi."""
    fig = Figure(figsize=(6, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    for curve in curves:
        # straight segments between ROC points: the curve whose area roc_auc() reports (ties are diagonal)
        ax.plot(curve.fpr, curve.tpr, label=f"{curve.name} (AUC {curve.auc:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (real called fake)",
        ylabel="true positive rate (fake caught)",
    )
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def reliability_png(
    path: Path, bins: ReliabilityBins, ece: float, title: str, before: ReliabilityBins | None = None
) -> Path:
    """Write a reliability diagram (fraction fake vs mean P(fake) per bin, bin counts below) to ``path``.

    ``before``: the uncalibrated bins, drawn faintly for comparison when calibration was applied.
    """
    fig = Figure(figsize=(6, 7), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = float(bins.edges[1] - bins.edges[0])
    centres = bins.edges[:-1] + width / 2
    top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    if before is not None:
        top.plot(before.mean_prob, before.frac_fake, marker="s", color="lightgrey", label="before calibration")
    top.bar(centres[bins.bin_index], bins.frac_fake, width=width * 0.9, alpha=0.35, color="tab:blue")
    top.plot(bins.mean_prob, bins.frac_fake, marker="o", color="tab:blue", label=f"model (ECE {ece:.3f})")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction labelled fake")
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres[bins.bin_index], bins.counts, width=width * 0.9, color="tab:grey")
    bottom.set(xlabel="predicted P(fake)", ylabel="samples")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
