"""Does the classifier trunk's low precision change a verdict? The service's engine (``Settings.precision``,
bf16 on a CPU with native bf16) and an fp32 engine analyse the same inputs; every face's P(fake), every
frame's score and the verdict are compared.

This is how "fp32 stays the default where bf16 changes a verdict" is checked: on every benchmark run, over
the generated clip, the videos in ../shared/media and the labelled frames in ../shared/labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import PipelineResult


@dataclass(frozen=True, slots=True)
class Agreement:
    """One input analysed twice: ``ref`` in fp32, ``low`` at the service's precision."""

    name: str
    faces: int
    label_ref: str
    label_low: str
    score_ref: float | None
    score_low: float | None
    max_face_dp: float  # max |ΔP(fake)| over faces (the faces are the same: detection does not change)

    @property
    def flipped(self) -> bool:
        return self.label_ref != self.label_low

    @property
    def score_dp(self) -> float:
        if self.score_ref is None or self.score_low is None:
            return 0.0 if self.score_ref == self.score_low else float("inf")
        return abs(self.score_ref - self.score_low)


def agreement(name: str, ref: PipelineResult, low: PipelineResult) -> Agreement:
    """Compare two runs of ``analyze()`` on the same file (raises when they did not see the same faces)."""
    if len(ref.fake_probs) != len(low.fake_probs):
        raise AssertionError(f"{name}: {len(ref.fake_probs)} faces in fp32, {len(low.fake_probs)} in low precision")
    dp = max((abs(a - b) for a, b in zip(ref.fake_probs, low.fake_probs, strict=True)), default=0.0)
    return Agreement(name, len(ref.fake_probs), ref.label, low.label, ref.score, low.score, dp)


def summary(precision: str, agreements: list[Agreement]) -> dict[str, Any]:
    """The JSON section and the numbers the closing line prints."""
    flips = [a for a in agreements if a.flipped]
    return {
        "precision": precision,
        "inputs": len(agreements),
        "faces": sum(a.faces for a in agreements),
        "verdict_flips": len(flips),
        "flipped": [f"{a.name}: {a.label_ref} -> {a.label_low} ({a.score_ref} -> {a.score_low})" for a in flips],
        "max_face_dp": max((a.max_face_dp for a in agreements), default=0.0),
        "max_score_dp": max((a.score_dp for a in agreements), default=0.0),
        "per_input": [
            {
                "name": a.name,
                "faces": a.faces,
                "label_fp32": a.label_ref,
                "label": a.label_low,
                "score_fp32": a.score_ref,
                "score": a.score_low,
                "max_face_dp": a.max_face_dp,
            }
            for a in agreements
        ],  # fmt: skip
    }


def describe(s: dict[str, Any]) -> str:
    """One line for the console and the notes."""
    verdict = "no verdict changed" if not s["verdict_flips"] else f"{s['verdict_flips']} VERDICTS CHANGED"
    return (
        f"precision {s['precision']} vs fp32 on {s['inputs']} inputs ({s['faces']} faces): {verdict}; "
        f"max |ΔP(fake)| per face {s['max_face_dp']:.2e}, per verdict score {s['max_score_dp']:.2e}"
    )


def labelled_images(labelled_dir: Path | None) -> list[Path]:
    """The labelled frames (``../shared/labelled/**/*.jpg|png``), sorted; [] when absent."""
    if labelled_dir is None or not labelled_dir.is_dir():
        return []
    return sorted(p for p in labelled_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
