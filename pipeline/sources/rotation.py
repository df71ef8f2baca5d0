"""Display rotation, shared by the still and the video source (see the package docstring for why)."""

from __future__ import annotations

import numpy as np

# EXIF orientation -> clockwise display rotation (mirrored variants keep their rotation part)
EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}


def rotate(image: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Rotate H×W×3 clockwise by ``rotation_deg``; contiguous so torch.from_numpy accepts it."""
    if rotation_deg == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation_deg // 90)))


def clockwise(av_rotation: float | None) -> int:
    """PyAV's counter-clockwise ``VideoFrame.rotation`` -> clockwise display rotation in 0/90/180/270."""
    return (-round((av_rotation or 0) / 90) * 90) % 360
