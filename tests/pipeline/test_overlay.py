"""Grad-CAM overlay JPEGs: size of the crop, hot = red where the heatmap is high, colours in RGB order."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.overlay import overlay_jpeg


def _decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def test_overlay_is_the_crop_size_and_red_where_hot_blue_where_cold():
    crop = np.full((160, 160, 3), 128, np.uint8)
    heat = np.zeros((256, 256), np.float32)
    heat[:128, :128] = 1.0  # top-left quarter hot, in model-input coordinates
    image = _decode(overlay_jpeg(crop, heat, alpha=0.8))
    assert image.shape == (160, 160, 3)
    hot, cold = image[20, 20], image[140, 140]
    assert hot[0] > hot[2] + 80  # red > blue: the RGB crop was not mixed up with OpenCV's BGR
    assert cold[2] > cold[0] + 40


def test_alpha_zero_is_the_crop_itself():
    rng = np.random.default_rng(0)
    crop = np.repeat(np.repeat(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), 20, 0), 20, 1)
    image = _decode(overlay_jpeg(crop, np.ones((7, 7), np.float32), alpha=0.0, quality=100))
    assert np.median(np.abs(image - crop.astype(int))) <= 1  # JPEG chroma blur only at colour edges


@pytest.mark.parametrize(
    "crop, heat",
    [
        (np.zeros((16, 16), np.uint8), np.zeros((4, 4), np.float32)),
        (np.zeros((16, 16, 3), np.float32), np.zeros((4, 4), np.float32)),
        (np.zeros((16, 16, 3), np.uint8), np.zeros((4, 4, 1), np.float32)),
    ],
)
def test_bad_shapes_are_refused(crop, heat):
    with pytest.raises(ValueError):
        overlay_jpeg(crop, heat)
