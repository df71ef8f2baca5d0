"""Training-time augmentation of face crops, applied alike to real and fake faces so that none of it can
become a cue: JPEG re-compression, blur, down-up resizing, colour, horizontal flip.

Everything is S×S×3 uint8 RGB in, same shape out; randomness comes only from the ``rng`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (0..1) and ranges of each augmentation; ``AugmentConfig.off()`` disables all."""

    p_flip: float = 0.5
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    p_blur: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.3, 1.5)
    p_resize: float = 0.3
    resize_factor: tuple[float, float] = (0.4, 0.9)  # down-scale factor before scaling back up
    p_colour: float = 0.5
    brightness: float = 0.15  # ± fraction
    contrast: float = 0.15
    saturation: float = 0.2

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(p_flip=0.0, p_jpeg=0.0, p_blur=0.0, p_resize=0.0, p_colour=0.0)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (1..100) and decode again: the artefacts of re-uploaded media."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - only on invalid input
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def down_up(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (area) and scale back (bilinear): a lower-resolution source."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def colour(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast and saturation, each within ± the configured fraction."""
    img = image.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    img = (img - img.mean()) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + img.mean()
    img = img * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """One random augmentation of an S×S×3 uint8 RGB crop. Colour and blur come before JPEG, as when
    edited media are re-encoded."""
    cfg = cfg or AugmentConfig()
    out = image
    if rng.random() < cfg.p_flip:
        out = out[:, ::-1]
    if rng.random() < cfg.p_colour:
        out = colour(out, rng, cfg)
    if rng.random() < cfg.p_resize:
        out = down_up(np.ascontiguousarray(out), rng.uniform(*cfg.resize_factor))
    if rng.random() < cfg.p_blur:
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), rng.uniform(*cfg.blur_sigma_px))
    if rng.random() < cfg.p_jpeg:
        out = jpeg_recompress(
            np.ascontiguousarray(out), int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        )
    return np.ascontiguousarray(out)
