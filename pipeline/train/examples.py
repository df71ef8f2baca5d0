"""Training examples: face samples -> crops (self-blended, box-jittered, augmented) -> tensors and batches.

Crops are crop_px×crop_px×3 uint8 RGB, cut from each sample's context with the service's own crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pipeline.classify import preprocess
from pipeline.train.augment import AugmentConfig, augment
from pipeline.train.data import FAKE, REAL, FaceSample, crop_from
from pipeline.train.selfblend import self_blend
from pipeline.types import PreprocessProfile

Unit = tuple[FaceSample, bool]  # a face, and whether to add its self-blended twin to the same batch


def render(
    face: FaceSample,
    profile: PreprocessProfile,
    rng: np.random.Generator,
    *,
    blend: bool,
    augment_cfg: AugmentConfig | None,
    jitter: bool = True,
) -> np.ndarray:
    """One training crop (crop_px×crop_px×3 uint8 RGB): optionally self-blended on the context, cut with
    the service's crop (box jittered by ±4% / ×0.95-1.05 when ``jitter``), then augmented."""
    context = self_blend(face.context, face.landmarks, rng).image if blend else face.context
    shift = tuple(rng.uniform(-0.04, 0.04, 2)) if jitter else (0.0, 0.0)
    scale = float(rng.uniform(0.95, 1.05)) if jitter else 1.0
    crop = crop_from(context, face.box_xyxy, profile, shift, scale)  # type: ignore[arg-type]
    return augment(crop, rng, augment_cfg) if augment_cfg is not None else crop


def make_batch(
    units: Sequence[Unit],
    profile: PreprocessProfile,
    rng: np.random.Generator,
    device: torch.device,
    augment_cfg: AugmentConfig | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x N×3×P×P float32, y N float32 in {0, 1}): each face as labelled, plus its blend (label 1) if asked."""
    crops, labels = [], []
    for face, with_blend in units:
        crops.append(render(face, profile, rng, blend=False, augment_cfg=augment_cfg))
        labels.append(float(face.label))
        if with_blend:
            crops.append(render(face, profile, rng, blend=True, augment_cfg=augment_cfg))
            labels.append(1.0)
    return preprocess(crops, profile, device), torch.tensor(labels, dtype=torch.float32, device=device)


def validation_set(
    faces: Sequence[FaceSample], profile: PreprocessProfile, seed: int, self_blend_on: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """Fixed validation crops and labels: each face as is, plus (self-blend) one blend of each real face
    from a per-face seed, so every epoch is measured on the same images."""
    crops, labels = [], []
    for i, face in enumerate(faces):
        rng = np.random.default_rng([seed, 7, i])
        crops.append(render(face, profile, rng, blend=False, augment_cfg=None, jitter=False))
        labels.append(face.label)
        if self_blend_on and face.label == REAL:
            crops.append(render(face, profile, rng, blend=True, augment_cfg=None, jitter=False))
            labels.append(FAKE)
    return crops, np.asarray(labels, dtype=np.int64)


def batches_of(units: list[Unit], batch_size: int) -> list[list[Unit]]:
    out: list[list[Unit]] = [[]]
    size = 0
    for unit in units:
        n = 2 if unit[1] else 1
        if size + n > batch_size and out[-1]:
            out.append([])
            size = 0
        out[-1].append(unit)
        size += n
    return [b for b in out if b]
