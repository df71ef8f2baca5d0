"""Grad-CAM overlays: a face crop with its heatmap colour-mapped over it, as JPEG bytes. Pure compute.

OpenCV works in BGR; the crop arrives RGB (the project's convention), so the colour order is fixed here.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_ALPHA = 0.45  # heatmap weight in the blend: enough to read the colours, still see the face
DEFAULT_QUALITY = 85  # JPEG quality: ~6-10 KB for a 160-px crop


def overlay_jpeg(
    crop: np.ndarray, heatmap: np.ndarray, *, alpha: float = DEFAULT_ALPHA, quality: int = DEFAULT_QUALITY
) -> bytes:
    """JPEG bytes of ``crop`` with ``heatmap`` over it (JET colour map: blue = low, red = high).

    ``crop``: S×S×3 uint8 RGB (the crop the model saw). ``heatmap``: h×w float in [0, 1] (Grad-CAM over the
    model input, e.g. 256×256); it is resized bilinearly to the crop's size. The JPEG is S×S pixels.
    """
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"crop must be H×W×3 uint8 RGB, got {crop.dtype} {crop.shape}")
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be h×w, got shape {heatmap.shape}")
    if not 0.0 <= alpha <= 1.0 or not 1 <= quality <= 100:
        raise ValueError(f"need alpha in [0, 1] and quality in 1..100, got {alpha}, {quality}")
    height, width = crop.shape[:2]
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colours = cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET)  # BGR
    face = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
    blended = cv2.addWeighted(colours, alpha, face, 1.0 - alpha, 0.0)
    ok, buf = cv2.imencode(".jpg", blended, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV only fails here on invalid input, checked above
        raise RuntimeError("OpenCV could not encode the overlay as JPEG")
    return buf.tobytes()
