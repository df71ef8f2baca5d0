"""Faces for the trainer's tests: the astronaut with MTCNN's own box and landmarks, a drawn synthetic face,
and folders of real photos (made here, plus ../shared/media photos when present)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.train.data import FaceSample, context_crop
from pipeline.types import FaceBox
from tests.media import SHARED, astronaut, face_scene

# MTCNN on the 512×512 astronaut (measured once): box x1, y1, x2, y2 and eyes, nose, mouth corners.
ASTRO_BOX = (181.05, 62.16, 267.75, 172.05)
ASTRO_LANDMARKS = np.array(
    [[205.01, 101.73], [246.76, 103.71], [224.67, 128.96], [201.72, 139.25], [245.27, 141.86]], dtype=np.float32
)
SHARED_PHOTOS = ("obama.jpg", "two_people.jpg")


def astro_sample(label: int = 0, source: str = "astro", flip: bool = False, context_px: int = 256) -> FaceSample:
    """The astronaut's face as a FaceSample (context crop around MTCNN's box), optionally mirrored."""
    image = astronaut()
    box, marks = ASTRO_BOX, ASTRO_LANDMARKS.copy()
    if flip:
        image = np.ascontiguousarray(image[:, ::-1])
        w = image.shape[1]
        box = (w - ASTRO_BOX[2], ASTRO_BOX[1], w - ASTRO_BOX[0], ASTRO_BOX[3])
        marks[:, 0] = w - marks[:, 0]
        marks = marks[[1, 0, 2, 4, 3]]  # left/right swap places in a mirror
    face = FaceBox(0, 0, box, 0.99, marks)
    context, box_c, marks_c = context_crop(image, face, context_px)
    return FaceSample(context, box_c, marks_c, label, source, f"{source}.png", 0, 0)


def synthetic_face(size_px: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(H×W×3 uint8 RGB, 5×2 landmarks): a skin-coloured ellipse with dark eyes and mouth on grey."""
    img = np.full((size_px, size_px, 3), 90, dtype=np.uint8)
    s = size_px / 200
    cv2.ellipse(img, (round(100 * s), round(110 * s)), (round(55 * s), round(70 * s)), 0, 0, 360, (200, 160, 140), -1)
    marks = np.array([[78, 95], [122, 95], [100, 120], [82, 145], [118, 145]], dtype=np.float32) * s
    for x, y in marks[:2]:
        cv2.circle(img, (round(x), round(y)), round(6 * s), (40, 30, 30), -1)
    cv2.line(img, tuple(np.round(marks[3]).astype(int)), tuple(np.round(marks[4]).astype(int)), (150, 60, 60), 3)
    return img, marks


def write_real_photos(folder: Path, *, shared: bool = False) -> Path:
    """Photos MTCNN finds faces in: the astronaut, its mirror image, a two-face scene; with ``shared``, also
    ../shared/media photos that exist. Each file is its own source."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(astronaut()).save(folder / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(folder / "astronaut_mirror.png")
    Image.fromarray(face_scene(480, 240, [(20, 30, 180), (260, 40, 170)])).save(folder / "two_faces.jpg", quality=92)
    if shared:
        for name in SHARED_PHOTOS:
            if (SHARED / "media" / name).is_file():
                shutil.copy(SHARED / "media" / name, folder / name)
    return folder


@pytest.fixture
def astro() -> FaceSample:
    return astro_sample()


@pytest.fixture
def shared_available() -> bool:
    return all((SHARED / "media" / n).is_file() for n in SHARED_PHOTOS)
