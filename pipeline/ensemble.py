"""Several detectors at once: each face scored by every detector, and their P(fake)s fused into one.

Each member is a loaded detector (pipeline/detectors/registry.py) with its own classifier and Grad-CAM.
A face is cropped once per distinct preprocessing profile (members that share a profile share the crop);
each member scores its crops in one batch, so a batch of N faces costs one call per member.

Fusion, the rule: the face's ``fake_prob`` is the mean of the members' *calibrated* P(fake) (each
member's model card temperature is already folded into its logit by ``load_model``), every member
weighing the same; or, when an ensemble card for exactly these members (in this order) is in the models
directory (``ensemble-<sha256[:16]>.card.json``, written by ``dff eval --calibrate A B ...``), logistic
stacking: sigmoid(bias + Σ weight_i · logit(P_i)), with the card's threshold as the calibrated one.
``FaceScore.members`` keeps each member's P(fake), Grad-CAM and crop in member order;
the fused face's heatmap, crop and embedding are the first member's (the tracker needs one identity
embedding, and the first member is the one named first by the user).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.classify import FaceClassifier
from pipeline.detect import crop_faces
from pipeline.errors import CheckpointError
from pipeline.models import LoadedModel
from pipeline.types import FaceBox, FaceCrop, FaceScore, MemberScore, ModelInfo, PreprocessProfile

FUSION_MEAN = "mean of calibrated P(fake)"
ENSEMBLE_DETECTOR = "ensemble"
ENSEMBLE_CARD_SCHEMA = "dff.ensemble-card/1"
_LOGIT_CLIP = 15.0  # |logit| cap: P(fake) of exactly 0 or 1 would give an infinite feature


def logits(probs: np.ndarray) -> np.ndarray:
    """logit(p), clipped to ±15 (float64)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.clip(np.log(p) - np.log1p(-p), -_LOGIT_CLIP, _LOGIT_CLIP)


@dataclass(frozen=True)
class Stacking:
    """Logistic stacking: P(fake) = sigmoid(bias + weights · logit(member P(fake)s))."""

    weights: tuple[float, ...]
    bias: float
    threshold: float | None = None  # the operating point fitted with it, if any
    fitted_on: str = ""

    def fuse(self, probs: np.ndarray) -> np.ndarray:
        """N×K member probabilities -> N fused ones."""
        z = self.bias + logits(probs) @ np.asarray(self.weights, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def describe(self) -> str:
        w = ", ".join(f"{x:.3g}" for x in self.weights)
        where = f", fitted on {self.fitted_on}" if self.fitted_on else ""
        return f"logistic stacking (weights {w}, bias {self.bias:.3g}{where})"


def fit_stacking(member_probs: np.ndarray, labels: np.ndarray, l2: float = 1e-2, steps: int = 50) -> Stacking:
    """Logistic regression of labels (0 real, 1 fake) on the members' logits (N×K), by Newton's method
    with a small L2 penalty on the weights (not the bias) so separable data still has an answer."""
    x = logits(member_probs)
    y = np.asarray(labels, dtype=np.float64)
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    theta = np.zeros(a.shape[1])
    penalty = np.diag([0.0] + [l2] * x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        gradient = a.T @ (p - y) + penalty @ theta
        hessian = (a * (p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return Stacking(tuple(float(w) for w in theta[1:]), float(theta[0]))


def ensemble_card_path(models_dir: Path, info: ModelInfo) -> Path:
    """Where the card of the ensemble ``info`` (from ``ensemble_info``) lives."""
    return Path(models_dir) / f"ensemble-{info.sha256[:16]}.card.json"


def read_stacking(models_dir: Path, info: ModelInfo) -> Stacking | None:
    """The stacking fusion of this exact ensemble, from its card; None without one. A card that does not
    describe these members (other sha256), or is malformed, is an error, not silently ignored."""
    path = ensemble_card_path(models_dir, info)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        if card.get("schema") != ENSEMBLE_CARD_SCHEMA or card.get("sha256") != info.sha256:
            raise ValueError(f"it is not a {ENSEMBLE_CARD_SCHEMA} card for ensemble {info.sha256[:16]}")
        fusion = card["fusion"]
        weights = tuple(float(w) for w in fusion["weights"])
        threshold = card.get("threshold")
        stacking = Stacking(weights, float(fusion["bias"]), None if threshold is None else float(threshold))
        fitted_on = str(card.get("fitted_on", {}).get("name", ""))
        return dataclasses.replace(stacking, fitted_on=fitted_on)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"ensemble card {path}: {err}") from None


def write_stacking(
    models_dir: Path, info: ModelInfo, members: Sequence[ModelInfo], stacking: Stacking, fitted_on: dict[str, object]
) -> Path:
    """Write this ensemble's card (atomically); ``fitted_on`` describes the data."""
    path = ensemble_card_path(models_dir, info)
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {
        "schema": ENSEMBLE_CARD_SCHEMA,
        "sha256": info.sha256,
        "name": info.name,
        "members": [{"name": m.name, "sha256": m.sha256, "detector": m.detector} for m in members],
        "fusion": {"kind": "stacking", "weights": list(stacking.weights), "bias": stacking.bias},
        "threshold": stacking.threshold,
        "fitted_on": fitted_on,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def ensemble_info(members: Sequence[ModelInfo], device: str) -> ModelInfo:
    """The ModelInfo that names an ensemble in reports: its name lists the members, its sha256 hashes
    theirs (in order), so a report (and ``scan --ray``'s resume key) changes when any member does."""
    name = "ensemble(" + " + ".join(m.name for m in members) + ")"
    digest = hashlib.sha256("\n".join(m.sha256 for m in members).encode()).hexdigest()
    untrained = any(m.untrained for m in members)
    precision = "fp32" if all(m.precision == "fp32" for m in members) else "mixed"
    return ModelInfo(
        name, digest, members[0].profile, device, untrained, precision=precision, detector=ENSEMBLE_DETECTOR
    )


@dataclass
class Ensemble:
    """Members and their classifiers (open while the ensemble is; ``close()`` releases every CAM)."""

    models: tuple[LoadedModel, ...]
    classifiers: tuple[FaceClassifier, ...]
    stacking: Stacking | None = None  # None: the mean

    @property
    def fusion(self) -> str:
        return FUSION_MEAN if self.stacking is None else self.stacking.describe()

    def __post_init__(self) -> None:
        if len(self.models) < 2 or len(self.models) != len(self.classifiers):
            raise ValueError(f"an ensemble needs >= 2 members with a classifier each, got {len(self.models)}")
        profiles: list[PreprocessProfile] = []
        for model in self.models:
            if model.info.profile not in profiles:
                profiles.append(model.info.profile)
        self._profiles = tuple(profiles)
        self._slot = tuple(profiles.index(m.info.profile) for m in self.models)  # member -> its crop

    @property
    def infos(self) -> tuple[ModelInfo, ...]:
        return tuple(m.info for m in self.models)

    def crop(self, image: np.ndarray, boxes: Sequence[FaceBox]) -> list[FaceCrop]:
        """Per face a tuple of crops, one per member (H×W×3 uint8 RGB image; members sharing a profile
        share the array)."""
        per_profile = [crop_faces(image, boxes, profile) for profile in self._profiles]
        return [tuple(per_profile[slot][i] for slot in self._slot) for i in range(len(boxes))]

    def score(self, crops: Sequence[FaceCrop], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        """One fused FaceScore per face (``crops`` from ``crop``), members' views in ``members``."""
        if len(crops) != len(boxes):
            raise ValueError(f"score() needs one box per crop, got {len(crops)} crops and {len(boxes)} boxes")
        if not crops:
            return []
        for c in crops:
            if not isinstance(c, tuple) or len(c) != len(self.models):
                raise ValueError(f"an ensemble of {len(self.models)} scores per-member crop tuples (Ensemble.crop)")
        views = [
            classifier.score([c[i] for c in crops], boxes)  # type: ignore[index]
            for i, classifier in enumerate(self.classifiers)
        ]
        probs = np.array([[v[j].fake_prob for v in views] for j in range(len(boxes))], dtype=np.float64)
        fused_probs = probs.mean(axis=1) if self.stacking is None else self.stacking.fuse(probs)
        fused = []
        for j, box in enumerate(boxes):
            members = tuple(MemberScore(v[j].fake_prob, v[j].heatmap, v[j].crop) for v in views)
            first = views[0][j]
            fake_prob = float(fused_probs[j])
            fused.append(FaceScore(box, fake_prob, first.heatmap, first.embedding, crop=first.crop, members=members))
        return fused

    def close(self) -> None:
        for classifier in self.classifiers:
            classifier.close()
