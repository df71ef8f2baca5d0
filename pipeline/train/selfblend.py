"""Self-blended images (after Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022).

A real face is blended into a colour- and geometry-jittered copy of itself through a soft mask around the
face, so the result is a pseudo-fake whose only evidence is what every face swap leaves: a blending
boundary and a statistics mismatch between the inner face and its surroundings. Training on such pairs
teaches the boundary rather than one generator's fingerprints.

MTCNN gives 5 landmarks (eyes, nose, mouth corners), not the paper's 68/81, so the face region is a
polygon extrapolated from them (brows above the eyes, jaw and chin below the mouth), then the paper's
steps: random hull scaling, elastic deformation of the mask, two random blurs, a random blend ratio.

Images are H×W×3 uint8 RGB; masks H×W float32 in [0, 1] (1 = pixel taken from the jittered source);
landmarks 5×2 float32 (x, y) pixels in the order MTCNN returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # the paper's choices: full blends most often


@dataclass(frozen=True)
class Blend:
    """One self-blended face. ``image``: H×W×3 uint8 RGB; ``mask``: H×W float32 in [0, 1], the weight of
    the jittered source per pixel (0 = untouched original)."""

    image: np.ndarray
    mask: np.ndarray
    label: int = 1  # always fake: a blended face is the positive class


def face_polygon(landmarks: np.ndarray) -> np.ndarray:
    """The face region as a convex polygon (K×2 float32 pixels) from 5 MTCNN landmarks.

    Proportions are in eye-to-mouth distance ``d`` and eye distance ``w``: brows ~0.45 d above the eyes,
    chin ~0.75 d below the mouth, cheeks ~0.45 w outside the eyes — about the area a swap replaces.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, _nose, left_mouth, right_mouth = pts
    eye_c, mouth_c = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    down = mouth_c - eye_c  # eyes -> mouth
    across = right_eye - left_eye  # left eye -> right eye
    extra = [
        left_eye - 0.45 * down - 0.25 * across,  # brows and temples
        right_eye - 0.45 * down + 0.25 * across,
        left_eye + 0.5 * down - 0.45 * across,  # cheeks
        right_eye + 0.5 * down + 0.45 * across,
        left_mouth + 0.45 * down - 0.2 * across,  # jaw
        right_mouth + 0.45 * down + 0.2 * across,
        mouth_c + 0.75 * down,  # chin
    ]
    hull = cv2.convexHull(np.vstack([pts, extra]).astype(np.float32))
    return hull.reshape(-1, 2)


def hull_mask(shape_hw: tuple[int, int], polygon: np.ndarray, scale_xy: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """H×W float32 mask: 1 inside ``polygon`` scaled by ``scale_xy`` about its centroid, 0 outside."""
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    centre = poly.mean(axis=0)
    scaled = centre + (poly - centre) * np.asarray(scale_xy, dtype=np.float64)
    mask = np.zeros(shape_hw, dtype=np.uint8)
    # fillConvexPoly wants integer vertices: 4 fractional bits keep sub-pixel accuracy
    cv2.fillConvexPoly(mask, np.round(scaled * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha_px: float, sigma_px: float) -> np.ndarray:
    """Elastic deformation: uniform noise smoothed by a Gaussian of ``sigma_px`` (the wobble's length
    scale), rescaled so each displacement component has a standard deviation of ``alpha_px``."""
    if alpha_px <= 0:
        return mask
    h, w = mask.shape
    k = int(2 * round(3 * sigma_px) + 1)

    def field() -> np.ndarray:
        f = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (k, k), sigma_px)
        return f * (alpha_px / max(float(f.std()), 1e-6))

    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + field(), gy + field(), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def soften(mask: np.ndarray, kernel1_px: int, kernel2_px: int) -> np.ndarray:
    """The paper's two-step blur: blur, keep only what stayed fully inside (erodes the edge), blur again,
    rescale to a peak of 1. Kernel sizes are odd pixel counts; the soft edge is ~kernel2_px wide."""
    k1, k2 = kernel1_px | 1, kernel2_px | 1
    out = cv2.GaussianBlur(mask.astype(np.float32), (k1, k1), 0)
    peak = float(out.max())
    # float32 kernels sum to 1 only within rounding: "fully inside" is within 1e-3 of the peak
    out[out < peak * (1.0 - 1e-3)] = 0.0
    out = cv2.GaussianBlur(out, (k2, k2), 0)
    peak = float(out.max())
    return out / peak if peak > 0 else out


def random_mask(shape_hw: tuple[int, int], landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random soft face mask: hull scaled by 0.9-1.1 per axis, elastic deformation and blurs proportional
    to the face size (eye distance), times a blend ratio from ``BLEND_RATIOS``."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_px = max(4.0, float(np.linalg.norm(pts[1] - pts[0])))
    mask = hull_mask(shape_hw, face_polygon(pts), tuple(rng.uniform(0.9, 1.1, 2)))  # type: ignore[arg-type]
    mask = elastic(mask, rng, alpha_px=0.04 * eye_px, sigma_px=max(2.0, 0.25 * eye_px))
    k1 = int(rng.uniform(0.1, 0.35) * eye_px)
    k2 = int(rng.uniform(0.1, 0.35) * eye_px)
    mask = soften(mask, max(3, k1), max(3, k2))
    return (mask * rng.choice(BLEND_RATIOS)).astype(np.float32)


def jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour-shifted copy: per-channel offsets (±20 levels), hue (±5°)/saturation/value scaling,
    brightness/contrast (±10%), and at random a sharpen or a down-up resize (frequency mismatch)."""
    img = image.astype(np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5) / 2) % 180  # OpenCV hue is degrees / 2
    hsv[..., 1] *= rng.uniform(0.85, 1.15)
    hsv[..., 2] *= rng.uniform(0.9, 1.1)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    img = (img - 128.0) * rng.uniform(0.9, 1.1) + 128.0 * rng.uniform(0.9, 1.1)
    out = np.clip(img, 0, 255).astype(np.uint8)
    pick = rng.random()
    if pick < 0.3:
        blurred = cv2.GaussianBlur(out, (0, 0), 1.0).astype(np.float32)
        out = np.clip(out + 0.7 * (out - blurred), 0, 255).astype(np.uint8)
    elif pick < 0.6:
        h, w = out.shape[:2]
        f = rng.uniform(0.5, 0.8)
        small = cv2.resize(out, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def jitter_geometry(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same small affine warp (shift ±3% of the size, scale 0.95-1.05) on the source and its mask, so
    the blended-in face is slightly misaligned with what surrounds it, as in a real swap."""
    h, w = mask.shape
    s = rng.uniform(0.95, 1.05)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h
    m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], dtype=np.float64)
    warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    warped_mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return warped, warped_mask


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask × source + (1 − mask) × target, rounded to uint8. All H×W(×3); mask float in [0, 1]."""
    if target.shape != source.shape or target.shape[:2] != mask.shape:
        raise ValueError(f"blend needs equal sizes, got {target.shape}, {source.shape}, mask {mask.shape}")
    m = mask[..., None].astype(np.float32)
    out = m * source.astype(np.float32) + (1.0 - m) * target.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> Blend:
    """A pseudo-fake from one real face: ``image`` H×W×3 uint8 RGB (the face with some context around it),
    ``landmarks`` 5×2 pixels in that image. Either the source or the target is the colour-jittered copy
    (the paper's choice, so the model cannot learn "the inside is always the altered one")."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H×W×3 uint8 RGB, got {image.dtype} {image.shape}")
    target = image
    source = image.copy()
    if rng.random() < 0.5:
        source = jitter_colour(source, rng)
    else:
        target = jitter_colour(target, rng)
    mask = random_mask(image.shape[:2], landmarks, rng)
    source, mask = jitter_geometry(source, mask, rng)
    return Blend(image=blend(target, source, mask), mask=mask)
